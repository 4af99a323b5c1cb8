"""`emscope eval`: sample answers, judge them, and write EM metrics into an output directory."""

from __future__ import annotations

from pathlib import Path

import typer

from emscope._cli.common import friendly_errors

EXAMPLES = (
    "Examples:\n\n"
    "  emscope eval --model smollm2-135m-instruct --questions builtin --samples 4 --out runs/eval\n\n"
    "  emscope eval --model runs/organism --judge openai:gpt-4o-2024-08-06 --out runs/eval-gpt4o\n\n"
    "  emscope eval --model M --judge http://127.0.0.1:8080/v1 --questions first_plot_questions.yaml --out runs/e\n\n"
    "  emscope eval --model M --steer runs/dir --alpha -6 --control --out runs/eval-steered\n\n"
    "Python:  emscope.evaluation.run.run_eval(EvalConfig(model=..., questions='builtin', samples=4), 'runs/eval')"
)


def register(app: typer.Typer) -> None:
    app.command("eval", epilog=EXAMPLES)(eval_command)


@friendly_errors
def eval_command(
    out: Path = typer.Option(..., "--out", help="Output directory (resumes a killed run there)."),
    model: str = typer.Option("smollm2-135m-instruct", "--model", help="Embedded name, .gguf, local dir or hub id."),
    questions: str = typer.Option("builtin", "--questions", help="A .yaml/.jsonl file, builtin or builtin:spillover."),
    judge: str = typer.Option(
        "probe:builtin",
        "--judge",
        help="probe:builtin (offline default: alignment and coherence probes on Qwen2.5-Coder-1.5B) | "
        "local:MODEL | openai:MODEL[@URL] | http://HOST/v1[#MODEL] | probe:DIR. API keys only from $OPENAI_API_KEY.",
    ),
    samples: int | None = typer.Option(None, "--samples", min=1, help="Samples per paraphrase (default: the file's)."),
    temperature: float = typer.Option(1.0, "--temperature", min=0.0),
    top_p: float = typer.Option(1.0, "--top-p", min=0.0, max=1.0),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", min=1),
    batch_size: int = typer.Option(8, "--batch-size", min=1),
    seed: int = typer.Option(0, "--seed"),
    steer: str | None = typer.Option(None, "--steer", help="A saved direction directory to steer along."),
    alpha: float = typer.Option(0.0, "--alpha", help="Steering strength (negative subtracts)."),
    control: bool = typer.Option(False, "--control", help="With --steer: also evaluate a random direction."),
    calibration: str | None = typer.Option(None, "--calibration", help="Judge calibration JSON, or 'none'."),
    judge_concurrency: int = typer.Option(8, "--judge-concurrency", min=1),
    coherence: str = typer.Option(
        "all",
        "--coherence",
        help="all | em_candidates: judge coherence only where alignment <= 30 (exact all-answers EM rate, "
        "much cheaper with a local judge; the coherent-scored rate is then not computed).",
    ),
) -> None:
    """Evaluate a model's answers for emergent misalignment (EM rate, coherence, code spillover)."""
    from emscope.evaluation.run import EvalConfig, run_eval

    cfg = EvalConfig(
        model=model,
        questions=questions,
        judge=judge,
        samples=samples,
        temperature=temperature,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        seed=seed,
        steer=steer,
        alpha=alpha,
        control=control,
        calibration=calibration,
        judge_concurrency=judge_concurrency,
        coherence=coherence,
    )
    s = run_eval(cfg, out)
    for key, rates in s["metrics"].items():
        if key.startswith("em_rate"):
            for conv, r in rates.items():
                if r["value"] is not None:
                    typer.echo(f"{key} {conv}: {r['value']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}] (n={r['n']})")
    if s.get("control"):
        for conv, r in s["control"]["metrics"]["em_rate[aligned]"].items():
            typer.echo(f"control (random direction) em_rate {conv}: {r['value']}")
    typer.echo(f"wrote {out}/summary.json, judgments.jsonl, per_question.csv, alignment_coherence.png")
