"""Does a latent's change predict emergent misalignment across organisms?

Given, per organism, the top latent's activation change (from `latent_diff`), its measured
EM rate and the kind of perturbation that made it: the Spearman correlation of change and
EM rate with a 95% bootstrap interval over organisms, and a leave-one-perturbation-type-out
AUROC: "misaligned" means an EM rate above `threshold`; for each type, the sign of the
relation (do misaligned organisms change more or less?) is read on the other types'
organisms only, and that type's organisms are scored by the signed change; the held-out
scores of all folds are pooled into one AUROC (the score is one number, so the sign is all
there is to fit).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from emscope.errors import DataFormatError
from emscope.stats import auroc, percentile_interval


@dataclass(frozen=True)
class Prediction:
    spearman: float
    spearman_ci: tuple[float, float]
    n_organisms: int
    lopo_auroc: float | None  # None when the held-out folds do not hold both classes
    n_types: int
    threshold: float


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


def _leave_one_type_out(x: np.ndarray, label: np.ndarray, types: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Held-out scores: per type, the change signed by the direction the other types' organisms show."""
    scores, labels = [], []
    for t in sorted(set(types)):
        test, train = types == t, types != t
        pos, neg = x[train & label], x[train & ~label]
        if len(pos) == 0 or len(neg) == 0:
            continue
        sign = 1.0 if pos.mean() >= neg.mean() else -1.0
        scores += list(sign * x[test])
        labels += list(label[test])
    return np.asarray(scores, float), np.asarray(labels, bool)


def predict_em(
    change: Sequence[float],
    em_rate: Sequence[float],
    perturbation: Sequence[str],
    threshold: float = 0.05,
    n_boot: int = 2000,
    seed: int = 0,
) -> Prediction:
    """Spearman (with a bootstrap CI over organisms) and leave-one-perturbation-type-out AUROC."""
    x, y = np.asarray(change, float), np.asarray(em_rate, float)
    types = np.asarray(perturbation)
    if not len(x) == len(y) == len(types) or len(x) < 4:
        raise DataFormatError(f"need at least 4 organisms with a change, an EM rate and a type each, got {len(x)}")
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        i = rng.integers(0, len(x), len(x))
        if len(set(x[i])) > 1 and len(set(y[i])) > 1:
            boots.append(_spearman(x[i], y[i]))
    scores, labels = _leave_one_type_out(x, y > threshold, types)
    pos, neg = scores[labels], scores[~labels]
    return Prediction(
        spearman=_spearman(x, y),
        spearman_ci=percentile_interval(np.asarray(boots)) if boots else (float("nan"), float("nan")),
        n_organisms=len(x),
        lopo_auroc=auroc(pos, neg) if len(pos) and len(neg) else None,
        n_types=len(set(types)),
        threshold=threshold,
    )
