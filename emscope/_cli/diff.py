"""`emscope diff`: one base-model SAE read on a base model and its fine-tune; the latents that change most."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from emscope._cli import options as o

NAME = "diff"
EXAMPLES = (
    "emscope diff --base smollm2-135m-instruct --model runs/organism --sae runs/sae/sae --data examples/chats.jsonl "
    "--out runs/diff",
)
PYTHON = (
    "emscope.sae.latent_diff(emscope.load_sae('runs/sae/sae'), emscope.load_model('smollm2-135m-instruct'), "
    "emscope.load_model('runs/organism'), 'examples/chats.jsonl')"
)


def command(
    base: Annotated[str, typer.Option("--base", help="The base model the SAE was trained on.")],
    model: Annotated[str, typer.Option("--model", help="The fine-tune (a fine-tuning run, directory or name).")],
    sae_dir: Annotated[Path, typer.Option("--sae", help="A saved SAE (emscope sae train --out DIR: DIR or DIR/sae).")],
    data: Annotated[Path, o.data_file("Transcripts both models read (messages JSONL).")],
    out: Annotated[Path, o.out_dir("Output directory: the diff (config.json, tensors, latents.csv) and top.md.")],
    top: Annotated[int, o.count("--top", "Latents shown.")] = 10,
    token_selection: Annotated[
        str,
        typer.Option(
            "--token-selection", help="response or all.", callback=o.choice(("response", "all"), "token selection")
        ),
    ] = "response",
    direction: Annotated[
        Path | None,
        typer.Option(
            "--direction",
            help="A direction at the SAE's layer: each top latent's cosine with it.",
            callback=o.direction_dir,
        ),
    ] = None,
    contexts: Annotated[
        int, o.count("--contexts", "Top-activating contexts per latent (read on --data by the base).", minimum=0)
    ] = 3,
    n_boot: Annotated[int, o.count("--n-boot", "Bootstrap resamples of the transcripts.", minimum=100)] = 1000,
    max_length: o.MaxLength = 512,
    limit: o.Limit = None,
    seed: o.Seed = 0,
    device: o.Device = "cpu",
) -> None:
    """Rank the SAE's latents by their change in mean activation from --base to --model, with 95% CIs."""
    from emscope.artifacts import atomic_write_bytes
    from emscope.data.transcripts import load_transcripts
    from emscope.directions.direction import Direction
    from emscope.models.loading import load_model
    from emscope.sae.diff import latent_diff
    from emscope.sae.model import load_sae
    from emscope.sae.report import markdown, top_latents

    path = sae_dir / "sae" if not (sae_dir / "config.json").is_file() and (sae_dir / "sae").is_dir() else sae_dir
    sae = load_sae(path)
    transcripts = load_transcripts(data, limit=limit)
    base_lm = load_model(base, device=device)
    tuned = load_model(model, device=device)
    diff = latent_diff(sae, base_lm, tuned, transcripts, token_selection, max_length, n_boot=n_boot, seed=seed)
    diff.save(out)
    rows = top_latents(
        diff,
        sae,
        top,
        Direction.load(direction) if direction is not None else None,
        base_lm if contexts else None,
        transcripts,
        contexts,
        max_length,
    )
    table = markdown(rows)
    atomic_write_bytes(out / "top.md", f"# {model} vs {base} through {path}\n\n{table}\n".encode())
    typer.echo(table)
    typer.echo(f"wrote {out}")
