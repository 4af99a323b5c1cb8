"""Statistics shared by every stage: AUROC, bootstrap intervals, the logistic probe.

One implementation of each, so a number called "AUROC" or "probe" means the same thing in
every result emscope writes.

- `auroc`: P(a positive scores above a negative), ties counting 1/2 (the Mann-Whitney U
  statistic over ``n_pos * n_neg``; equal to scikit-learn's ``roc_auc_score``). Computed from
  average ranks so that a whole bootstrap ([..., n] batches) is one vectorised call.
  Policy: it is undefined without at least one score of each class, and a NaN score has no
  rank; both raise `DataFormatError` rather than return NaN (a caller whose report can say
  "not measurable" checks for both classes itself, as the judge agreement report does).
- `resample`, `percentile_interval`, `bootstrap_mean`: percentile bootstrap 95% intervals.
- `fit_logistic_probe`: features standardised on the training rows (mean, std + 1e-6), then an
  L2 logistic regression (scikit-learn, lbfgs) with inverse regularisation strength ``c``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from emscope.errors import DataFormatError

CI_LEVEL = 0.95


def auroc_batched(pos: Any, neg: Any) -> np.ndarray:
    """AUROC of positive scores ``pos`` [..., n_pos] against negative scores ``neg`` [..., n_neg] -> [...].

    Leading dimensions are batches (e.g. bootstrap resamples) and must match.
    Raises `DataFormatError` when a class has no score or a score is NaN (see the module policy).
    """
    from scipy.stats import rankdata

    p, n = np.asarray(pos, dtype=float), np.asarray(neg, dtype=float)
    n_pos, n_neg = p.shape[-1], n.shape[-1]
    if n_pos == 0 or n_neg == 0:
        raise DataFormatError(
            f"AUROC needs at least one score of each class, got {n_pos} positive and {n_neg} negative"
        )
    if np.isnan(p).any() or np.isnan(n).any():
        raise DataFormatError("AUROC got NaN scores; leave unscored rows out first")
    ranks = rankdata(np.concatenate([p, n], axis=-1), axis=-1)  # ties get their average rank
    u = ranks[..., :n_pos].sum(-1) - n_pos * (n_pos + 1) / 2
    return np.asarray(u / (n_pos * n_neg))


def auroc(pos: Any, neg: Any) -> float:
    """AUROC of 1-D positive scores against 1-D negative scores (0.5 = chance, 1 = every positive higher)."""
    return float(auroc_batched(np.ravel(pos), np.ravel(neg)))


def resample(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``n_boot`` bootstrap resamples of the rows of 1-D `values` -> [n_boot, len(values)]."""
    return values[rng.integers(0, len(values), (n_boot, len(values)))]


def percentile_interval(samples: np.ndarray, level: float = CI_LEVEL) -> tuple[float, float]:
    """The central `level` percentile interval of bootstrap `samples` (NaN samples left out)."""
    tail = round(50.0 * (1.0 - level), 10)  # 2.5 exactly for 0.95 (not 2.500000000000002)
    lo, hi = np.nanpercentile(samples, [tail, 100.0 - tail])
    return float(lo), float(hi)


def bootstrap_mean(values: np.ndarray, n_boot: int = 2000, seed: int = 0) -> dict[str, float | int | None]:
    """Mean of the non-NaN `values` with a 95% percentile-bootstrap interval (all None when none is left)."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return {"value": None, "ci_low": None, "ci_high": None, "n": 0}
    lo, hi = percentile_interval(resample(v, n_boot, np.random.default_rng(seed)).mean(1))
    return {"value": float(v.mean()), "ci_low": lo, "ci_high": hi, "n": int(len(v))}


@dataclass(frozen=True)
class LogisticProbe:
    """A logistic regression on standardised features: ``logit(x) = ((x - mean) / scale) @ coef + intercept``."""

    mean: np.ndarray  # [D] training-row mean
    scale: np.ndarray  # [D] training-row standard deviation + 1e-6
    coef: np.ndarray  # [D] weights on the standardised features
    intercept: float

    def logit(self, x: np.ndarray) -> np.ndarray:
        """Log-odds of the positive class for rows of `x` [..., D]."""
        return np.asarray(((x - self.mean) / self.scale) @ self.coef + self.intercept)

    def probability(self, x: np.ndarray) -> np.ndarray:
        """P(positive class) for rows of `x` [..., D]."""
        return np.asarray(1.0 / (1.0 + np.exp(-self.logit(x))))

    @property
    def weight(self) -> np.ndarray:
        """The probe's direction in the raw feature space: ``logit(x) = x @ weight + constant``."""
        return np.asarray(self.coef / self.scale)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """``{"mean", "scale", "coef", "intercept" ([1])}``: the arrays a saved probe holds."""
        return {"mean": self.mean, "scale": self.scale, "coef": self.coef, "intercept": np.atleast_1d(self.intercept)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> LogisticProbe:
        """The probe `to_arrays` wrote."""
        return cls(arrays["mean"], arrays["scale"], arrays["coef"], float(np.ravel(arrays["intercept"])[0]))


def fit_logistic_probe(x: np.ndarray, y: np.ndarray, c: float) -> LogisticProbe:
    """Fit a `LogisticProbe` on rows `x` [N, D] with labels `y` [N] (1 = positive, 0 = negative).

    `c` is scikit-learn's inverse L2 strength on the *standardised* weights (smaller = more
    regularised); standardising first makes it mean the same at every layer and model, and
    keeps lbfgs well conditioned on residual streams whose few outlier dimensions are
    hundreds of times larger than the rest.
    """
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(y)
    if x.ndim != 2 or len(x) != len(y):
        raise DataFormatError(f"a probe needs features [N, D] and N labels, got {tuple(x.shape)} and {len(y)}")
    if len(np.unique(y)) != 2:
        raise DataFormatError(
            f"a probe needs examples of two classes (1 = positive, 0 = negative), got labels {sorted(set(y.tolist()))}"
        )
    mean, scale = x.mean(0), x.std(0) + 1e-6
    clf = LogisticRegression(C=c, max_iter=2000).fit((x - mean) / scale, y)
    return LogisticProbe(mean, scale, clf.coef_[0], float(clf.intercept_[0]))
