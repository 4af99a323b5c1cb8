"""`emscope transfer`: cross-model transfer of a direction through fitted activation maps, beside controls."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from emscope._cli import options as o

NAME = "transfer"
EXAMPLES = (
    "emscope transfer --models smollm2-135m-instruct,qwen2.5-coder-0.5b-instruct --neutral examples/chats.jsonl --out runs/transfer",
    "emscope transfer --source smollm2-135m-instruct --target qwen2.5-coder-0.5b-instruct --direction runs/dir "
    "--out runs/transfer-pair",
)
PYTHON = (
    "emscope.transfer.transfer_matrix(['smollm2-135m-instruct', 'qwen2.5-coder-0.5b-instruct'], 'runs/transfer', "
    "TransferConfig(neutral=('examples/chats.jsonl',)))\n\n"
    "or transfer_pair(source, target, Direction.load('runs/dir/direction'), 'runs/transfer-pair')"
)
MAP_HELP = "ridge (cross-validated alpha) | least_squares | procrustes (common PCA dimension)."


def _specs(text: str | None) -> list[str]:
    return [s.strip() for s in (text or "").split(",") if s.strip()]


def _layers(values: list[str]) -> dict[str, int]:
    from emscope.errors import ConfigError

    out = {}
    for v in values:
        spec, sep, layer = v.rpartition("=")
        if not sep or not spec or not layer.strip().isdigit():
            raise ConfigError(f"--layer takes MODEL=LAYER (e.g. smollm2-135m-instruct=17), got {v!r}")
        out[spec] = int(layer)
    return out


def command(
    out: Annotated[Path, o.out_dir("Output directory (resumable: run the same command again to continue).")],
    models: Annotated[
        str | None, typer.Option("--models", help="Comma-separated models: every directed pair (the matrix).")
    ] = None,
    source: Annotated[str | None, typer.Option("--source", help="Donor model of --direction (one pair).")] = None,
    target: Annotated[str | None, typer.Option("--target", help="Receiver model (one pair).")] = None,
    direction: Annotated[
        Path | None,
        typer.Option(
            "--direction",
            help="A saved direction of --source (or the DIR of emscope direction --out DIR).",
            callback=o.direction_dir,
        ),
    ] = None,  # fmt: skip
    neutral: Annotated[
        list[Path] | None,
        typer.Option(
            "--neutral",
            exists=True,
            dir_okay=False,
            help="Chat JSONL to fit maps on (repeatable); emscope's own neutral answers are always added.",
        ),
    ] = None,  # fmt: skip
    n_neutral: Annotated[int, o.count("--n-neutral", "Neutral transcripts for the maps.", minimum=4)] = 300,
    pairs_per_domain: Annotated[
        int, o.count("--pairs-per-domain", "Labelled corpus pairs per domain (12 domains).", minimum=2)
    ] = 10,
    map_kind: Annotated[str, typer.Option("--map", help=MAP_HELP)] = "ridge",
    depth: Annotated[float, typer.Option("--depth", help="Default layer: this fraction of each model's depth.")] = 0.6,
    layer: Annotated[
        list[str] | None, typer.Option("--layer", help="MODEL=LAYER, overriding --depth (repeatable).")
    ] = None,
    target_layer: Annotated[int | None, typer.Option("--target-layer", help="Receiver layer (one pair).")] = None,
    behaviour: Annotated[
        bool, typer.Option("--behaviour/--no-behaviour", help="Steer receivers with mapped directions and controls.")
    ] = True,
    behaviour_receivers: Annotated[
        str | None, typer.Option("--behaviour-receivers", help="Comma-separated: only these receivers are steered.")
    ] = None,
    prompts: Annotated[int, o.count("--prompts", "Behaviour prompts (built-in em_core questions).", minimum=2)] = 8,
    controls: Annotated[int, o.count("--controls", "Controls of each kind (at least 5).", minimum=5)] = 5,
    alpha_scale: Annotated[
        float, typer.Option("--alpha-scale", help="Steering strength in units of the receiver's activation norm.")
    ] = 1.0,
    n_random: Annotated[int, o.count("--n-random", "Random directions for geometry.", minimum=3)] = 100,
    n_boot: Annotated[int, o.count("--n-boot", "Bootstrap resamples (matrix).", minimum=10)] = 500,
    max_new_tokens: o.MaxNewTokens = 24,
    max_length: Annotated[int, o.count("--max-length", "Tokens read per transcript.")] = 256,
    batch_size: o.BatchSize = 8,
    seed: o.Seed = 0,
) -> None:
    """Fit activation maps between models and judge mapped directions (geometry, detection, behaviour) against controls."""
    from emscope.errors import ConfigError
    from emscope.transfer.config import TransferConfig

    specs = _specs(models)
    if specs and (source or target or direction):
        raise ConfigError("use either --models (the matrix) or --source/--target/--direction (one pair), not both")
    if not specs and not (source and target and direction):
        raise ConfigError(
            "pass --models a,b[,c...] for the matrix, or --source A --target B --direction DIR for one pair"
        )
    config = TransferConfig(
        map_kind=map_kind,
        neutral=tuple(str(p) for p in neutral or ()),
        n_neutral=n_neutral,
        pairs_per_domain=pairs_per_domain,
        depth=depth,
        layers=_layers(layer or []),
        max_length=max_length,
        batch_size=batch_size,
        n_random=n_random,
        n_boot=n_boot,
        behaviour=behaviour,
        behaviour_receivers=tuple(_specs(behaviour_receivers)) if behaviour_receivers else None,
        n_prompts=prompts,
        n_controls=controls,
        alpha_scale=alpha_scale,
        max_new_tokens=max_new_tokens,
        seed=seed,
    )
    if specs:
        from emscope.transfer.matrix import transfer_matrix

        result = transfer_matrix(specs, out, config, progress=True)
        for metric, s in result.scores.items():
            if isinstance(s, dict) and "donor" in s:
                row = ", ".join(f"{m}: donor {d:+.3f} receiver {r:+.3f}" for m, d, r in
                                zip(result.models, s["donor"]["value"], s["receiver"]["value"], strict=True))  # fmt: skip
                typer.echo(f"{metric}: {row}")
        typer.echo(f"wrote {out}/config.json, {out}/cells.csv and heatmaps")
        return
    from emscope.directions.direction import Direction
    from emscope.transfer.single import transfer_pair

    assert source is not None and target is not None and direction is not None  # checked above
    pair = transfer_pair(
        source, target, Direction.load(direction), out, config, target_layer=target_layer, progress=True
    )
    g, d = pair.report["geometry"], pair.report["detection"]
    typer.echo(f"map R^2 (held out): {pair.report['map_r2_heldout']:.3f}")
    typer.echo(f"geometry: cosine with native {g['cosine']:+.3f}; vs mapped-random: {g['vs_mapped_random']['verdict']}")
    typer.echo(f"detection: AUROC mapped {d['auroc_mapped']:.3f}, native {d['auroc_native']:.3f}")
    if pair.behaviour:
        typer.echo(f"behaviour (native-direction projection of answers): {pair.behaviour['mapped'][source]['verdict']}")
    typer.echo(f"wrote {out}/config.json, {out}/map, {out}/mapped_direction")
