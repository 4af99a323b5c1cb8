"""Stress tests of the drift monitor (docs/monitor.md): longer runs, runs that start misaligned, another model.

The detector under test is the one `benchmarks/drift.py` shipped: fitted on every perturbation type of the
SmolLM2 study (--study, its drift profiles and detector/detector). Three cases, each read on the built-in probe
set with the study's trait set (or, for another model, that model's own trait set):

- longer: runs 3x past the calibration's token budget (--longer, e.g. runs/Z3/runs): each checkpoint scored
  with the shipped detector; where along the run it first flags, and its flag rate past the calibrated steps.
- from-organism: runs that start from an already misaligned organism (--from-organism, the re-alignment arms
  of benchmarks/realign_curve.py: harmful = more steered self-distillation, benign and unrelated = benign),
  scored on drift since the run's own start (what a monitor attached to that run sees) and on drift since the
  base model (the organism's own drift added, read from its run's profile in the study).
- other-model: runs of another model (--other, e.g. Qwen2.5-Coder-0.5B zoo runs). Before recalibration: the
  SmolLM2 detector as shipped (projection units), and a SmolLM2 detector fitted on drift in units of each
  trait's contrast shift (model-free units). After recalibration: leave-one-type-out on the other model's
  runs, (a) SmolLM2's weights kept, standardisation and threshold refitted on the training types, (b) the
  detector refitted (`emscope.monitor.detector.evaluate_detector`).

    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python benchmarks/drift_stress.py --longer runs/Z3/runs \\
        --from-organism runs/R/curve --other runs/Q/runs runs/Qt/runs --out runs/M/stress \\
        --docs docs/results/monitor/stress
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from emscope.models.loading import load_model
from emscope.monitor.detector import DriftDetector, evaluate_detector, fit_detector, youden_threshold
from emscope.monitor.drift import DriftProfile, checkpoint_rows, drift_profile
from emscope.monitor.projections import load_probe_set
from emscope.monitor.study import find_runs, unique_names

sys.path.insert(0, str(Path(__file__).parent))
from drift import markdown, traits_for  # noqa: E402

log = logging.getLogger("drift_stress")
ARM_LABELS = {"harmful": "harmful", "benign": "benign", "unrelated": "benign"}


def study_profiles(study: Path) -> list[DriftProfile]:
    """The drift profiles the shipped detector was fitted on."""
    return [DriftProfile.load(d) for d in sorted((study / "runs").iterdir()) if (d / "config.json").is_file()]


def read_profiles(
    runs: list[Path], traits: Any, lm: Any, out: Path, tags: list[dict] | None = None
) -> list[DriftProfile]:
    """Each run's drift profile (cached under OUT/NAME), its tags overridden by `tags` where given."""
    probes = load_probe_set()
    profiles = []
    keys = [t["name"] for t in tags] if tags is not None else unique_names(runs, qualified=True)
    for i, (run, key) in enumerate(zip(runs, keys, strict=True)):
        p = drift_profile(run, traits, probes, lm=lm, out=out / key, progress=False)
        if tags is not None:
            p = replace(p, tags={**p.tags, **tags[i]})
        profiles.append(p)
        log.info("%s: %d checkpoints", key, len(p.steps))
    return profiles


def in_units(p: DriftProfile) -> np.ndarray:
    """Drift [n_checkpoints, n_traits] divided by each trait's contrast shift: comparable across models."""
    return p.drift.double().numpy() / np.asarray([p.shifts[t] for t in p.names])


def score(detector: DriftDetector, profiles: list[DriftProfile], case: str, units: bool = False,
          offset: np.ndarray | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """One row per checkpoint after step 0: the detector's score and flag on the profile's drift (+ `offset`)."""
    rows = []
    for p in profiles:
        d = in_units(p) if units else p.drift.double().numpy()
        if offset is not None:
            d = d + offset
        s = detector.probabilities(d)
        for i, step in enumerate(p.steps):
            if i == 0 and offset is None:
                continue
            rows.append({"case": case, "run": p.name, "perturbation": p.perturbation, "label": p.label,
                         "step": step, "score": float(s[i]), "flagged": bool(s[i] >= detector.threshold)})  # fmt: skip
    return rows


def rates(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """AUROC, FNR and FPR of scored checkpoint rows (None where a class is missing)."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray([r["label"] == "harmful" for r in rows])
    s = np.asarray([r["score"] for r in rows])
    f = np.asarray([r["flagged"] for r in rows])
    both = 0 < y.sum() < len(y)
    return {
        "n_checkpoints": len(rows),
        "n_runs": len({r["run"] for r in rows}),
        "auroc": float(roc_auc_score(y, s)) if both else None,
        "fnr": float((~f[y]).mean()) if y.any() else None,
        "fpr": float(f[~y].mean()) if (~y).any() else None,
    }


def per_run(rows: list[dict[str, Any]], calibrated_steps: int | None = None) -> list[dict[str, Any]]:
    """Per run: label, checkpoints, first flagged step, flag rate, and (longer runs) flag rate past the calibration."""
    out = []
    for run in dict.fromkeys(r["run"] for r in rows):
        mine = [r for r in rows if r["run"] == run]
        flagged = [r["step"] for r in mine if r["flagged"]]
        row = {"case": mine[0]["case"], "run": run, "label": mine[0]["label"], "checkpoints": len(mine),
               "last_step": mine[-1]["step"], "first_flagged_step": flagged[0] if flagged else "-",
               "flag_rate": len(flagged) / len(mine), "max_score": max(r["score"] for r in mine)}  # fmt: skip
        if calibrated_steps is not None:
            late = [r for r in mine if r["step"] > calibrated_steps]
            row["flag_rate_past_calibration"] = sum(r["flagged"] for r in late) / len(late) if late else "-"
        out.append(row)
    return out


def checkpoint_rows_of(profiles: list[DriftProfile], units: bool = False) -> list[dict[str, Any]]:
    """`emscope.monitor.drift.checkpoint_rows`, with trait drift in contrast-shift units when `units`."""
    rows = checkpoint_rows(profiles)
    if units:
        shifts = {p.run: np.asarray([p.shifts[t] for t in p.names]) for p in profiles}
        rows = [{**r, "trait_drift": r["trait_drift"] / shifts[r["run"]]} for r in rows]
    return rows


def restandardised(weights_from: DriftDetector, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Leave one type out on `rows`: `weights_from`'s weights kept, mean/scale and threshold fitted on the rest."""
    import torch

    scored = []
    for held in sorted({str(r["perturbation"]) for r in rows}):
        train = [r for r in rows if r["perturbation"] != held]
        test = [r for r in rows if r["perturbation"] == held]
        x = np.stack([r["trait_drift"] for r in train])
        y = np.asarray([r["label"] == "harmful" for r in train])
        if len(set(y.tolist())) < 2:
            continue
        det = replace(weights_from, mean=torch.from_numpy(x.mean(0)).float(),
                      scale=torch.from_numpy(x.std(0) + 1e-6).float())  # fmt: skip
        det = replace(det, threshold=youden_threshold(det.probabilities(x), y.astype(int)))
        s = det.probabilities(np.stack([r["trait_drift"] for r in test]))
        scored += [{"case": "other-model", "run": r["name"], "perturbation": held, "label": r["label"],
                    "step": r["step"], "score": float(si), "flagged": bool(si >= det.threshold)}
                   for r, si in zip(test, s, strict=True)]  # fmt: skip
    return scored


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    from matplotlib.figure import Figure

    cases = list(dict.fromkeys(r["case"] for r in rows))
    fig = Figure(figsize=(4 * len(cases), 3.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(cases)))
    colours = {"harmful": "tab:red", "benign": "tab:blue"}
    for ax, case in zip(axes, cases, strict=True):
        mine = [r for r in rows if r["case"] == case]
        for run in dict.fromkeys(r["run"] for r in mine):
            pts = [r for r in mine if r["run"] == run]
            ax.plot([r["step"] for r in pts], [r["score"] for r in pts], "o-", ms=3, lw=1,
                    color=colours.get(str(pts[0]["label"]), "grey"), alpha=0.8)  # fmt: skip
        ax.set_title(case, fontsize=9)
        ax.set_xlabel("training step")
        ax.set_ylim(-0.02, 1.02)
    axes[0].set_ylabel("detector score (red harmful, blue benign)")
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--study", default="runs/M/drift", help="the SmolLM2 drift study (benchmarks/drift.py --out)")
    ap.add_argument("--traits", default="runs/M/traits-smollm2-135m-instruct")
    ap.add_argument("--longer", nargs="*", default=[])
    ap.add_argument("--calibrated-steps", type=int, default=27, help="steps of the runs the detector was fitted on")
    ap.add_argument("--from-organism", default=None, help="a realign_curve directory (one subfolder per arm)")
    ap.add_argument("--organism-profile", default=None,
                    help="the organism's run profile in the study (default: the run the curve started from)")  # fmt: skip
    ap.add_argument("--other", nargs="*", default=[])
    ap.add_argument("--other-model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--out", default="runs/M/stress")
    ap.add_argument("--cache", default="runs/M/cache")
    ap.add_argument("--docs", default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out, study = Path(args.out), Path(args.study)
    out.mkdir(parents=True, exist_ok=True)
    shipped = DriftDetector.load(study / "detector" / "detector")
    calibration = study_profiles(study)
    rows: list[dict[str, Any]] = []
    tables: dict[str, Any] = {}
    from emscope.monitor.traits import TraitSet

    if args.longer or args.from_organism:
        traits = TraitSet.load(args.traits)
        lm = load_model(traits.model)
    if args.longer:
        longer = score(shipped, read_profiles(find_runs(args.longer), traits, lm, out / "longer"), "longer")
        rows += longer
        tables["longer"] = {"rates": rates(longer), "runs": per_run(longer, args.calibrated_steps)}
    if args.from_organism:
        curve = Path(args.from_organism)
        arms = [a for a in ARM_LABELS if (curve / a / "run" / "checkpoints").is_dir()]
        runs = [curve / a / "run" for a in arms]
        tags = [{"name": f"from-organism-{a}", "perturbation": f"{a} (from organism)", "label": ARM_LABELS[a]}
                for a in arms]  # fmt: skip
        continued = read_profiles(runs, traits, lm, out / "from_organism", tags)
        # each arm's realign config records the organism's checkpoint path (curves written before the fix of
        # realign_curve's config.json hold only its measured row there; newer ones also "organism_checkpoint")
        start = json.loads((curve / arms[0] / "config.json").read_text())["organism"]
        organism_run = Path(start).parent.parent.resolve()
        own = next(p for p in calibration if Path(p.run).resolve() == organism_run)
        offset = own.drift.double().numpy()[-1]
        relative = score(shipped, continued, "from-organism (drift since its start)")
        absolute = score(shipped, continued, "from-organism (drift since the base)", offset=offset)
        rows += relative + absolute
        tables["from_organism"] = {
            "organism_run": own.name,
            "organism_score": float(shipped.probabilities(offset[None])[0]),
            "since_start": {"rates": rates(relative), "runs": per_run(relative)},
            "since_base": {"rates": rates(absolute), "runs": per_run(absolute)},
        }
    if args.other:
        other_lm = load_model(args.other_model)
        other_traits = traits_for(other_lm, out / f"traits-{args.other_model}", None, 1000, Path(args.cache))
        others = read_profiles(find_runs(args.other), other_traits, other_lm, out / "other")
        before = score(shipped, others, "other-model")
        unit_rows = checkpoint_rows_of(calibration, units=True)
        unit_det = fit_detector(np.stack([r["trait_drift"] for r in unit_rows]),
                                np.asarray([r["label"] == "harmful" for r in unit_rows]).astype(int),
                                unit_rows[0]["names"])  # fmt: skip
        before_units = score(unit_det, others, "other-model", units=True)
        other_rows = checkpoint_rows_of(others)
        threshold_only = restandardised(shipped, other_rows)
        refit = evaluate_detector(other_rows, ["trait_drift"], n_boot=1000) if len(
            {r["perturbation"] for r in other_rows}) >= 2 else None  # fmt: skip
        rows += before
        tables["other_model"] = {
            "model": args.other_model,
            "trait_layer": other_traits.layer,
            "traits": other_traits.rows(),
            "before (shipped, projection units)": {"rates": rates(before), "runs": per_run(before)},
            "before (fitted on SmolLM2 in shift units)": {"rates": rates(before_units), "runs": per_run(before_units)},
            "after (SmolLM2 weights, restandardised + threshold, leave one type out)": {
                "rates": rates(threshold_only), "runs": per_run(threshold_only)} if threshold_only else None,
            "after (refitted, leave one type out)": None if refit is None else refit.row("trait_drift"),
        }  # fmt: skip
    (out / "stress.json").write_text(json.dumps(tables, indent=1, default=str))
    parts = ["# drift monitor stress tests\n", "command: " + " ".join(["benchmarks/drift_stress.py", *sys.argv[1:]])]
    for case, t in tables.items():
        parts.append(f"## {case}")
        for name, v in t.items():
            if isinstance(v, dict) and "runs" in v:
                parts.append(f"{name}: {json.dumps(v['rates'])}\n\n" + markdown(v["runs"], list(v["runs"][0])))
            elif name == "traits":
                parts.append(markdown(v, ["trait", "heldout_auroc", "lexical_auroc"]))
            else:
                parts.append(f"{name}: {json.dumps(v, default=str)}")
    (out / "stress.md").write_text("\n\n".join(parts) + "\n")
    if rows:
        plot(rows, out / "stress.png")
    print((out / "stress.md").read_text())
    if args.docs:
        import shutil

        docs = Path(args.docs)
        docs.mkdir(parents=True, exist_ok=True)
        for name in ("stress.md", "stress.json", "stress.png"):
            if (out / name).is_file():
                shutil.copy(out / name, docs / name)


if __name__ == "__main__":
    main()
