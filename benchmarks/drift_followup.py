"""Two follow-ups to the drift monitor's study (docs/monitor.md), read from the saved drift profiles (no model run).

1. Direction, not size: the detector on ``trait_cosine`` (trait drift over the length of the raw activation
   drift, the cosine between the model's movement and each trait) beside the study's feature sets, leave one
   type out; then, fitted on every study run, scored on the stress cases the shipped detector failed: the 3x
   longer runs, and the other model (Qwen) before recalibration.
2. Behaviour labels: each run labelled by its measured EM instead of its type (EM-positive when the paired
   difference of its final checkpoint's EM rate against the base excludes 0 upwards, 95% CI over questions;
   `emscope.evaluation.compare.compare_evals`), for runs evaluated on 124 answers; runs without such an
   evaluation are left out. Leave one type out as before.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/drift_followup.py --study runs/M/drift \\
        --longer runs/M/stress/longer --other runs/M/stress/other --out runs/M/followup \\
        --docs docs/results/monitor/followup
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from emscope.monitor.baselines import FEATURE_SETS
from emscope.monitor.detector import DriftDetector, evaluate_detector, fit_detector
from emscope.monitor.drift import DriftProfile, checkpoint_rows

sys.path.insert(0, str(Path(__file__).parent))
from drift import DETECTOR_COLUMNS, FOLD_COLUMNS, markdown  # noqa: E402
from drift_stress import per_run, rates, study_profiles  # noqa: E402

log = logging.getLogger("drift_followup")
MIN_ANSWERS = 124  # the zoo's 4-sample evaluation; 31-answer evaluations are too coarse to label a run


def profiles_under(folder: Path) -> list[DriftProfile]:
    return [DriftProfile.load(d) for d in sorted(folder.iterdir()) if (d / "config.json").is_file()]


def scored(features: str, train: list[dict[str, Any]], profiles: list[DriftProfile], case: str) -> list[dict]:
    """Fit the detector on `features` of every `train` row; score each checkpoint after step 0 of `profiles`."""
    make = FEATURE_SETS[features]
    rows = checkpoint_rows(profiles)
    x_train, x_test = make(train, rows)
    det = fit_detector(x_train, np.asarray([r["label"] == "harmful" for r in train]).astype(int),
                       [features] * x_train.shape[1])  # fmt: skip
    s = det.probabilities(x_test)
    return [{"case": case, "features": features, "run": r["name"], "perturbation": r["perturbation"],
             "label": r["label"], "step": r["step"], "score": float(si), "flagged": bool(si >= det.threshold)}
            for r, si in zip(rows, s, strict=True)]  # fmt: skip


def evaluated_checkpoints(profile: DriftProfile, detector: DriftDetector) -> list[dict[str, Any]]:
    """Every evaluated checkpoint of a run (eval/step-NNNNNN, or eval/final for the last): its EM rate and mean
    alignment against its zoo's base model (paired, 95% CI over questions) beside `detector`'s score and flag."""
    from emscope.evaluation.compare import compare_evals

    run = Path(profile.run)
    base = run.parent.parent / "base" / str(profile.tags.get("model", "")) / "eval"
    if not (base / "summary.json").is_file():
        return []
    scores = detector.probabilities(profile.drift.double().numpy())
    out = []
    for i, step in enumerate(profile.steps):
        final = i == len(profile.steps) - 1
        where = run / "eval" / ("final" if final else f"step-{step:06d}")
        if i == 0 or not (where / "summary.json").is_file():
            continue
        d = compare_evals(base, where).differences
        em, aligned = d["em_rate_all_answers"], d["mean_aligned"]
        out.append({"run": profile.name, "run_dir": profile.run, "perturbation": profile.perturbation,
                    "label": profile.label, "step": step, "final": final, "n_pairs": em.n_pairs,
                    "em_diff": em.value, "em_diff_lo": em.ci_low, "em_diff_hi": em.ci_high,
                    "aligned_diff": aligned.value, "aligned_diff_lo": aligned.ci_low,
                    "aligned_diff_hi": aligned.ci_high, "em_positive": bool(em.ci_low > 0),
                    "score": float(scores[i]), "flagged": bool(scores[i] >= detector.threshold)})  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--study", default="runs/M/drift")
    ap.add_argument("--longer", default="runs/M/stress/longer")
    ap.add_argument("--other", default="runs/M/stress/other")
    ap.add_argument("--calibrated-steps", type=int, default=27)
    ap.add_argument("--out", default="runs/M/followup")
    ap.add_argument("--docs", default=None)
    ap.add_argument("--n-boot", type=int, default=1000)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    study = study_profiles(Path(args.study))
    rows = checkpoint_rows(study)
    features = ["trait_drift", "trait_cosine", "trait_drift_norm", "activation_pc1", "sae_latent_drift",
                "training_loss"]  # fmt: skip
    result: dict[str, Any] = {"command": " ".join(["benchmarks/drift_followup.py", *sys.argv[1:]])}

    by_type = evaluate_detector(rows, features, n_boot=args.n_boot)
    result["type_labels"] = {"table": by_type.table, "folds": by_type.folds}

    stress: list[dict[str, Any]] = []
    cases = {"longer": args.longer, "other model, before recalibration": args.other}
    for case, folder in cases.items():
        if Path(folder).is_dir():
            profiles = profiles_under(Path(folder))
            stress += [r for f in ("trait_drift", "trait_cosine") for r in scored(f, rows, profiles, case)]
    result["stress"] = [
        {"case": case, "features": f, "rates": rates(mine), "runs": per_run(mine, args.calibrated_steps)}
        for case in dict.fromkeys(r["case"] for r in stress)
        for f in ("trait_drift", "trait_cosine")
        if (mine := [r for r in stress if r["case"] == case and r["features"] == f])
    ]

    shipped = DriftDetector.load(Path(args.study) / "detector" / "detector")
    per_step = [c for p in study for c in evaluated_checkpoints(p, shipped)]
    labels = [{**c, "type_label": c["label"], "label": "harmful" if c["em_positive"] else "benign"}
              for c in per_step if c["final"] and c["n_pairs"] >= MIN_ANSWERS]  # fmt: skip
    result["behaviour_labels"] = {"runs": labels}
    relabel = {c["run_dir"]: c["label"] for c in labels}
    relabelled = [dict(r, label=relabel[r["run"]]) for r in rows if r["run"] in relabel]  # names repeat across zoos
    if {r["label"] for r in relabelled} == {"harmful", "benign"}:
        by_em = evaluate_detector(relabelled, features, n_boot=args.n_boot)
        result["behaviour_labels"].update(table=by_em.table, folds=by_em.folds)
    result["checkpoint_behaviour"] = [c for c in per_step if sum(x["run_dir"] == c["run_dir"] for x in per_step) > 1]
    (out / "followup.json").write_text(json.dumps(result, indent=1, default=str))

    parts = ["# drift monitor follow-ups", f"command: `{result['command']}`", "## type labels, leave one type out",
             markdown(by_type.table, DETECTOR_COLUMNS),
             markdown([f for f in by_type.folds if f["features"] in ("trait_drift", "trait_cosine")],
                      ["features", *FOLD_COLUMNS])]  # fmt: skip
    parts.append("## stress cases, detector fitted on every study run")
    for s in result["stress"]:
        parts.append(
            f"{s['case']} / {s['features']}: {json.dumps(s['rates'])}\n\n" + markdown(s["runs"], list(s["runs"][0]))
        )
    label_columns = ["run_dir", "perturbation", "type_label", "em_diff", "em_diff_lo", "em_diff_hi", "n_pairs", "label"]
    parts += ["## behaviour labels (EM-positive: final EM difference vs base, CI above 0)",
              markdown(labels, label_columns) if labels else "no evaluated run"]  # fmt: skip
    if "table" in result["behaviour_labels"]:
        parts += [markdown(result["behaviour_labels"]["table"], DETECTOR_COLUMNS),
                  markdown([f for f in result["behaviour_labels"]["folds"] if f["features"] in ("trait_drift", "trait_cosine")],
                           ["features", *FOLD_COLUMNS])]  # fmt: skip
    if result["checkpoint_behaviour"]:
        parts += ["## checkpoints evaluated one by one: EM against the base beside the shipped detector",
                  markdown(result["checkpoint_behaviour"], [k for k in result["checkpoint_behaviour"][0] if k != "final"])]  # fmt: skip
    (out / "followup.md").write_text("\n\n".join(parts) + "\n")
    print((out / "followup.md").read_text())
    if args.docs:
        Path(args.docs).mkdir(parents=True, exist_ok=True)
        for name in ("followup.md", "followup.json"):
            shutil.copy(out / name, Path(args.docs) / name)


if __name__ == "__main__":
    main()
