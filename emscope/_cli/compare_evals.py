"""`emscope compare-evals`: paired differences between two evaluations of the same questions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from emscope._cli import options as o

NAME = "compare-evals"
EXAMPLES = (
    "emscope compare-evals runs/eval runs/eval-steered",
    "emscope compare-evals runs/eval-base runs/eval-organism --out runs/base-vs-organism",
)
PYTHON = "emscope.evaluation.compare.compare_evals('runs/eval', 'runs/eval-steered', out_dir=None)"


def command(
    a: Annotated[Path, typer.Argument(help="Reference evaluation directory (A).")],
    b: Annotated[Path, typer.Argument(help="Evaluation directory compared with it (B).")],
    out: Annotated[Path | None, o.out_dir("Write comparison.json and comparison.csv here.")] = None,
    n_boot: Annotated[int, o.count("--n-boot", "Bootstrap resamples.")] = 2000,
    seed: o.Seed = 0,
) -> None:
    """B minus A per metric (EM rates, alignment, coherence, code rate), answers paired, 95% CI over questions."""
    from emscope.evaluation.compare import compare_evals

    result = compare_evals(a, b, out_dir=out, n_boot=n_boot, seed=seed)
    typer.echo(f"A = {a}\nB = {b}\n{result.table()}\n(* : the interval excludes 0)")
    for warning in result.warnings:
        typer.secho(f"warning: {warning}", fg=typer.colors.YELLOW, err=True)
    if out is not None:
        typer.echo(f"wrote {out}/comparison.json, comparison.csv")
