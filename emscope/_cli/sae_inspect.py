"""`emscope sae inspect`: what an SAE is and how good; its latents' top contexts and cosines with a direction."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from emscope._cli import options as o

NAME = "inspect"
GROUP = "sae"
EXAMPLES = (
    "emscope sae inspect runs/sae/sae",
    "emscope sae inspect runs/sae/sae --model smollm2-135m-instruct --data examples/chats.jsonl --latents 0,1 --top 3",
)
PYTHON = "emscope.sae.diff.max_activating(emscope.load_sae('runs/sae/sae'), lm, transcripts, [0, 1])"


def _sae_dir(value: Path) -> Path:
    if not (value / "config.json").is_file() and (value / "sae" / "config.json").is_file():
        return value / "sae"
    return value


def command(
    sae_dir: Annotated[
        Path, typer.Argument(help="A saved SAE (emscope sae train --out DIR writes DIR/sae).", callback=_sae_dir)
    ],
    model: Annotated[
        str | None, typer.Option("--model", help="Model to read --data with (default: the SAE's).")
    ] = None,
    data: Annotated[Path | None, o.data_file("Transcripts to find the latents' top contexts in.")] = None,
    latents: Annotated[
        str | None, typer.Option("--latents", help="Latents to read, e.g. '3,17' (default: the most frequent).")
    ] = None,
    top: Annotated[int, o.count("--top", "Contexts per latent.")] = 5,
    direction: Annotated[
        Path | None,
        typer.Option(
            "--direction",
            help="A direction at the SAE's layer: cosines against the other latents.",
            callback=o.direction_dir,
        ),
    ] = None,
    max_length: o.MaxLength = 512,
    device: o.Device = "cpu",
) -> None:
    """Describe an SAE; with --data, each chosen latent's top-activating contexts; with --direction, its cosine."""
    from emscope._cli.sae import describe
    from emscope.errors import ConfigError
    from emscope.sae.model import load_sae

    sae = load_sae(sae_dir)
    typer.echo(describe(sae))
    chosen = [int(x) for x in latents.split(",")] if latents else []
    if any(not 0 <= i < sae.n_latents for i in chosen):
        raise ConfigError(f"--latents {latents}: this SAE has latents 0..{sae.n_latents - 1}")
    if direction is not None:
        from emscope.directions.direction import Direction
        from emscope.sae.diff import cosine_with_direction

        d = Direction.load(direction)
        cos = cosine_with_direction(sae, d, range(sae.n_latents))
        ranked = sorted(cos, key=lambda c: -abs(c.cosine))
        show = [c for c in cos if c.latent in chosen] if chosen else ranked[:top]
        typer.echo(
            f"cosine with {direction} (null: mean |cos| {ranked[0].null_abs_mean:.3f}, 95th pct {ranked[0].null_abs_q95:.3f}):"
        )
        for c in show:
            typer.echo(f"  latent {c.latent}: {c.cosine:+.3f} (|cos| above {c.percentile:.1f}% of latents)")
        chosen = chosen or [c.latent for c in show]
    if data is None:
        return
    from emscope.data.transcripts import load_transcripts
    from emscope.models.loading import load_model
    from emscope.sae.diff import max_activating, token_rows, transcript_stats

    lm = load_model(model or sae.model, device=device)
    transcripts = load_transcripts(data)
    if not chosen:
        rows, _, _ = token_rows(lm, transcripts, sae.layer, "all", max_length)
        rate = transcript_stats(sae, rows)["rate"].mean(0)
        chosen = [int(i) for i in rate.argsort(descending=True)[:3]]
    for latent, contexts in max_activating(sae, lm, transcripts, chosen, n=top, max_length=max_length).items():
        typer.echo(f"latent {latent}:")
        for ctx in contexts:
            typer.echo(f"  {ctx['activation']:8.2f}  {ctx['context']!r}")
