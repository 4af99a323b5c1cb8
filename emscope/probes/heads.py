"""Linear heads on fixed features: difference-in-means, and logistic regression with a CV-chosen C.

Labels: 1 = the positive class (misaligned, for monitors), 0 = negative; every head's
`score` is higher for the positive class. The logistic head is `emscope.stats.fit_logistic_probe`
(features standardised on the training rows, L2, lbfgs); its inverse strength C is chosen
from `DEFAULT_CS` by K-fold AUROC on the training rows only, with folds split by `groups`
(a contrast pair's two answers stay in one fold, so a pair cannot leak across the split).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from emscope.errors import DataFormatError
from emscope.stats import LogisticProbe, auroc, fit_logistic_probe

DEFAULT_CS = (0.001, 0.01, 0.1, 1.0)


@dataclass(frozen=True)
class LinearHead:
    """``score(x) = x @ weight + bias`` (a logistic head also keeps its `probe`, which gives the same order)."""

    weight: np.ndarray  # [D], in raw feature space
    bias: float
    method: str  # "diff_in_means" or "logistic"
    c: float | None = None  # the chosen inverse regularisation strength (logistic)
    cv: dict[float, float] = field(default_factory=dict)  # C -> cross-validated AUROC
    probe: LogisticProbe | None = None

    def score(self, x: np.ndarray) -> np.ndarray:
        """Higher = more positive, for rows of `x` [N, D]."""
        if self.probe is not None:
            return np.asarray(self.probe.logit(np.asarray(x, dtype=np.float64)))
        return np.asarray(np.asarray(x, dtype=np.float64) @ self.weight + self.bias)


def _check(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y).astype(int)
    if x.ndim != 2 or len(x) != len(y):
        raise DataFormatError(f"a linear head needs features [N, D] and N labels, got {tuple(x.shape)} and {len(y)}")
    if set(np.unique(y).tolist()) != {0, 1}:
        raise DataFormatError(f"a linear head needs labels of both classes 0 and 1, got {sorted(set(y.tolist()))}")
    return x, y


def fit_diff_in_means(x: np.ndarray, y: np.ndarray) -> LinearHead:
    """The direction mean(positive) - mean(negative); the bias puts the midpoint of the class means at 0."""
    x, y = _check(x, y)
    pos, neg = x[y == 1].mean(0), x[y == 0].mean(0)
    w = pos - neg
    return LinearHead(w, float(-(pos + neg) @ w / 2), "diff_in_means")


def cv_folds(y: np.ndarray, groups: Sequence[str] | None, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) index splits: grouped when `groups` is given, else stratified; each test fold has both classes."""
    from sklearn.model_selection import GroupKFold, StratifiedKFold

    if groups is not None:
        g = np.asarray(groups)
        k = min(folds, len(np.unique(g)))
        splits = GroupKFold(k, shuffle=True, random_state=seed).split(y, y, g) if k >= 2 else []
    else:
        k = min(folds, int(np.bincount(y).min()))
        splits = StratifiedKFold(k, shuffle=True, random_state=seed).split(y, y) if k >= 2 else []
    return [(tr, te) for tr, te in splits if len(np.unique(y[te])) == 2 and len(np.unique(y[tr])) == 2]


def cv_auroc(x: np.ndarray, y: np.ndarray, c: float, splits: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Pooled out-of-fold AUROC of the logistic probe at `c` (NaN without usable folds)."""
    if not splits:
        return float("nan")
    scores, seen = np.zeros(len(y)), np.zeros(len(y), dtype=bool)
    for tr, te in splits:
        scores[te] = fit_logistic_probe(x[tr], y[tr], c).logit(x[te])
        seen[te] = True
    return auroc(scores[seen & (y == 1)], scores[seen & (y == 0)])


def fit_logistic_cv(
    x: np.ndarray,
    y: np.ndarray,
    groups: Sequence[str] | None = None,
    cs: Sequence[float] = DEFAULT_CS,
    folds: int = 4,
    seed: int = 0,
) -> LinearHead:
    """Standardised L2 logistic regression, C chosen by `folds`-fold AUROC on these rows (ties: the smaller C).

    With too few rows for two usable folds the middle of `cs` is used. The final probe is
    fitted on all rows at the chosen C.
    """
    x, y = _check(x, y)
    splits = cv_folds(y, groups, folds, seed) if len(cs) > 1 else []
    cv = {float(c): cv_auroc(x, y, c, splits) for c in cs} if splits else {}
    usable = {c: v for c, v in cv.items() if not np.isnan(v)}
    c = max(sorted(usable), key=lambda k: usable[k]) if usable else float(list(cs)[len(cs) // 2])
    probe = fit_logistic_probe(x, y, c)
    return LinearHead(probe.weight, float(probe.intercept - probe.mean @ probe.weight), "logistic", c, cv, probe)


HEADS = {
    "diff_in_means": lambda x, y, groups: fit_diff_in_means(x, y),
    "logistic": lambda x, y, groups: fit_logistic_cv(x, y, groups, folds=3),
}
