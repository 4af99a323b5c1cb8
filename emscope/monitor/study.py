"""A drift study over many runs: every run's profile, the PCA axis and the leave-one-type-out detector.

What `emscope drift` and ``benchmarks/drift.py`` run. Layout of ``OUT``::

    OUT/runs/NAME/          one drift profile per run (resumable per checkpoint, see `emscope.monitor.drift`)
    OUT/axis/all, OUT/axis/harmful     PCA of trait drift (all runs; harmful runs only), with the null
    OUT/axis.png
    OUT/detector/           the leave-one-type-out table, folds, held-out scores and the detector fitted on every type
    OUT/summary.json        the numbers quoted, in one place
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emscope.artifacts import atomic_write_json
from emscope.data.transcripts import Transcript
from emscope.errors import DataFormatError
from emscope.monitor.axis import DriftAxis, drift_axis, plot_axis
from emscope.monitor.baselines import FEATURE_SETS
from emscope.monitor.detector import DetectorEvaluation, evaluate_detector, labelled_rows
from emscope.monitor.drift import DriftProfile, checkpoint_rows, drift_profile
from emscope.monitor.traits import TraitSet

log = logging.getLogger(__name__)


def find_runs(paths: Sequence[str | os.PathLike[str]], finished_only: bool = True) -> list[Path]:
    """Run directories among `paths`: each is a run (it has ``checkpoints/``) or a folder of runs.

    With `finished_only`, runs of a folder without a ``zoo_run.json`` (still training) are skipped.
    """
    found: list[Path] = []
    for p in map(Path, paths):
        if (p / "checkpoints").is_dir():
            found.append(p)
        elif p.is_dir():
            found += [
                r for r in sorted(p.iterdir())
                if (r / "checkpoints").is_dir() and (not finished_only or (r / "zoo_run.json").is_file())
            ]  # fmt: skip
        else:
            raise DataFormatError(f"{p} is neither a run directory (with checkpoints/) nor a folder of runs")
    return list(dict.fromkeys(found))


def unique_names(runs: Sequence[Path], qualified: bool = False) -> list[str]:
    """A directory name per run: its own name, prefixed by the folder above its parent where names repeat
    (always, with `qualified`: then a run keeps its name whatever other runs are read beside it)."""
    names = [r.name for r in runs]
    return [
        f"{r.resolve().parent.parent.name}__{r.name}" if qualified or names.count(r.name) > 1 else r.name for r in runs
    ]


@dataclass(frozen=True)
class DriftStudy:
    profiles: list[DriftProfile]
    axes: list[DriftAxis]
    evaluation: DetectorEvaluation | None
    summary: dict[str, Any]


def drift_study(
    runs: Sequence[str | os.PathLike[str]],
    traits: TraitSet,
    out: str | os.PathLike[str],
    *,
    lm: Any = None,
    probes: Sequence[Transcript] | None = None,
    sae: Any = None,
    detector: bool = True,
    features: Sequence[str] = tuple(FEATURE_SETS),
    n_boot: int = 1000,
    n_null: int = 200,
    seed: int = 0,
    batch_size: int = 8,
    max_length: int | None = None,
    progress: bool = True,
    qualified_names: bool = False,
) -> DriftStudy:
    """Profile every run of `runs` (see `find_runs`), then (with `detector`) the axis and the detector.

    Each run's profile goes to ``OUT/runs/NAME`` (`unique_names`; `qualified_names` for names that do not
    depend on which other runs are read, as a study that is rerun while runs finish needs)."""
    from emscope.models.loading import load_model

    out = Path(out)
    run_dirs = find_runs(runs)
    if not run_dirs:
        raise DataFormatError(f"no finished run found under {', '.join(map(str, runs))}")
    lm = lm if lm is not None else load_model(traits.model)
    profiles = []
    for run, key in zip(run_dirs, unique_names(run_dirs, qualified_names), strict=True):
        profiles.append(
            drift_profile(
                run,
                traits,
                probes,
                lm=lm,
                out=out / "runs" / key,
                sae=sae,
                batch_size=batch_size,
                max_length=max_length,
                n_boot=n_boot,
                seed=seed,
                progress=progress,
            )  # fmt: skip
        )
        log.info("drift: %s done (%d checkpoints)", run.name, len(profiles[-1].steps))
    summary: dict[str, Any] = {
        "traits": traits.model,
        "layer": traits.layer,
        "runs": [
            {"name": p.name, "perturbation": p.perturbation, "label": p.label, "steps": p.steps} for p in profiles
        ],
    }
    axes, evaluation = [], None
    rows = checkpoint_rows(profiles)
    if detector and len(rows) >= 3:
        for subset, keep in (("all runs", rows), ("harmful runs", [r for r in rows if r["label"] == "harmful"])):
            if len(keep) >= 3 and len({r["run"] for r in keep}) >= 2:
                a = drift_axis(keep, traits.directions.double().numpy(), n_boot=n_boot, n_null=n_null, seed=seed,
                               subset=subset)  # fmt: skip
                a.save(out / "axis" / subset.split()[0])
                axes.append(a)
                log.info("%s", a.summary())
        if axes:
            plot_axis(axes, rows, out / "axis.png")
        labelled = labelled_rows(rows)
        if len({r["perturbation"] for r in labelled}) >= 2 and {r["label"] for r in labelled} == {"harmful", "benign"}:
            evaluation = evaluate_detector(labelled, features, n_boot=n_boot, seed=seed)
            evaluation.save(out / "detector")
        else:
            log.warning("detector not evaluated: it needs harmful and benign runs of at least 2 perturbation types")
    summary["axes"] = [a.fields() for a in axes]
    summary["detector"] = evaluation.table if evaluation is not None else None
    atomic_write_json(out / "summary.json", summary)
    return DriftStudy(profiles, axes, evaluation, summary)
