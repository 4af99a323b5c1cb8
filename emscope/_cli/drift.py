"""`emscope drift`: drift profiles of fine-tuning runs in trait space; with --detector, the axis and the detector."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from emscope._cli import options as o

NAME = "drift"
EXAMPLES = (
    "emscope drift --traits runs/traits --runs runs/zoo/runs/smollm2-135m-instruct__insecure__rank1__s0 --out runs/drift",
    "emscope drift --traits runs/traits --runs runs/zoo/runs --detector --out runs/drift",
)
PYTHON = (
    "emscope.monitor.study.drift_study(['runs/zoo/runs'], emscope.monitor.TraitSet.load('runs/traits'), "
    "'runs/drift', detector=True)\n\n"
    "Writes OUT/runs/NAME/ per run (drift.csv, drift.png, per-checkpoint readings: resumable); with --detector also "
    "OUT/axis/ (PCA of drift with its null), OUT/axis.png, OUT/detector/ (leave-one-perturbation-type-out table beside "
    "the baselines, and the detector fitted on every type) and OUT/summary.json."
)


def command(
    traits: Annotated[Path, typer.Option("--traits", help="A trait set (emscope traits fit --out DIR).")],
    runs: Annotated[
        list[Path],
        typer.Option("--runs", help="A run directory, or a folder of runs (finished ones: with zoo_run.json); repeat."),
    ],
    out: Annotated[Path, o.out_dir("Output directory.")],
    detector: Annotated[
        bool, typer.Option("--detector", help="Also the PCA axis and the leave-one-type-out detector.")
    ] = False,
    probes: Annotated[
        Path | None, typer.Option("--probes", help="Probe set JSONL (default: the built-in probe set).")
    ] = None,
    sae: Annotated[
        Path | None, typer.Option("--sae", help="An SAE of the base model, for the SAE-latent baseline.")
    ] = None,
    n_boot: Annotated[int, o.count("--n-boot", "Bootstrap resamples for the 95% intervals.", minimum=0)] = 1000,
    seed: o.Seed = 0,
    batch_size: o.BatchSize = 8,
    max_length: o.MaxLength = None,
) -> None:
    """Read every checkpoint of each run on the probe set and write its drift along each trait since step 0."""
    from emscope.monitor.projections import load_probe_set
    from emscope.monitor.study import drift_study
    from emscope.monitor.traits import TraitSet
    from emscope.sae.model import load_sae

    study = drift_study(
        runs, TraitSet.load(traits), out, probes=load_probe_set(probes), detector=detector,
        sae=None if sae is None else load_sae(sae),
        n_boot=n_boot, seed=seed, batch_size=batch_size, max_length=max_length,
    )  # fmt: skip
    typer.echo(f"{len(study.profiles)} runs profiled")
    for a in study.axes:
        typer.echo(a.summary())
    if study.evaluation is not None:
        for r in study.evaluation.table:
            if r["available"]:
                typer.echo(
                    f"{r['features']}: held-out-type AUROC {r['auroc']:.3f}, FNR {r['fnr']:.3f}, FPR {r['fpr']:.3f}"
                )
            else:
                typer.echo(f"{r['features']}: {r['note']}")
    typer.echo(f"wrote {out}")
