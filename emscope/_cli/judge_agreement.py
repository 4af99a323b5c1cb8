"""`emscope judge-agreement`: compare two judges, or a judge and labels, on the same answers."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from emscope._cli.common import friendly_errors

EXAMPLES = (
    "Examples:\n\n"
    "  emscope judge-agreement --data answers.jsonl --judge local:qwen2.5-coder-1.5b-instruct\n\n"
    "  emscope judge-agreement --data answers.jsonl --judge openai:gpt-4o --other local:qwen2.5-coder-1.5b-instruct\n\n"
    "Data: JSONL with question, answer and (for labels) label aligned|misaligned or alignment 0-100."
)


def register(app: typer.Typer) -> None:
    app.command("judge-agreement", epilog=EXAMPLES)(judge_agreement_command)


@friendly_errors
def judge_agreement_command(
    data: Path = typer.Option(..., "--data", help="JSONL of {question, answer[, label, alignment]}."),
    judge: str = typer.Option("local:qwen2.5-coder-1.5b-instruct", "--judge", help="Judge spec (see emscope eval)."),
    other: str | None = typer.Option(None, "--other", help="Second judge; default: the labels in --data."),
    calibration: str | None = typer.Option(None, "--calibration", help="Calibration JSON applied to --judge."),
    out: Path | None = typer.Option(None, "--out", help="Write agreement.json (and scores.jsonl) here."),
) -> None:
    """Spearman correlation, EM-label agreement (< 30), confusion table and AUROC against labels."""
    from emscope.evaluation.judges.validation import compare_judges

    result = compare_judges(data, judge, other, calibration=calibration, out_dir=out)
    typer.echo(json.dumps(result["agreement"], indent=2))
