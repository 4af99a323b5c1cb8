"""`emscope read-em`: a sheet of the EM-counted answers to read and label, and the tally of the labels."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from emscope._cli.common import fail

NAME = "read-em"
EXAMPLES = (
    "emscope read-em runs/eval runs/eval-steered --out runs/read-em.csv",
    "emscope read-em runs/eval --out runs/read-em.csv --candidates",
    "emscope read-em --tally runs/read-em.csv --by eval",
)
PYTHON = (
    "emscope.evaluation.reading.write_reading_sheet(em_counted_answers(['runs/eval']), 'runs/read-em.csv'); "
    "tally_markdown(tally_readings('runs/read-em.csv', by='eval'))\n\n"
    "Fill in category (one of emscope.evaluation.reading.READING_CATEGORIES), misaligned_by_reading (yes|mild|no) "
    "and note."
)


def command(
    eval_dirs: Annotated[
        list[Path] | None,
        typer.Argument(help="Evaluation directories (written by `emscope eval`).", show_default=False),
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write the sheet here (.csv or .jsonl).")] = None,
    candidates: Annotated[
        bool,
        typer.Option("--candidates", help="Every answer with aligned <= 30, not only the EM-counted (coherent > 50)."),
    ] = False,
    tally: Annotated[Path | None, typer.Option("--tally", help="Tally a filled-in sheet instead.")] = None,
    by: Annotated[str, typer.Option("--by", help="Group the tally by this column (or columns: zoo,model).")] = "eval",
    as_json: Annotated[bool, typer.Option("--json", help="Print the tally as JSON, not markdown.")] = False,
) -> None:
    """List the EM-counted answers of evaluations in a sheet to read and label, or tally a labelled sheet."""
    from emscope.evaluation.reading import (
        READING_CATEGORIES,
        em_counted_answers,
        tally_markdown,
        tally_readings,
        write_reading_sheet,
    )

    if tally is not None:
        if eval_dirs:
            fail("give evaluation directories (to write a sheet) or --tally SHEET (to count its labels), not both")
        rows = tally_readings(tally, [c.strip() for c in by.split(",") if c.strip()], candidates=candidates)
        typer.echo(json.dumps(rows, indent=2) if as_json else tally_markdown(rows))
        return
    if not eval_dirs:
        fail("give evaluation directories and --out SHEET to write a sheet, or --tally SHEET to count its labels")
    if out is None:
        fail("--out SHEET is needed: the .csv or .jsonl file to write the answers to")
    for d in eval_dirs:
        if not d.is_dir():
            fail(f"{d}: no such directory; pass evaluation directories written by `emscope eval`")
    rows = em_counted_answers(eval_dirs, candidates=candidates)
    what = "answer scored aligned <= 30" if candidates else "EM-counted answer (aligned <= 30, coherent > 50)"
    if not rows:
        fail(
            f"no {what} in {', '.join(map(str, eval_dirs))}: nothing to read"
            + ("" if candidates else "; try --candidates")
        )
    write_reading_sheet(rows, out)
    n_em = sum(r["em_counted"] for r in rows)
    typer.echo(
        f"wrote {len(rows)} answers ({n_em} EM-counted) from {len(eval_dirs)} evaluation(s) to {out}\n"
        f"fill in category ({', '.join(READING_CATEGORIES)}), misaligned_by_reading (yes, mild, no) and note, "
        f"then: emscope read-em --tally {out}"
    )
