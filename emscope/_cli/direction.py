"""`emscope direction`: layer sweep over two labelled transcript sets, and the best layer's Direction."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from emscope._cli import options as o

NAME = "direction"
EXAMPLES = (
    "emscope direction --model smollm2-135m-instruct --builtin reading --out runs/dir",
    "emscope direction --model smollm2-135m-instruct --pos examples/misaligned.jsonl --neg examples/aligned.jsonl "
    "--method logistic_probe --layers 8-20 --out runs/dir",
)
PYTHON = (
    "r = emscope.sweep_model(lm, pos, neg); r.save('runs/dir/sweep'); r.best.save('runs/dir/direction')\n\n"
    "Writes OUT/sweep (config.json, sweep.csv, sweep.png, directions.safetensors) and OUT/direction "
    "(the best layer's Direction; with --all-layers also OUT/layers/layer_NN)."
)
ROUTES = ("reading", "persona")


def command(
    out: Annotated[Path, o.out_dir("Output directory.")],
    model: o.Model = o.DEFAULT_MODEL,
    pos: Annotated[
        Path | None, o.data_file("Positive class (e.g. misaligned) transcripts, messages JSONL.", "--pos")
    ] = None,
    neg: Annotated[
        Path | None, o.data_file("Negative class (e.g. aligned) transcripts, messages JSONL.", "--neg")
    ] = None,
    builtin: Annotated[
        str | None,
        typer.Option(
            "--builtin",
            help="'reading': the built-in contrast pairs read by the model (misaligned vs aligned answers); "
            "'persona': the model answers the built-in questions under a malicious vs an honest system prompt "
            "(diagnostics in OUT/persona). Instead of --pos/--neg.",
            callback=o.choice(ROUTES, "built-in route"),
        ),
    ] = None,
    layers: o.Layers = "all",
    method: o.Method = "diff_in_means",
    pool: o.PooledPool = "mean",
    test_frac: Annotated[
        float, typer.Option("--test-frac", help="Held-out share (pairs are split together).", callback=o.check_fraction)
    ] = 0.3,
    seed: o.Seed = 0,
    n_boot: Annotated[
        int, o.count("--n-boot", "Bootstrap resamples for the 95% intervals (0: none).", minimum=0)
    ] = 1000,
    limit: Annotated[int | None, o.count("--limit", "Use only the first N transcripts (pairs) per side.")] = None,
    all_layers: Annotated[bool, typer.Option("--all-layers", help="Also save every layer's Direction.")] = False,
    batch_size: o.BatchSize = 8,
    max_length: o.MaxLength = None,
    dtype: o.Dtype = "float32",
    device: o.Device = "cpu",
) -> None:
    """Fit a direction at every layer (train split), measure it held-out, and save the best layer's Direction."""
    from emscope.data.transcripts import load_transcripts
    from emscope.directions.contrast import load_contrast_pairs, reading_route_transcripts
    from emscope.directions.persona import persona_route
    from emscope.directions.sweep import sweep_model
    from emscope.errors import ConfigError
    from emscope.models.loading import load_model

    lm = None
    if builtin == "reading" and pos is None and neg is None:
        aligned, misaligned = reading_route_transcripts(limit=limit)
        pos_t, neg_t = misaligned, aligned
    elif builtin == "persona" and pos is None and neg is None:
        lm = load_model(model, dtype=dtype, device=device)
        questions = [p.question for p in load_contrast_pairs(limit=limit)]
        route = persona_route(lm, questions)
        route.save(out / "persona", **lm.provenance())
        for warning in route.warnings:
            typer.secho(f"warning: {warning}", fg=typer.colors.YELLOW, err=True)
        pos_t, neg_t = route.misaligned, route.aligned
    elif builtin is None and pos is not None and neg is not None:
        pos_t, neg_t = load_transcripts(pos, limit=limit), load_transcripts(neg, limit=limit)
    else:
        raise ConfigError("give the two classes: --pos FILE --neg FILE, or --builtin reading|persona")
    lm = lm or load_model(model, dtype=dtype, device=device)
    result = sweep_model(
        lm,
        pos_t,
        neg_t,
        layers=layers,
        method=method,
        pool=pool,
        test_frac=test_frac,
        seed=seed,
        n_boot=n_boot,
        batch_size=batch_size,
        max_length=max_length,
    )
    result.save(out / "sweep")
    result.best.save(out / "direction")
    if all_layers:
        for layer, d in result.directions.items():
            d.save(out / "layers" / f"layer_{layer:02d}")
    m = result.best.metrics
    ci = " [{:.3f}, {:.3f}]".format(*m["auroc_ci"]) if "auroc_ci" in m else ""
    typer.echo(
        f"best layer {result.best_layer} (rule: {result.rule}): held-out accuracy {m['accuracy']:.3f}, "
        f"AUROC {m['auroc']:.3f}{ci}"
    )
    typer.echo(f"wrote {out / 'sweep'} and {out / 'direction'}")
