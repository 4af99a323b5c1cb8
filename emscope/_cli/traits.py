"""`emscope traits fit`: one reading-route direction per trait, the layer chosen on held-out topics."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from emscope._cli import options as o
from emscope.monitor.traits import BUILTIN_TRAITS

NAME = "fit"
GROUP = "traits"
EXAMPLES = (
    "emscope traits fit --model smollm2-135m-instruct --out runs/traits",
    "emscope traits fit --model smollm2-135m-instruct --layer 15 --traits malice,deception,formality --out runs/traits",
)
PYTHON = (
    "t = emscope.monitor.fit_traits(emscope.load_model('smollm2-135m-instruct')); t.save('runs/traits')\n\n"
    "Writes OUT/config.json (kind trait_set: layer, per-trait held-out-topic AUROC and lexical baseline, model "
    "lineage), OUT/directions.safetensors, OUT/traits.csv, OUT/layers.csv, OUT/cosines.csv and OUT/cosines.png."
)


def command(
    out: Annotated[Path, o.out_dir("Output directory (the trait set).")],
    model: o.Model = o.DEFAULT_MODEL,
    layer: Annotated[
        int | None, typer.Option("--layer", help="Fix the layer (default: best mean held-out-topic AUROC).")
    ] = None,
    traits: Annotated[
        str, typer.Option("--traits", help="Comma-separated trait names (default: all built-in traits).")
    ] = ",".join(BUILTIN_TRAITS),
    trait_dir: Annotated[
        Path | None, typer.Option("--trait-dir", help="Directory of TRAIT.jsonl files (default: the built-in ones).")
    ] = None,
    n_boot: Annotated[int, o.count("--n-boot", "Bootstrap resamples for the 95% intervals.", minimum=0)] = 1000,
    seed: o.Seed = 0,
    batch_size: o.BatchSize = 8,
    max_length: o.MaxLength = None,
    cache_dir: Annotated[
        Path | None, typer.Option("--cache-dir", help="Keep the capture here (a rerun reads it back).")
    ] = None,
) -> None:
    """Read every trait's contrast pairs, fit a difference-in-means direction per trait and layer, choose the layer
    by the mean held-out-topic AUROC, and save the trait set with its cosine matrix and lexical baseline."""
    from emscope.models.loading import load_model
    from emscope.monitor.traits import fit_traits

    names = [t.strip() for t in traits.split(",") if t.strip()]
    result = fit_traits(
        load_model(model), names, layer=layer, directory=trait_dir, n_boot=n_boot, seed=seed, batch_size=batch_size,
        max_length=max_length, cache_dir=cache_dir,
    )  # fmt: skip
    result.save(out)
    typer.echo(f"layer {result.layer}")
    for row in result.rows():
        typer.echo(
            f"{row['trait']}: held-out-topic AUROC {row['heldout_auroc']:.3f} "
            f"[{row['heldout_auroc_lo']:.3f}, {row['heldout_auroc_hi']:.3f}], lexical {row['lexical_auroc']:.3f}"
        )
    typer.echo(f"wrote {out}")
