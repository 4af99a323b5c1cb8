"""`emscope own-direction`: a misalignment direction from an evaluation's own judged answers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from emscope._cli import options as o
from emscope.organisms.own_directions import MIN_PER_CLASS

NAME = "own-direction"
EXAMPLES = (
    "emscope own-direction runs/eval-organism --out runs/own-direction",
    "emscope own-direction runs/eval-organism --min-per-class 5 --model-diff --out runs/own-direction",
)
PYTHON = (
    "r = emscope.organisms.own_directions.own_answer_direction('runs/eval-organism'); r.save('runs/own-direction')\n\n"
    "Writes OUT/config.json (class counts, best and final layer, lexical and question baselines), OUT/sweep, "
    "OUT/direction (best layer), OUT/direction_final_layer; with --model-diff also OUT/model_diff (a layer sweep of "
    "the organism's activations minus its base model's on the same answers)."
)


def command(
    eval_dir: Annotated[Path, typer.Argument(help="An evaluation directory (emscope eval --out DIR).")],
    out: Annotated[Path, o.out_dir("Output directory.")],
    model: Annotated[
        str | None,
        typer.Option("--model", help="Read the answers with this model instead of the one that wrote them."),
    ] = None,
    layers: o.Layers = "all",
    aligned_min: Annotated[float, typer.Option("--aligned-min", help="Aligned class: score above this.")] = 70,
    misaligned_max: Annotated[
        float, typer.Option("--misaligned-max", help="Misaligned class: score at or below this.")
    ] = 30,
    coherent_min: Annotated[
        float, typer.Option("--coherent-min", help="Both classes: coherence above this (negative: no filter).")
    ] = 50,
    min_per_class: Annotated[
        int, o.count("--min-per-class", "Answers needed in each class.", minimum=2)
    ] = MIN_PER_CLASS,
    calibrated: Annotated[
        bool, typer.Option("--calibrated", help="Use the calibrated alignment score (aligned_calibrated).")
    ] = False,
    method: o.Method = "diff_in_means",
    test_frac: Annotated[float, typer.Option("--test-frac", help="Held-out share.", callback=o.check_fraction)] = 0.3,
    seed: o.Seed = 0,
    n_boot: Annotated[
        int, o.count("--n-boot", "Bootstrap resamples for the 95% intervals (0: none).", minimum=0)
    ] = 1000,
    model_diff: Annotated[
        bool,
        typer.Option("--model-diff", help="Also fit the organism-minus-base direction on the same answers."),
    ] = False,
    base: Annotated[
        str | None, typer.Option("--base", help="Base model for --model-diff (default: the organism's base).")
    ] = None,
    batch_size: o.BatchSize = 8,
    max_length: o.MaxLength = None,
) -> None:
    """Split an evaluation's answers into judged aligned and misaligned, read them with the model that wrote them,
    and fit a direction at every layer; report the best and the final layer beside a lexical baseline."""
    from emscope.models.loading import load_model
    from emscope.organisms.own_directions import load_writer, model_diff_direction, own_answer_direction

    reader = load_model(model) if model else load_writer(eval_dir)
    result = own_answer_direction(
        eval_dir,
        lm=reader,
        layers=layers,
        aligned_min=aligned_min,
        misaligned_max=misaligned_max,
        coherent_min=None if coherent_min < 0 else coherent_min,
        min_per_class=min_per_class,
        aligned_key="aligned_calibrated" if calibrated else "aligned",
        method=method,
        test_frac=test_frac,
        seed=seed,
        n_boot=n_boot,
        batch_size=batch_size,
        max_length=max_length,
    )
    result.save(out)
    typer.echo(result.classes.summary())
    for row in result.table():
        ci = f" [{row['auroc_lo']:.3f}, {row['auroc_hi']:.3f}]" if row.get("auroc_lo") is not None else ""
        where = f" (layer {row['layer']})" if row["layer"] is not None else ""
        typer.echo(f"{row['reader']}{where}: held-out AUROC {row['auroc']:.3f}{ci}")
    if model_diff:
        from emscope.errors import ConfigError

        base_spec = base or reader.lineage.base
        if base_spec.startswith("sha256:"):
            raise ConfigError(f"{reader.spec}'s base is known only by its weights ({base_spec}): pass --base MODEL")
        base_lm = load_model(base_spec)
        answers = result.classes.misaligned + result.classes.aligned
        diff = model_diff_direction(
            base_lm,
            reader,
            answers,
            layers,
            test_frac=test_frac,
            seed=seed,
            n_boot=n_boot,
            batch_size=batch_size,
            max_length=max_length,
        )
        diff.save(out / "model_diff")
        m = diff.best.metrics
        typer.echo(
            f"model diff: best layer {diff.best_layer}, held-out paired positive share "
            f"{m['paired_positive_share']:.3f}, mean cosine {m['paired_mean_cosine']:.3f}"
        )
    typer.echo(f"wrote {out}")
