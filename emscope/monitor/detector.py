"""`DriftDetector`: flags a checkpoint as dangerous from its drift, judged on perturbation types it never saw.

The detector is a logistic regression on standardised drift features (an `emscope.stats.LogisticProbe`),
with classes weighted to balance: leaving a perturbation type out changes the share of harmful checkpoints
in training, and an unweighted fit would move its intercept with it, biasing the pooled held-out AUROC
below chance (seen on shuffled labels: 0.29 unweighted). Its threshold on the probability is chosen on the training rows (`THRESHOLD_RULE`). `evaluate_detector`
leaves one perturbation type out at a time: the detector is fitted on the checkpoints of every other type
(the held-out type's runs are never seen, in fitting or in choosing the threshold) and scores the held-out
type's checkpoints. Over the pooled held-out scores it reports the false-negative rate (harmful
checkpoints not flagged), the false-positive rate (benign checkpoints flagged) at each fold's own
threshold, and the AUROC; each with a 95% interval from resampling whole runs. The baselines of
`emscope.monitor.baselines` go through the very same folds, fit and threshold rule.

A checkpoint's label is its run's (``harmful`` or ``benign``, from ``zoo_run.json``); step 0 is left out
(it is the reference), and so are runs without such a label.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emscope.artifacts import DAMAGED, load_artifact, read_config, save_artifact, write_config
from emscope.errors import ArtifactError, DataFormatError, lookup
from emscope.monitor.baselines import FEATURE_SETS, MONITOR, FeatureUnavailable
from emscope.records import write_csv
from emscope.stats import LogisticProbe, auroc, percentile_interval

log = logging.getLogger(__name__)
KIND = "drift_detector"
EVAL_KIND = "detector_evaluation"
LABELS = {"harmful": 1, "benign": 0}
DETECTOR_C = 1.0
THRESHOLD_RULE = (
    "the training score that maximises TPR - FPR (Youden's J) on the training checkpoints (ties -> the highest), "
    "moved halfway down to the next lower training score (the same training flags, a margin for unseen types)"
)
TABLE_COLUMNS = (
    "features",
    "available",
    "auroc",
    "auroc_lo",
    "auroc_hi",
    "fnr",
    "fnr_lo",
    "fnr_hi",
    "fpr",
    "fpr_lo",
    "fpr_hi",
    "n_checkpoints",
    "n_harmful",
    "n_benign",
    "n_runs",
    "n_folds",
    "note",
)


def youden_threshold(scores: np.ndarray, y: np.ndarray) -> float:
    """`THRESHOLD_RULE` on training `scores` with labels `y` (1 = positive); flag when score >= threshold."""
    values = np.unique(scores)  # ascending
    j = np.asarray([(scores[y == 1] >= t).mean() - (scores[y == 0] >= t).mean() for t in values])
    best = int(np.flatnonzero(j >= j.max() - 1e-12)[-1])  # a tie keeps the higher score
    return float(values[best] if best == 0 else (values[best] + values[best - 1]) / 2)


@dataclass(frozen=True, eq=False)
class DriftDetector:
    """``score(drift) = sigmoid(((drift - mean) / scale) @ weights + bias)``; flagged when ``score >= threshold``."""

    names: tuple[str, ...]  # one per feature (the trait names, for the monitor)
    weights: torch.Tensor  # [n_features], on standardised features
    bias: float
    threshold: float
    mean: torch.Tensor  # [n_features]
    scale: torch.Tensor  # [n_features]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(self.names))
        for name in ("weights", "mean", "scale"):
            t = getattr(self, name)
            if t.ndim != 1 or len(t) != len(self.names):
                raise DataFormatError(
                    f"a detector needs one {name} per feature ({len(self.names)}), got {list(t.shape)}"
                )

    def logit(self, drift: torch.Tensor | np.ndarray) -> torch.Tensor:
        x = torch.as_tensor(drift, dtype=torch.float64)
        if x.shape[-1] != len(self.names):
            raise DataFormatError(
                f"the detector reads {len(self.names)} features ({', '.join(self.names)}), got {x.shape[-1]}"
            )
        return ((x - self.mean.double()) / self.scale.double()) @ self.weights.double() + self.bias

    def score(self, drift: torch.Tensor | np.ndarray) -> float | torch.Tensor:
        """P(dangerous) for one drift vector [n_features] (a float) or rows [n, n_features] (a tensor)."""
        p = torch.sigmoid(self.logit(drift))
        return float(p) if p.ndim == 0 else p.float()

    def probabilities(self, rows: torch.Tensor | np.ndarray) -> np.ndarray:
        """P(dangerous) of rows [n, n_features] as a 1-D numpy array."""
        return np.atleast_1d(torch.sigmoid(self.logit(rows)).numpy()).reshape(-1)

    def flag(self, drift: torch.Tensor | np.ndarray) -> bool | torch.Tensor:
        s = self.score(drift)
        return bool(s >= self.threshold) if isinstance(s, float) else s >= self.threshold

    def save(self, directory: str | os.PathLike[str]) -> Path:
        fields = {"names": list(self.names), "bias": self.bias, "threshold": self.threshold, "meta": self.meta}
        tensors = {"weights": self.weights.float(), "mean": self.mean.float(), "scale": self.scale.float()}
        return save_artifact(directory, KIND, {**fields, "threshold_rule": THRESHOLD_RULE}, tensors)

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> DriftDetector:
        config, t = load_artifact(directory, KIND, ("names", "bias", "threshold"), ("weights", "mean", "scale"))
        try:
            return cls(
                tuple(config["names"]),
                t["weights"],
                float(config["bias"]),
                float(config["threshold"]),
                t["mean"],
                t["scale"],
                config.get("meta", {}),
            )
        except (DataFormatError, TypeError, ValueError) as e:
            raise ArtifactError(
                f"{directory}: the detector's names do not match its weights ({e}); {DAMAGED}"
            ) from None


def fit_detector(
    features: np.ndarray, labels: np.ndarray, names: Sequence[str], *, c: float = DETECTOR_C, **meta: Any
) -> DriftDetector:
    """Fit the logistic detector on rows `features` [n, k] with `labels` [n] (1 = dangerous); threshold on the same rows."""
    from sklearn.linear_model import LogisticRegression

    x, y = np.asarray(features, dtype=float), np.asarray(labels)
    if x.ndim != 2 or len(x) != len(y) or set(np.unique(y).tolist()) != {0, 1}:
        raise DataFormatError(
            f"a detector needs features [n, k] and n labels of both classes (1 = dangerous, 0 = not), got "
            f"{tuple(x.shape)} and labels {sorted(set(y.tolist()))}"
        )
    mean, scale = x.mean(0), x.std(0) + 1e-6
    clf = LogisticRegression(C=c, class_weight="balanced", max_iter=2000).fit((x - mean) / scale, y)
    probe = LogisticProbe(mean, scale, clf.coef_[0], float(clf.intercept_[0]))
    threshold = youden_threshold(probe.probability(x), y)
    return DriftDetector(
        tuple(names),
        torch.from_numpy(probe.coef).float(),
        probe.intercept,
        threshold,
        torch.from_numpy(probe.mean).float(),
        torch.from_numpy(probe.scale).float(),
        {"c": c, "n_train": len(y), "n_train_positive": int(y.sum()), **meta},
    )


def labelled_rows(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The checkpoints whose run is labelled harmful or benign, after step 0, with a perturbation type."""
    kept = [r for r in rows if r.get("label") in LABELS and r.get("perturbation") and r.get("step", 1) != 0]
    if len(kept) < len(rows):
        log.info(
            "detector: %d of %d checkpoints have no harmful/benign label or type and are left out",
            len(rows) - len(kept),
            len(rows),
        )
    return kept


def _rates(y: np.ndarray, s: np.ndarray, f: np.ndarray) -> tuple[float, float, float]:
    fnr = float(1 - f[y == 1].mean()) if (y == 1).any() else float("nan")
    fpr = float(f[y == 0].mean()) if (y == 0).any() else float("nan")
    auc = auroc(s[y == 1], s[y == 0]) if (y == 1).any() and (y == 0).any() else float("nan")
    return auc, fnr, fpr


def run_bootstrap(
    runs: Sequence[str], y: np.ndarray, s: np.ndarray, f: np.ndarray, n_boot: int, seed: int
) -> dict[str, tuple[float, float]]:
    """95% intervals of AUROC, FNR and FPR, resampling whole runs with replacement."""
    arr = np.asarray(runs, dtype=object)
    groups = [np.flatnonzero(arr == r) for r in dict.fromkeys(runs)]
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        idx = np.concatenate([groups[i] for i in rng.integers(0, len(groups), len(groups))])
        draws.append(_rates(y[idx], s[idx], f[idx]))
    d = np.asarray(draws, dtype=float).reshape(-1, 3)
    nan = (float("nan"), float("nan"))
    return {
        k: (percentile_interval(d[:, i]) if n_boot and not np.isnan(d[:, i]).all() else nan)
        for i, k in enumerate(("auroc", "fnr", "fpr"))
    }


@dataclass(frozen=True)
class DetectorEvaluation:
    """Leave-one-perturbation-type-out results for the monitor and each baseline, and the shipped detector."""

    table: list[dict[str, Any]]  # one row per feature set (TABLE_COLUMNS)
    folds: list[dict[str, Any]]  # one row per feature set x held-out type
    scores: list[dict[str, Any]]  # one row per feature set x held-out checkpoint
    detector: DriftDetector | None  # the monitor's features, fitted on every type
    meta: dict[str, Any] = field(default_factory=dict)

    def row(self, features: str) -> dict[str, Any]:
        return next(r for r in self.table if r["features"] == features)

    def save(self, directory: str | os.PathLike[str]) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_config(
            directory,
            EVAL_KIND,
            {"table": self.table, "folds": self.folds, "meta": self.meta, "threshold_rule": THRESHOLD_RULE},
        )
        write_csv(directory / "table.csv", self.table, TABLE_COLUMNS)
        write_csv(directory / "folds.csv", self.folds)
        write_csv(directory / "scores.csv", self.scores)
        if self.detector is not None:
            self.detector.save(directory / "detector")
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> DetectorEvaluation:
        from emscope.records import read_csv

        config = read_config(directory, EVAL_KIND, ("table", "folds"))
        detector = DriftDetector.load(Path(directory) / "detector") if (Path(directory) / "detector").is_dir() else None
        scores = read_csv(Path(directory) / "scores.csv") if (Path(directory) / "scores.csv").is_file() else []
        return cls(config["table"], config["folds"], list(scores), detector, config.get("meta", {}))


@dataclass(frozen=True)
class _Held:
    """One fold's held-out labels, scores, flags and runs."""

    y: np.ndarray
    s: np.ndarray
    f: np.ndarray
    runs: list[str]


def _fold(
    name: str,
    make: Any,
    rows: Sequence[Mapping[str, Any]],
    held: str,
    c: float,
    folds: list[dict[str, Any]],
    scores: list[dict[str, Any]],
) -> _Held | None:
    """Fit on every type but `held`, score `held`; append the fold's row and its scores (None: not fittable)."""
    train = [r for r in rows if r["perturbation"] != held]
    test = [r for r in rows if r["perturbation"] == held]
    trained_on = sorted({str(r["perturbation"]) for r in train})
    if held in trained_on:  # the protocol's one promise; never true by construction, checked anyway
        raise DataFormatError(f"fold {held!r} would train on its own held-out type")
    fold: dict[str, Any] = {"features": name, "held_out": held, "trained_on": " ".join(trained_on), "skipped": ""}
    y_train = np.asarray([LABELS[str(r["label"])] for r in train])
    if len(set(y_train.tolist())) < 2:
        folds.append({**fold, "skipped": "training types hold one label only"})
        return None
    x_train, x_test = make(train, test)
    det = fit_detector(x_train, y_train, [name] * x_train.shape[1], c=c)
    s = det.probabilities(x_test)
    f = s >= det.threshold
    y = np.asarray([LABELS[str(r["label"])] for r in test])
    _, fnr, fpr = _rates(y, s, f)
    fold.update(
        held_out_label="harmful" if y.all() else "benign" if not y.any() else "mixed",
        n_checkpoints=len(test),
        n_runs=len({r["run"] for r in test}),
        threshold=det.threshold,
        fnr=fnr,
        fpr=fpr,
        mean_score=float(s.mean()),
    )
    folds.append(fold)
    scores += [
        {"features": name, "held_out": held, "run": r["run"], "step": r["step"], "label": r["label"],
         "score": float(si), "flagged": bool(fi)}
        for r, si, fi in zip(test, s, f, strict=True)
    ]  # fmt: skip
    return _Held(y, s, f, [str(r["run"]) for r in test])


def evaluate_detector(
    rows: Sequence[Mapping[str, Any]],
    features: Sequence[str] = tuple(FEATURE_SETS),
    *,
    n_boot: int = 1000,
    seed: int = 0,
    c: float = DETECTOR_C,
) -> DetectorEvaluation:
    """Leave one perturbation type out, for each feature set of `features` (`emscope.monitor.baselines`).

    `rows` are checkpoint rows (`emscope.monitor.drift.checkpoint_rows`); see the module docstring.
    """
    feature_sets = {f: lookup(FEATURE_SETS, f, "feature set") for f in dict.fromkeys(features)}
    rows = labelled_rows(rows)
    types = sorted({str(r["perturbation"]) for r in rows})
    if len(types) < 2:
        raise DataFormatError(f"leave-one-type-out needs at least 2 perturbation types, got {types}")
    if {LABELS[str(r["label"])] for r in rows} != {0, 1}:
        raise DataFormatError("the detector needs harmful and benign runs; the rows hold one label only")
    table: list[dict[str, Any]] = []
    folds: list[dict[str, Any]] = []
    scores: list[dict[str, Any]] = []
    for name, make in feature_sets.items():
        note = ""
        held: list[_Held] = []
        try:
            for kind in types:
                got = _fold(name, make, rows, kind, c, folds, scores)
                if got is not None:
                    held.append(got)
        except FeatureUnavailable as e:
            note = f"not available: {e}"
        if not held:
            table.append({"features": name, "available": False, "note": note or "no fold could be fitted"})
            continue
        y, s, f = (np.concatenate([getattr(h, k) for h in held]) for k in ("y", "s", "f"))
        runs = [r for h in held for r in h.runs]
        auc, fnr, fpr = _rates(y, s, f)
        ci = run_bootstrap(runs, y, s, f, n_boot, seed)
        table.append(
            {
                "features": name,
                "available": True,
                "auroc": auc,
                "auroc_lo": ci["auroc"][0],
                "auroc_hi": ci["auroc"][1],
                "fnr": fnr,
                "fnr_lo": ci["fnr"][0],
                "fnr_hi": ci["fnr"][1],
                "fpr": fpr,
                "fpr_lo": ci["fpr"][0],
                "fpr_hi": ci["fpr"][1],
                "n_checkpoints": len(y),
                "n_harmful": int(y.sum()),
                "n_benign": int((1 - y).sum()),
                "n_runs": len(set(runs)),
                "n_folds": len(held),
                "note": "AUROC over the pooled held-out scores of all folds; FNR/FPR at each fold's training threshold",
            }
        )
    detector = None
    if MONITOR in feature_sets:
        x = np.stack([np.asarray(r["trait_drift"], dtype=float) for r in rows])
        y_all = np.asarray([LABELS[str(r["label"])] for r in rows])
        detector = fit_detector(
            x,
            y_all,
            tuple(rows[0]["names"]),
            c=c,
            trained_on=types,
            reads="mean trait drift since step 0 (projection units)",
        )
    meta = {
        "types": types,
        "n_checkpoints": len(rows),
        "n_runs": len({r["run"] for r in rows}),
        "n_boot": n_boot,
        "seed": seed,
        "c": c,
        "protocol": "leave one perturbation type out; CIs resample whole runs",
    }
    return DetectorEvaluation(table, folds, scores, detector, meta)
