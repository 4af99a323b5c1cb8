"""How well a 1-D score separates two classes, measured held-out, with bootstrap intervals.

All metrics take projections (scores) of the two classes, positive class expected higher:
- accuracy: the threshold is chosen on the *train* scores (the midpoint that maximises
  train accuracy) and applied unchanged to the held-out scores;
- AUROC: probability that a random positive scores above a random negative (ties count 1/2;
  `emscope.stats.auroc`);
- Cohen's d: mean difference over the pooled standard deviation.
Intervals are percentile bootstrap 95% intervals (`emscope.stats`) over the held-out rows, resampling each
class separately (the direction and threshold stay fixed: they capture test-set noise,
not refitting noise).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from emscope.stats import auroc, auroc_batched, percentile_interval, resample

ArrayLike = torch.Tensor | np.ndarray


def _np(x: ArrayLike) -> np.ndarray:
    return (x.detach().double().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=float)).ravel()


def best_threshold(pos: ArrayLike, neg: ArrayLike) -> float:
    """The threshold (midpoint between sorted scores) with the highest balanced accuracy on these scores."""
    p, n = _np(pos), _np(neg)
    values = np.unique(np.r_[p, n])
    candidates = np.r_[values[0] - 1.0, (values[:-1] + values[1:]) / 2, values[-1] + 1.0]
    acc = ((p[None, :] > candidates[:, None]).mean(1) + (n[None, :] <= candidates[:, None]).mean(1)) / 2
    return float(candidates[int(np.argmax(acc))])


def balanced_accuracy(pos: np.ndarray, neg: np.ndarray, threshold: float) -> np.ndarray:
    """Mean of the per-class accuracies of ``score > threshold``; works on [..., n] batches."""
    return ((pos > threshold).mean(-1) + (neg <= threshold).mean(-1)) / 2


def cohens_d(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """(mean pos - mean neg) / pooled standard deviation; works on [..., n] batches."""
    n1, n0 = pos.shape[-1], neg.shape[-1]
    v1 = pos.var(-1, ddof=1) if n1 > 1 else np.zeros(pos.shape[:-1])
    v0 = neg.var(-1, ddof=1) if n0 > 1 else np.zeros(neg.shape[:-1])
    pooled = np.sqrt(((n1 - 1) * v1 + (n0 - 1) * v0) / max(n1 + n0 - 2, 1))
    return (pos.mean(-1) - neg.mean(-1)) / np.maximum(pooled, 1e-12)


def _interval(samples: np.ndarray) -> list[float]:
    return list(percentile_interval(samples))


def separation_metrics(
    train_pos: ArrayLike,
    train_neg: ArrayLike,
    test_pos: ArrayLike,
    test_neg: ArrayLike,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Held-out accuracy (train threshold), AUROC and Cohen's d, each with a bootstrap 95% interval."""
    tp, tn = _np(test_pos), _np(test_neg)
    threshold = best_threshold(train_pos, train_neg)
    out: dict[str, Any] = {
        "threshold": threshold,
        "train_accuracy": float(balanced_accuracy(_np(train_pos), _np(train_neg), threshold)),
        "accuracy": float(balanced_accuracy(tp, tn, threshold)),
        "auroc": auroc(tp, tn),
        "cohens_d": float(cohens_d(tp, tn)),
        "n_test_pos": len(tp),
        "n_test_neg": len(tn),
        "n_boot": n_boot,
    }
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        bp, bn = resample(tp, n_boot, rng), resample(tn, n_boot, rng)
        out["accuracy_ci"] = _interval(balanced_accuracy(bp, bn, threshold))
        out["auroc_ci"] = _interval(auroc_batched(bp, bn))
        out["cohens_d_ci"] = _interval(cohens_d(bp, bn))
    return out
