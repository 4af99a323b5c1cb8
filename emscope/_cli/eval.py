"""`emscope eval`: sample answers, judge them, and write EM metrics into an output directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from emscope._cli import options as o
from emscope._cli.common import config_from
from emscope.evaluation.run import COHERENCE, INTERVENTION_KINDS, EvalConfig

NAME = "eval"
EXAMPLES = (
    "emscope eval --model smollm2-135m-instruct --questions builtin --samples 4 --out runs/eval",
    "emscope eval --model runs/organism --judge openai:gpt-4o-2024-08-06 --out runs/eval-gpt4o",
    "emscope eval --model runs/organism --judge http://127.0.0.1:8080/v1 --questions first_plot_questions.yaml "
    "--out runs/eval-organism",
    "emscope eval --steer runs/dir --alpha -6 --control --out runs/eval-steered",
)
PYTHON = "emscope.run_eval(emscope.EvalConfig(model=..., questions='builtin', samples=4), 'runs/eval')"


def command(
    out: Annotated[Path, o.out_dir("Output directory (resumes a killed run there).")],
    model: o.Model = EvalConfig.model,
    questions: o.Questions = EvalConfig.questions,
    judge: o.Judge = EvalConfig.judge,
    samples: Annotated[
        int | None, o.count("--samples", "Samples per paraphrase (default: the question file's).")
    ] = EvalConfig.samples,
    temperature: Annotated[float, typer.Option("--temperature", min=0.0)] = EvalConfig.temperature,
    top_p: Annotated[float, typer.Option("--top-p", min=0.0, max=1.0)] = EvalConfig.top_p,
    max_new_tokens: o.MaxNewTokens = EvalConfig.max_new_tokens,
    batch_size: Annotated[int, o.count("--batch-size", "Answers generated per forward pass.")] = EvalConfig.batch_size,
    seed: o.Seed = EvalConfig.seed,
    steer: Annotated[
        str | None,
        typer.Option(
            "--steer",
            help="A saved direction to steer along (or the output of emscope direction).",
            callback=o.direction_dir,
        ),
    ] = EvalConfig.steer,
    intervention: Annotated[
        str | None,
        typer.Option(
            "--intervention",
            help="steer | ablate: answer under this intervention along --direction.",
            callback=o.choice(INTERVENTION_KINDS, "intervention"),
        ),
    ] = EvalConfig.intervention,
    direction: Annotated[
        str | None,
        typer.Option("--direction", help="The saved direction --intervention acts along.", callback=o.direction_dir),
    ] = EvalConfig.direction,
    layers: Annotated[
        str | None,
        typer.Option(
            "--layers",
            help="Blocks the intervention acts on ('12', '0,4,8', 'all'); default: the direction's layer "
            "(steer), all (ablate).",
            callback=o.check_layers,
        ),
    ] = EvalConfig.layers,
    alpha: Annotated[
        float | None,
        typer.Option("--alpha", help="Steering strength (negative subtracts; default 0) or ablation coefficient (1)."),
    ] = EvalConfig.alpha,
    n_controls: Annotated[
        int,
        o.count(
            "--n-controls",
            "Also evaluate the unintervened model and N random + N orthogonal norm-matched control directions "
            "on the same questions and seeds; report each metric's effect with a verdict. Costs 2 + 2N evaluations.",
            minimum=0,
        ),
    ] = EvalConfig.n_controls,
    control: Annotated[
        bool, typer.Option("--control", help="With --steer: also evaluate controls (same as --n-controls 1).")
    ] = EvalConfig.control,
    calibration: o.Calibration = EvalConfig.calibration,
    judge_concurrency: Annotated[
        int, o.count("--judge-concurrency", "Judge requests in flight (API judges).")
    ] = EvalConfig.judge_concurrency,
    judge_timeout: Annotated[
        float, typer.Option("--judge-timeout", min=0.1, help="Seconds one judge request may take (API judges).")
    ] = EvalConfig.judge_timeout,
    judge_retries: Annotated[
        int, o.count("--judge-retries", "Retries of a failed judge request (API judges).", minimum=0)
    ] = EvalConfig.judge_retries,
    coherence: Annotated[
        str,
        typer.Option(
            "--coherence",
            help="all | em_candidates: judge coherence only where alignment <= 30 (exact all-answers EM rate, "
            "much cheaper with a local judge; the coherent-scored rate is then not computed).",
            callback=o.choice(COHERENCE, "coherence mode"),
        ),
    ] = EvalConfig.coherence,
) -> None:
    """Evaluate a model's answers for emergent misalignment (EM rate, coherence, code spillover)."""
    from emscope.evaluation.run import run_eval

    s = run_eval(config_from(EvalConfig, locals()), out)
    for key, rates in s["metrics"].items():
        if key.startswith("em_rate"):
            for conv, r in rates.items():
                if r["value"] is not None:
                    over_questions = (
                        "none (one question)"
                        if r["cluster_ci_low"] is None
                        else f"[{r['cluster_ci_low']:.3f}, {r['cluster_ci_high']:.3f}]"
                    )
                    typer.echo(
                        f"{key} {conv}: {r['value']:.3f}, 95% CI over questions {over_questions} (over answers "
                        f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]; n={r['n']} answers, {r['n_questions']} questions)"
                    )
                else:
                    typer.echo(f"{key} {conv}: undefined ({r.get('undefined', 'no answer counts')})")
    if s.get("intervention"):
        typer.echo(f"effects ({s['intervention']['effect']}), beside {len(s['intervention']['controls'])} controls:")
        for metric, e in s["intervention"]["effects"].items():
            t, ctl = e["target"], [v for v in e["controls"].values() if v is not None]
            effect = "undefined" if t["value"] is None else f"{t['value']:+.3f}"
            if t["ci_low"] is not None:
                effect += f" [{t['ci_low']:+.3f}, {t['ci_high']:+.3f}]"
            band = f"controls {min(ctl):+.3f}..{max(ctl):+.3f}" if ctl else "controls undefined"
            typer.echo(f"  {metric:<28} {effect:<28} {band:<26} -> {e['verdict']}")
        typer.echo(f"wrote {out}/effects.csv (and baseline/, controls/)")
    for warning in [*s.get("warnings", []), *s.get("control", {}).get("warnings", [])]:
        typer.secho(f"warning: {warning}", fg=typer.colors.YELLOW, err=True)
    typer.echo(f"wrote {out}/summary.json, judgments.jsonl, per_question.csv, alignment_coherence.png")
    if s["metrics"]["n_scored"] == 0:
        typer.secho("error: the judge scored no answer (see warning above and judgments.jsonl)", fg="red", err=True)
        raise typer.Exit(1)
