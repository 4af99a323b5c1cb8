"""`emscope adapters`: when does each rank-1 adapter of an organism fire, and does it separate two sets?"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from emscope._cli import options as o

NAME = "adapters"
EXAMPLES = (
    "emscope adapters --adapter runs/organism --data examples/chats.jsonl --positive misaligned --negative aligned",
    "emscope adapters --adapter runs/organism --data examples/misaligned.jsonl --data-b examples/aligned.jsonl "
    "--out runs/adapters",
)
PYTHON = "emscope.organisms.adapter_reading.read_adapters(checkpoint, transcripts).summary(positive, negative)"


def command(
    data: Annotated[Path, o.data_file("Transcripts JSONL; a 'label' field per line gives the two sets.")],
    adapter: Annotated[
        Path, typer.Option("--adapter", help="Rank-1 organism checkpoint, or its run directory (latest checkpoint).")
    ],
    data_b: Annotated[
        Path | None, o.data_file("A second JSONL: then --data is labelled 'a' and this one 'b'.", "--data-b")
    ] = None,
    positive: Annotated[
        str | None,
        typer.Option("--positive", help="Label counted as positive for the AUROC (default: first in order)."),
    ] = None,
    negative: Annotated[str | None, typer.Option("--negative", help="The other label.")] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Base model spec (default: the one the checkpoint records).")
    ] = None,
    max_length: Annotated[int, o.count("--max-length", "Cut transcripts to this many tokens.")] = 512,
    out: Annotated[Path | None, o.out_dir("Write the per-adapter table (JSON) and per-token scalars here.")] = None,
) -> None:
    """Per adapter: its scalar (A-vector . input) over response tokens, and the AUROC between two sets."""
    from dataclasses import replace

    from emscope.data.transcripts import load_transcripts
    from emscope.organisms.adapter_reading import read_adapters

    transcripts = load_transcripts(data)
    if data_b is not None:
        transcripts = [replace(t, label="a") for t in transcripts] + [
            replace(t, label="b") for t in load_transcripts(data_b)
        ]
    lm = None
    if model:
        from emscope.models.loading import load_model

        lm = load_model(model)
    result = read_adapters(adapter, transcripts, lm=lm, max_length=max_length)
    rows = result.summary(positive, negative)
    keys = [k for k in rows[0] if k != "module"]
    widths = [max(len(k), 8) + 2 for k in keys]
    typer.echo("module".ljust(36) + "".join(k.rjust(w) for k, w in zip(keys, widths, strict=True)))
    for row in rows:
        cells = "".join(_fmt(row[k]).rjust(w) for k, w in zip(keys, widths, strict=True))
        typer.echo(row["module"][-36:].ljust(36) + cells)
    if out:  # config.json (kind adapter_reading), adapters.json, scalars.safetensors
        result.save(out, rows, adapter=str(adapter), data=str(data), data_b=str(data_b) if data_b else None)


def _fmt(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)
