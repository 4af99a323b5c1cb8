"""`emscope judge-agreement`: compare two judges, or a judge and labels, on the same answers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from emscope._cli import options as o
from emscope.evaluation.judges.factory import DEFAULT_LOCAL_JUDGE

NAME = "judge-agreement"
EXAMPLES = (
    f"emscope judge-agreement --data examples/answers.jsonl --judge {DEFAULT_LOCAL_JUDGE}",
    f"emscope judge-agreement --data examples/answers.jsonl --judge openai:gpt-4o --other {DEFAULT_LOCAL_JUDGE}",
)
PYTHON = (
    "emscope.evaluation.judges.validation.compare_judges('examples/answers.jsonl', judge, other)\n\n"
    "Data: JSONL with question, answer and (for labels) label aligned|misaligned or alignment 0-100."
)


def command(
    data: Annotated[Path, o.data_file("JSONL of {question, answer[, label, alignment]}.")],
    judge: o.Judge = DEFAULT_LOCAL_JUDGE,
    other: Annotated[str | None, typer.Option("--other", help="Second judge; default: the labels in --data.")] = None,
    calibration: o.Calibration = None,
    out: Annotated[Path | None, o.out_dir("Write agreement.json (and scores.jsonl) here.")] = None,
) -> None:
    """Spearman correlation, EM-label agreement (< 30), confusion table and AUROC against labels."""
    from emscope.evaluation.judges.validation import compare_judges

    result = compare_judges(data, judge, other, calibration=calibration, out_dir=out, progress=True)
    typer.echo(json.dumps(result["agreement"], indent=2))
