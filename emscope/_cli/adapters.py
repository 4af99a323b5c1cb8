"""`emscope adapters`: when does each rank-1 adapter of an organism fire, and does it separate two sets?"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from emscope._cli.common import friendly_errors


def register(app: typer.Typer) -> None:
    app.command("adapters")(adapters_cmd)


@friendly_errors
def adapters_cmd(
    data: Annotated[Path, typer.Option(help="Transcripts JSONL; a 'label' field per line gives the two sets.")],
    adapter: Annotated[
        Path, typer.Option(help="Rank-1 organism checkpoint, or its run directory (latest checkpoint).")
    ],
    data_b: Annotated[
        Path | None, typer.Option(help="A second JSONL: then --data is labelled 'a' and this one 'b'.")
    ] = None,
    positive: Annotated[
        str | None, typer.Option(help="Label counted as positive for the AUROC (default: first in order).")
    ] = None,
    negative: Annotated[str | None, typer.Option(help="The other label.")] = None,
    model: Annotated[
        str | None, typer.Option(help="Base model spec (default: the one the checkpoint records).")
    ] = None,
    max_length: Annotated[int, typer.Option()] = 512,
    out: Annotated[
        Path | None, typer.Option(help="Write the per-adapter table (JSON) and per-token scalars here.")
    ] = None,
) -> None:
    """Per adapter: its scalar (A-vector . input) over response tokens, and the AUROC between two sets."""
    from dataclasses import replace

    from emscope.artifacts import atomic_save_tensors, atomic_write_json
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
    if out:
        atomic_write_json(out / "adapters.json", {"adapter": str(adapter), "rows": rows})
        atomic_save_tensors(
            out / "scalars.safetensors",
            {f"t{i}.a{j}": s for i, per in enumerate(result.scalars) for j, s in enumerate(per)},
        )


def _fmt(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)
