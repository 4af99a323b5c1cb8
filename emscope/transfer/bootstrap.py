"""The donor/receiver matrix of a metric, its row and column means, and bootstrap intervals for both.

Every model reads the same corpus pairs and the same neutral transcripts, so one bootstrap replicate
resamples them once for all cells at once: the corpus train pairs (the native directions are
re-extracted, diff-in-means, on the resample), the corpus held-out pairs (AUROC) and the maps'
held-out neutral rows (R^2). The maps themselves stay fixed. Each replicate gives a whole matrix;
donor scores (row means, diagonal left out), receiver scores (column means) and asymmetries
(donor minus receiver score; per pair, ``M[a, b] - M[b, a]``) are computed on every replicate, and
their intervals are the 2.5 and 97.5 percentiles.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from emscope.directions.extract import train_test_split
from emscope.stats import auroc, percentile_interval
from emscope.transfer.maps import ActivationMap
from emscope.transfer.pair import cosine
from emscope.transfer.paired import ModelSide

BOOTSTRAP_METRICS = ("r2", "cosine", "auroc_mapped")


def _matrices(
    sides: Sequence[ModelSide],
    maps: Mapping[tuple[int, int], ActivationMap],
    train: np.ndarray,
    test: np.ndarray,
    map_rows: Mapping[tuple[int, int], np.ndarray],
    r2_parts: Mapping[tuple[int, int], tuple[np.ndarray, np.ndarray]],
) -> dict[str, np.ndarray]:
    """The metric matrices for one choice of corpus train/test rows and map held-out rows (diagonal NaN)."""
    n = len(sides)
    natives = [s.pos[train].double().mean(0) - s.neg[train].double().mean(0) for s in sides]
    out = {m: np.full((n, n), np.nan) for m in BOOTSTRAP_METRICS}
    for (d, r), m in maps.items():
        mapped = natives[d].float() @ m.matrix
        out["cosine"][d, r] = cosine(mapped, natives[r])
        unit = mapped / mapped.norm().clamp_min(1e-30)
        out["auroc_mapped"][d, r] = auroc((sides[r].pos[test] @ unit).numpy(), (sides[r].neg[test] @ unit).numpy())
        sse, sst = r2_parts[(d, r)]
        rows = map_rows[(d, r)]
        out["r2"][d, r] = 1.0 - sse[rows].sum() / sst[rows].sum()
    return out


def r2_contributions(side_x: ModelSide, side_y: ModelSide, m: ActivationMap) -> tuple[np.ndarray, np.ndarray]:
    """Per row of the whole neutral set: squared error of the map and squared distance from the held-out mean.

    Over the map's held-out rows, ``1 - sum(sse) / sum(sst)`` is its held-out R^2 (variance weighted); a
    bootstrap resamples rows and keeps the mean fixed, so the ratio stays an unbiased-in-spirit estimate
    instead of shrinking the total variance with every duplicated row.
    """
    x, y = side_x.neutral.double(), side_y.neutral.double()
    test = list(m.test_rows)
    sse = ((y - (x @ m.matrix.double() + m.intercept.double())) ** 2).sum(1)
    sst = ((y - y[test].mean(0)) ** 2).sum(1)
    return sse.numpy(), sst.numpy()


def scores(matrix: np.ndarray) -> dict[str, np.ndarray]:
    """Donor score (row mean), receiver score (column mean), their difference, and ``M - M^T``, diagonal left out."""
    off = matrix.copy()
    np.fill_diagonal(off, np.nan)
    with np.errstate(invalid="ignore"):
        donor, receiver = np.nanmean(off, axis=1), np.nanmean(off, axis=0)
    return {"donor": donor, "receiver": receiver, "asymmetry": donor - receiver, "pair_asymmetry": off - off.T}


def bootstrap_scores(
    sides: Sequence[ModelSide],
    maps: Mapping[tuple[int, int], ActivationMap],
    *,
    test_frac: float = 0.3,
    seed: int = 0,
    n_boot: int = 500,
) -> dict[str, Any]:
    """Per metric: the matrix, donor/receiver scores and asymmetries, each with a 95% bootstrap interval."""
    n_pairs = len(sides[0].pos)
    split = train_test_split(n_pairs, n_pairs, test_frac, seed)
    train, test = split.pos_train.numpy(), split.pos_test.numpy()
    rows = {k: np.asarray(m.test_rows) for k, m in maps.items()}
    parts = {(d, r): r2_contributions(sides[d], sides[r], m) for (d, r), m in maps.items()}
    point = _matrices(sides, maps, train, test, rows, parts)
    rng = np.random.default_rng(seed)
    reps: dict[str, list[dict[str, np.ndarray]]] = {m: [] for m in BOOTSTRAP_METRICS}
    for _ in range(n_boot):
        tr = train[rng.integers(0, len(train), len(train))]
        te = test[rng.integers(0, len(test), len(test))]
        mr = {k: v[rng.integers(0, len(v), len(v))] for k, v in rows.items()}
        for metric, mat in _matrices(sides, maps, tr, te, mr, parts).items():
            reps[metric].append({"matrix": mat, **scores(mat)})
    out: dict[str, Any] = {}
    for metric in BOOTSTRAP_METRICS:
        est = {"matrix": point[metric], **scores(point[metric])}
        out[metric] = {
            name: _with_interval(value, np.stack([r[name] for r in reps[metric]])) for name, value in est.items()
        }
    out["n_boot"] = n_boot
    return out


def _with_interval(value: np.ndarray, samples: np.ndarray) -> dict[str, Any]:
    """{value, ci_low, ci_high} as nested lists (NaN where the estimate is undefined, e.g. the diagonal)."""
    lo, hi = np.full(value.shape, np.nan), np.full(value.shape, np.nan)
    for idx in np.ndindex(value.shape):
        column = samples[(slice(None), *idx)]
        if np.isfinite(value[idx]) and np.isfinite(column).any():
            lo[idx], hi[idx] = percentile_interval(column)
    return {"value": value.tolist(), "ci_low": lo.tolist(), "ci_high": hi.tolist()}
