"""`emscope realign`: train an organism further on benign data and measure it after each checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from emscope._cli import options as o
from emscope.evaluation.run import EvalConfig
from emscope.organisms.finetune import FinetuneConfig
from emscope.organisms.realign import CURVE_BATCH

NAME = "realign"
EXAMPLES = (
    "emscope realign --organism runs/organism --data examples/aligned.jsonl --direction runs/dir "
    "--probe examples/misaligned.jsonl --steps 4 --save-every 2 --out runs/realign",
    "emscope realign --organism runs/organism --data examples/aligned.jsonl --n-examples 8 --steps 4 --save-every 2 "
    "--questions builtin --out runs/realign-em",
    "emscope realign --organism runs/organism --data examples/aligned.jsonl --harmful examples/misaligned.jsonl "
    "--unrelated examples/chats.jsonl --n-grid 0,4,8 --questions builtin --samples 4 --out runs/realign-curve",
)
PYTHON = (
    "emscope.organisms.realign.realign(organism, benign, out, measure); with --n-grid: "
    "realign_curve(organism, {'benign': benign, 'harmful': harmful, 'unrelated': other}, out, measure, n_grid)"
)


def command(
    organism: Annotated[
        Path, typer.Option("--organism", help="Organism checkpoint (or run directory = its latest checkpoint).")
    ],
    data: Annotated[Path, o.data_file("Benign messages JSONL (e.g. secure code or good advice).")],
    out: Annotated[Path, o.out_dir("Run directory of the re-alignment.")],
    questions: Annotated[
        str | None,
        typer.Option("--questions", help="Measure the EM rate on these questions (a .yaml/.jsonl file or 'builtin')."),
    ] = None,
    judge: o.Judge = EvalConfig.judge,
    samples: Annotated[int, o.count("--samples", "Answers per question for the EM rate.")] = 4,
    max_new_tokens: o.MaxNewTokens = 128,
    direction: Annotated[
        Path | None,
        typer.Option(
            "--direction", help="Misalignment direction; its projection is reported.", callback=o.direction_dir
        ),
    ] = None,
    probe: Annotated[
        Path | None, o.data_file("Transcripts whose response tokens are projected on --direction.", "--probe")
    ] = None,
    n_examples: Annotated[int | None, o.count("--n-examples", "Benign examples to use (first N).")] = None,
    steps: Annotated[int, o.count("--steps", "Optimizer steps (at most).")] = 50,
    save_every: Annotated[int, o.count("--save-every", "Measure after every K steps.")] = 10,
    batch_size: Annotated[
        int | None,
        o.count(
            "--batch-size", f"Examples per step (default {FinetuneConfig.batch_size}; with --n-grid {CURVE_BATCH})."
        ),
    ] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Learning rate (default: the adapter preset's).")] = None,
    max_length: Annotated[
        int, o.count("--max-length", "Tokens per example (longer ones are cut).")
    ] = FinetuneConfig.max_length,
    seed: o.Seed = FinetuneConfig.seed,
    n_grid: Annotated[
        str | None,
        typer.Option(
            "--n-grid",
            help="Re-alignment curve: measure after each of these sample counts (e.g. 0,50,100,200,400), one pass "
            "over the first max(N) samples of each training set; --steps/--save-every are then derived.",
        ),
    ] = None,
    harmful: Annotated[
        Path | None,
        o.data_file("Curve arm: continue training on the harmful data that made the organism.", "--harmful"),
    ] = None,
    unrelated: Annotated[
        Path | None, o.data_file("Curve arm: continue training on unrelated data.", "--unrelated")
    ] = None,
) -> None:
    """Train an organism further on benign data; report the EM rate and/or projection after each checkpoint."""
    from emscope.data.transcripts import load_transcripts
    from emscope.directions.direction import Direction
    from emscope.errors import ConfigError
    from emscope.organisms.realign import em_measure, projection_measure, realign

    if (direction is None) != (probe is None):
        raise ConfigError("--direction and --probe go together: the probe transcripts are read on the direction")
    if questions is None and direction is None:
        raise ConfigError("nothing to measure: pass --questions (EM rate), or --direction with --probe")
    measures = []
    if questions is not None:
        config = EvalConfig(
            questions=questions, judge=judge, samples=samples, max_new_tokens=max_new_tokens, coherence="em_candidates"
        )
        measures.append(em_measure(config, out / "eval"))
    if direction is not None and probe is not None:
        measures.append(projection_measure(Direction.load(direction), load_transcripts(probe)))

    def measure(lm: Any) -> dict[str, Any]:
        return {k: v for m in measures for k, v in m(lm).items()}

    if n_grid is not None or harmful is not None or unrelated is not None:
        batch = batch_size or CURVE_BATCH
        _curve(organism, data, harmful, unrelated, n_grid, out, measure, batch, lr, max_length, seed, questions)
        return

    rows = realign(
        organism,
        data,
        out,
        measure,
        n_examples=n_examples,
        steps=steps,
        save_every=save_every,
        batch_size=batch_size or FinetuneConfig.batch_size,
        lr=lr,
        max_length=max_length,
        seed=seed,
    )
    for row in rows:
        shown = [f"{k} {row[k]:+.4f}" for k in ("em_rate", "projection") if row.get(k) is not None]
        typer.echo(
            f"step {row['step']:>5}  examples {row['examples_seen']:>6}  loss {row['loss'] or float('nan'):.4f}  "
            + "  ".join(shown)
        )


def _curve(
    organism: Path,
    data: Path,
    harmful: Path | None,
    unrelated: Path | None,
    n_grid: str | None,
    out: Path,
    measure: Any,
    batch_size: int,
    lr: float | None,
    max_length: int,
    seed: int,
    questions: str | None,
) -> None:
    from emscope.errors import ConfigError
    from emscope.organisms.realign import N_GRID, realign_curve

    try:
        grid = [int(n) for n in n_grid.split(",")] if n_grid else list(N_GRID)
    except ValueError:
        raise ConfigError(f"--n-grid takes comma-separated sample counts (e.g. 0,50,100), got {n_grid!r}") from None
    arms = {
        "benign": data,
        **({"harmful": harmful} if harmful else {}),
        **({"unrelated": unrelated} if unrelated else {}),
    }
    curve = realign_curve(
        organism,
        arms,
        out,
        measure,
        n_grid=grid,
        batch_size=batch_size,
        key="em_rate" if questions is not None else "projection",
        lr=lr,
        max_length=max_length,
        seed=seed,
    )
    key = curve.key
    for row in curve.table():
        value = row.get(key)
        ci = (
            f" [{row[f'{key}_ci_low']:.3f}, {row[f'{key}_ci_high']:.3f}]"
            if row.get(f"{key}_ci_low") is not None
            else ""
        )
        shown = "n/a" if value is None else f"{value:.4f}"
        n = "" if row["n"] is None else f"n={row['n']:>4}"
        typer.echo(f"{row['arm']:>10} {n:>7}  {key} {shown}{ci}")
    for arm in curve.arms:
        typer.echo(f"{arm}: first n whose interval overlaps the base model's: {curve.first_overlap(arm)}")
