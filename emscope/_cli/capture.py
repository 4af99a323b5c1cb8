"""`emscope capture`: residual-stream activations of transcripts, streamed to disk."""

from __future__ import annotations

from pathlib import Path

import typer

from emscope._cli.common import friendly_errors


def register(app: typer.Typer) -> None:
    app.command(
        "capture",
        epilog=(
            "Example:  emscope capture --model smollm2-135m-instruct --data chats.jsonl --layers all "
            "--pool mean --out runs/acts\n\n"
            "Python:   emscope.capture_to_disk(emscope.load_model('smollm2-135m-instruct'), 'chats.jsonl', 'runs/acts')"
        ),
    )(capture)


@friendly_errors
def capture(
    data: Path = typer.Option(..., "--data", help="Transcripts: messages JSONL ({'messages': [...]} per line)."),
    out: Path = typer.Option(
        ..., "--out", help="Output directory (config.json + safetensors shards); re-run to resume."
    ),
    model: str = typer.Option(
        "smollm2-135m-instruct", "--model", help="Embedded name, .gguf file, local dir or hub id."
    ),
    layers: str = typer.Option("all", "--layers", help="'all', '12', '-1', '0,4,8' or '2-5' (block outputs, 0-based)."),
    pool: str = typer.Option("mean", "--pool", help="mean | last | max over response tokens, or tokens (keep all)."),
    batch_size: int = typer.Option(8, "--batch-size", min=1),
    shard_size: int = typer.Option(256, "--shard-size", min=1, help="Transcripts per shard file."),
    max_length: int | None = typer.Option(None, "--max-length", help="Truncate transcripts to this many tokens."),
    limit: int | None = typer.Option(None, "--limit", help="Use only the first N transcripts."),
    dtype: str = typer.Option("float32", "--dtype", help="Model dtype: float32 (use on CPU), bfloat16, float16."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, mps or auto."),
) -> None:
    """Capture block-output activations over the assistant's response tokens."""
    from emscope.activations.capture import capture_to_disk
    from emscope.data.transcripts import load_transcripts
    from emscope.models.loading import load_model

    transcripts = load_transcripts(data, limit=limit)
    lm = load_model(model, dtype=dtype, device=device)
    path = capture_to_disk(
        lm,
        transcripts,
        out,
        layers=layers,
        pool=pool,
        batch_size=batch_size,
        shard_size=shard_size,
        max_length=max_length,
    )
    typer.echo(f"wrote {len(transcripts)} transcripts x {lm.n_layers if layers == 'all' else layers} layers to {path}")
