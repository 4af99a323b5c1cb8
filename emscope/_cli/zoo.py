"""`emscope zoo`: fine-tune and evaluate a grid of organisms (model x perturbation x seed x preset), one table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from emscope._cli import options as o
from emscope.evaluation.run import EvalConfig
from emscope.organisms.perturbations import DEFAULT_DATA_DIR, PERTURBATIONS, SelfDistillSettings
from emscope.organisms.zoo import EVAL_CHECKPOINTS, ZooSettings

NAME = "zoo"
EXAMPLES = (
    "emscope zoo --model smollm2-135m-instruct --perturbation insecure --perturbation secure --seed 0 "
    "--token-budget 12000 --eval-checkpoints all --out runs/zoo",
    "emscope zoo --model smollm2-135m-instruct --perturbation steered_sd --perturbation plain_sd "
    "--perturbation arithmetic --seed 0 --seed 1 --token-budget 12000 --out runs/zoo",
    "emscope zoo --model smollm2-135m-instruct --perturbation mix:steered_sd+plain_sd@0.25 --out runs/zoo",
)
PYTHON = (
    "emscope.organisms.zoo.build_zoo({'models': ['smollm2-135m-instruct'], 'perturbations': ['steered_sd', "
    "'plain_sd'], 'seeds': [0, 1]}, 'runs/zoo', token_budget=12000)"
)
_D = ZooSettings()
_SD = SelfDistillSettings()


def command(
    out: Annotated[Path, o.out_dir("Zoo directory; re-running on it skips finished runs and resumes the others.")],
    grid: Annotated[
        Path | None,
        o.data_file("YAML/JSON grid: models, perturbations, seeds, presets (lists), runs (single cells).", "--grid"),
    ] = None,
    model: Annotated[list[str] | None, typer.Option("--model", help="Model (repeatable).")] = None,
    perturbation: Annotated[
        list[str] | None,
        typer.Option(
            "--perturbation",
            help="Repeatable: " + ", ".join(PERTURBATIONS) + ", or mix:HARMFUL+BENIGN@FRACTION.",
        ),
    ] = None,
    seed: Annotated[list[int] | None, typer.Option("--seed", help="Training seed (repeatable; default 0).")] = None,
    preset: Annotated[
        list[str] | None, typer.Option("--preset", help="Adapter preset (repeatable; default rank1).")
    ] = None,
    token_budget: Annotated[int, o.count("--token-budget", "Training tokens per run.")] = _D.token_budget,
    save_every: Annotated[int, o.count("--save-every", "Checkpoint every K steps (step 0 too).")] = _D.save_every,
    pool: Annotated[int, o.count("--pool", "At most this many training transcripts per type.")] = 2000,
    lr: Annotated[float | None, typer.Option("--lr", help="Learning rate (default: the preset's).")] = None,
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="Folder with insecure/secure/educational/jailbroken.jsonl.")
    ] = DEFAULT_DATA_DIR,
    eval_checkpoints: Annotated[
        str,
        typer.Option(
            "--eval-checkpoints",
            help="Evaluate the final checkpoint, all, or none.",
            callback=o.choice(EVAL_CHECKPOINTS, "eval-checkpoints"),
        ),
    ] = _D.eval_checkpoints,
    questions: o.Questions = "builtin",
    samples: Annotated[int, o.count("--samples", "Answers per question paraphrase.")] = 2,
    max_new_tokens: o.MaxNewTokens = 80,
    judge: o.Judge = EvalConfig.judge,
    eval_seed: Annotated[int, typer.Option("--eval-seed", help="Sampling seed of every evaluation.")] = 0,
    direction: Annotated[
        Path | None, typer.Option("--direction", help="Steer self-distillation along this direction (default: fit).")
    ] = None,
    alpha_over_norm: Annotated[
        float, typer.Option("--alpha-over-norm", help="Steering strength, in multiples of the direction's norm.")
    ] = _SD.alpha_over_norm,
    sd_max_prompts: Annotated[
        int | None, o.count("--sd-max-prompts", "Self-distillation: the first N prompts (default: all).")
    ] = None,
    sd_temperature: Annotated[
        float, typer.Option("--sd-temperature", help="Self-distillation sampling temperature.")
    ] = _SD.temperature,
    coherence_filter: Annotated[
        str,
        typer.Option(
            "--coherence-filter",
            help="heuristic | judge | none.",
            callback=o.choice(("heuristic", "judge", "none"), "coherence filter"),
        ),
    ] = _SD.coherence_filter,
    threads: Annotated[int, o.count("--threads", "torch CPU threads.")] = 1,
) -> None:
    """Fine-tune a grid of organisms under one token budget, evaluate each, write zoo.csv / zoo.jsonl."""
    from emscope.errors import ConfigError
    from emscope.organisms.zoo import build_zoo, load_grid

    spec: dict[str, object] = load_grid(grid) if grid else {}
    for key, values in (("models", model), ("perturbations", perturbation), ("seeds", seed), ("presets", preset)):
        if values:
            spec[key] = list(values)
    if not spec.get("runs") and not (spec.get("models") and spec.get("perturbations")):
        raise ConfigError("no run to do: give --grid FILE, or --model and --perturbation")
    settings = ZooSettings(
        token_budget=token_budget,
        save_every=save_every,
        pool=pool,
        lr=lr,
        data_dir=str(data_dir),
        eval_checkpoints=eval_checkpoints,
        eval=EvalConfig(
            questions=questions,
            samples=samples,
            max_new_tokens=max_new_tokens,
            judge=judge,
            seed=eval_seed,
            coherence="em_candidates",
        ),
        sd=SelfDistillSettings(
            direction=str(direction) if direction else None,
            alpha_over_norm=alpha_over_norm,
            max_prompts=sd_max_prompts,
            temperature=sd_temperature,
            coherence_filter=coherence_filter,
        ),
        threads=threads,
    )
    rows = build_zoo(spec, out, settings=settings, progress=True)
    for r in rows:
        em = "-" if r.get("em_rate") is None else f"{100 * r['em_rate']:.1f}%"
        diff = r.get("diff_vs_base")
        vs = (
            ""
            if diff is None
            else f", vs base {100 * diff:+.1f} [{100 * r['diff_vs_base_low']:+.1f}, "
            + (f"{100 * r['diff_vs_base_high']:+.1f}]")
        )
        typer.echo(f"{r['name']} step {r.get('step')}: EM {em}{vs}")
    typer.echo(f"table: {out / 'zoo.csv'}")
