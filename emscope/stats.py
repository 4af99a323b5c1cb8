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
- `clustered_mean`, `paired_difference`: the same intervals resampling clusters (questions) rather than
  rows: answers to one question share its prompt and are not independent, so an interval over answers
  is too narrow. The point estimate is the plain mean over rows (every answer weighs the same); the
  bootstrap draws whole clusters with replacement and recomputes that pooled mean.
- `fit_logistic_probe`: features standardised on the training rows (mean, std + 1e-6), then an
  L2 logistic regression (scikit-learn, lbfgs) with inverse regularisation strength ``c``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Hashable, Sequence
from dataclasses import asdict, dataclass
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


def cluster_bootstrap(values: Any, clusters: Sequence[Hashable], n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """``n_boot`` bootstrap means of the non-NaN `values`, drawing whole clusters with replacement -> [n_boot].

    Each resample draws as many clusters as there are (those with at least one non-NaN value) and
    takes the mean over all their rows (a ratio of sums, so clusters of different sizes weigh by size).
    """
    v = np.asarray(values, dtype=float)
    if len(clusters) != len(v):
        raise DataFormatError(f"got {len(v)} values but {len(clusters)} cluster labels")
    keep = ~np.isnan(v)
    if not keep.any():
        raise DataFormatError("a clustered bootstrap needs at least one non-NaN value")
    _, ids = np.unique(np.array([str(c) for c, k in zip(clusters, keep, strict=True) if k]), return_inverse=True)
    sums = np.bincount(ids, weights=v[keep])
    counts = np.bincount(ids).astype(float)
    draw = np.random.default_rng(seed).integers(0, len(sums), (n_boot, len(sums)))
    return np.asarray(sums[draw].sum(1) / counts[draw].sum(1))


def clustered_mean(
    values: Any, clusters: Sequence[Hashable], n_boot: int = 2000, seed: int = 0
) -> dict[str, float | int | None]:
    """Mean of the non-NaN `values` with a 95% interval that resamples `clusters` (e.g. question ids).

    Same keys as `bootstrap_mean` plus ``n_clusters``; all None (and n 0) when no value is left, and
    the interval None with a single cluster (resampling one cluster says nothing about the spread).
    """
    v = np.asarray(values, dtype=float)
    n = int((~np.isnan(v)).sum())
    if n == 0:
        return {"value": None, "ci_low": None, "ci_high": None, "n": 0, "n_clusters": 0}
    n_clusters = len({str(c) for c, x in zip(clusters, v, strict=True) if not math.isnan(x)})
    lo, hi = percentile_interval(cluster_bootstrap(v, clusters, n_boot, seed)) if n_clusters > 1 else (None, None)
    return {"value": float(np.nanmean(v)), "ci_low": lo, "ci_high": hi, "n": n, "n_clusters": n_clusters}


def paired_mean_difference_interval(
    before: Any, after: Any, n_boot: int = 2000, seed: int = 0
) -> tuple[float, float] | tuple[None, None]:
    """95% interval of ``nanmean(after) - nanmean(before)`` resampling the paired items (e.g. prompts).

    `before` and `after` hold one value per item, in the same order (NaN: not measured on that
    side). (None, None) with fewer than 2 items: an interval over one item says nothing.
    """
    b, a = np.asarray(before, dtype=float), np.asarray(after, dtype=float)
    if b.shape != a.shape or b.ndim != 1:
        raise DataFormatError(f"paired values need two 1-D arrays of one length, got {b.shape} and {a.shape}")
    if len(b) < 2:
        return None, None
    idx = np.random.default_rng(seed).integers(0, len(b), (n_boot, len(b)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample of only NaNs on one side: left out
        diffs = np.nanmean(a[idx], axis=1) - np.nanmean(b[idx], axis=1)
    if np.isnan(diffs).all():
        return None, None
    return percentile_interval(diffs)


PAIR_KEYS = ("question_id", "paraphrase_index", "sample_index")  # one answer of an evaluation (responses/judgments)
CLUSTERS = {"question": "question_id", "answer": None}  # cluster name -> the row field that names a cluster


@dataclass(frozen=True)
class PairedDifference:
    """``mean(b) - mean(a)`` over answers matched between two evaluations, with a clustered 95% interval."""

    value: float | None  # mean_b - mean_a over the pairs scored in both; None when no pair is
    ci_low: float | None
    ci_high: float | None
    mean_a: float | None
    mean_b: float | None
    n_pairs: int  # matched pairs with a value on both sides (the ones the numbers rest on)
    n_clusters: int  # clusters among those pairs
    n_matched: int  # rows matched by key, scored or not
    n_unmatched_a: int  # rows of a without a partner in b
    n_unmatched_b: int
    cluster: str  # "question", "answer" or the row field used

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval lies entirely on one side of 0 (False when undefined)."""
        return self.ci_low is not None and self.ci_high is not None and (self.ci_low > 0 or self.ci_high < 0)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "excludes_zero": self.excludes_zero}


def _indicator_value(indicator: Callable[[dict[str, Any]], Any] | str, row: dict[str, Any]) -> float:
    x = row.get(indicator) if isinstance(indicator, str) else indicator(row)
    return math.nan if x is None else float(x)


def _index(rows: Sequence[dict[str, Any]], keys: Sequence[str], side: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for i, r in enumerate(rows):
        missing = [k for k in keys if k not in r]
        if missing:
            raise DataFormatError(
                f"row {i} of {side} lacks {', '.join(map(repr, missing))}: paired rows need {', '.join(keys)} "
                "(as in an evaluation's judgments.jsonl)"
            )
        key = tuple(r[k] for k in keys)
        if key in out:
            raise DataFormatError(
                f"{side} holds two rows for {dict(zip(keys, key, strict=True))}: pairs must be unique"
            )
        out[key] = r
    return out


def paired_difference(
    a_rows: Sequence[dict[str, Any]],
    b_rows: Sequence[dict[str, Any]],
    indicator: Callable[[dict[str, Any]], Any] | str,
    cluster: str = "question",
    n_boot: int = 2000,
    seed: int = 0,
    keys: Sequence[str] = PAIR_KEYS,
) -> PairedDifference:
    """The paired difference ``mean(b) - mean(a)`` of `indicator` over answers present in both evaluations.

    Rows are matched by `keys` (question, paraphrase and sample index: the same prompt and sample
    seed when both runs used the same seed). `indicator` maps a row to a number (a 0/1 flag or a
    score), or names the row field to read; NaN or None means unscored, and such a pair is dropped
    from both sides. The interval resamples `cluster`s ("question": the row's question id;
    "answer": each pair alone; or any row field), so answers to one question move together; with
    a single cluster the interval is None (one cluster resampled has no spread to show).
    Raises `DataFormatError` when a row lacks a key, a key repeats, or no row matches.
    """
    field = CLUSTERS.get(cluster, cluster)
    ia, ib = _index(a_rows, keys, "a"), _index(b_rows, keys, "b")
    common = [k for k in ia if k in ib]
    if not common:
        raise DataFormatError(
            f"no answer of a ({len(ia)} rows) matches one of b ({len(ib)} rows) by {', '.join(keys)}: "
            "compare evaluations of the same questions, samples and seed"
        )
    if field is not None and any(field not in ia[k] for k in common):
        raise DataFormatError(f"cluster={cluster!r} needs the field {field!r} in every row")
    xa = np.array([_indicator_value(indicator, ia[k]) for k in common])
    xb = np.array([_indicator_value(indicator, ib[k]) for k in common])
    both = ~np.isnan(xa) & ~np.isnan(xb)
    labels = [ia[k][field] if field is not None else i for i, k in enumerate(common)]
    kept = [c for c, ok in zip(labels, both, strict=True) if ok]
    counts = {"n_pairs": int(both.sum()), "n_clusters": len({str(c) for c in kept}), "n_matched": len(common)}
    unmatched = {"n_unmatched_a": len(ia) - len(common), "n_unmatched_b": len(ib) - len(common)}
    if not both.any():
        return PairedDifference(None, None, None, None, None, **counts, **unmatched, cluster=cluster)
    d = xb[both] - xa[both]
    lo, hi = percentile_interval(cluster_bootstrap(d, kept, n_boot, seed)) if counts["n_clusters"] > 1 else (None, None)
    return PairedDifference(
        float(d.mean()), lo, hi, float(xa[both].mean()), float(xb[both].mean()), **counts, **unmatched, cluster=cluster
    )


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
