"""`emscope capture`: residual-stream activations of transcripts, streamed to disk."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from emscope._cli import options as o
from emscope.activations.forward import DEFAULT_BATCH_TOKENS
from emscope.activations.pooling import SELECTIONS

NAME = "capture"
EXAMPLES = (
    "emscope capture --model smollm2-135m-instruct --data examples/chats.jsonl --layers all --pool mean "
    "--out runs/acts",
    "emscope capture --model smollm2-135m-instruct --data examples/chats.jsonl --layers 15 --pool tokens "
    "--token-selection all --storage-dtype bfloat16 --out runs/sae-acts",
)
PYTHON = "emscope.capture_to_disk(emscope.load_model('smollm2-135m-instruct'), 'examples/chats.jsonl', 'runs/acts')"


def command(
    data: Annotated[Path, o.data_file("Transcripts: messages JSONL ({'messages': [...]} per line).")],
    out: Annotated[Path, o.out_dir("Output directory (config.json + safetensors shards); re-run to resume.")],
    model: o.Model = o.DEFAULT_MODEL,
    layers: o.Layers = "all",
    pool: o.CapturePool = "mean",
    batch_size: o.BatchSize = 8,
    shard_size: Annotated[int, o.count("--shard-size", "Transcripts per shard file.")] = 256,
    max_length: o.MaxLength = None,
    limit: o.Limit = None,
    dtype: o.Dtype = "float32",
    device: o.Device = "cpu",
    token_selection: Annotated[
        str,
        typer.Option(
            "--token-selection",
            help="response (the assistant's content tokens) or all (every token of the transcript, e.g. for SAEs).",
            callback=o.choice(SELECTIONS, "token selection"),
        ),
    ] = "response",
    storage_dtype: Annotated[
        str,
        typer.Option(
            "--storage-dtype",
            help="dtype of the saved activations: float32, bfloat16 (half the disk) or float16.",
            callback=o.check_dtype,
        ),
    ] = "float32",
    batch_tokens: Annotated[
        int, o.count("--batch-tokens", "Padded tokens per forward pass, at most (bounds memory).")
    ] = DEFAULT_BATCH_TOKENS,
) -> None:
    """Capture block-output activations over the assistant's response tokens (or all tokens)."""
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
        dtype=storage_dtype,
        token_selection=token_selection,
        max_batch_tokens=batch_tokens,
    )
    typer.echo(f"wrote {len(transcripts)} transcripts x {lm.n_layers if layers == 'all' else layers} layers to {path}")
