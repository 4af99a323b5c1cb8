"""The held-out-domain protocol every monitor is measured with, and its data-efficiency curves.

For each domain d: the monitor is fitted on items of the other domains only and scored on
d's items; AUROC (misaligned vs aligned) per held-out domain. A curve repeats this with
``n_train`` training items drawn as whole pairs (a pair's two answers are never split) from the
other domains, for n_train in 8, 16, 32, ... and all, `repeats` draws each (one at "all":
the draw is the whole pool). The summary is the mean over held-out domains (each domain's
repeats averaged first) with a 95% bootstrap interval over domains. Features are computed once
(`Monitor.features`) and every fit reuses them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from emscope.errors import ConfigError
from emscope.probes.items import MonitorItem, labels
from emscope.probes.registry import Monitor
from emscope.stats import auroc, bootstrap_mean

ALL = "all"


def default_sizes(n_pool: int, start: int = 8) -> list[int | str]:
    """8, 16, 32, ... below the pool size, then "all"."""
    sizes: list[int | str] = []
    n = start
    while n < n_pool:
        sizes.append(n)
        n *= 2
    return [*sizes, ALL]


@dataclass(frozen=True)
class CurvePoint:
    """One (n_train, held-out domain, repeat) fit and its held-out AUROC."""

    n_train: int | str
    domain: str
    repeat: int
    n_used: int
    auroc: float
    layer: int | None


@dataclass
class CurveResult:
    """All points of one monitor's curve, with per-style AUROC at "all" (per held-out domain, then averaged) and the source's cost."""

    monitor: str
    points: list[CurvePoint]
    by_style: dict[str, float] = field(default_factory=dict)
    cost: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> list[dict[str, Any]]:
        """Per n_train: mean held-out-domain AUROC and its 95% interval over domains."""
        out = []
        for n in dict.fromkeys(p.n_train for p in self.points):
            pts = [p for p in self.points if p.n_train == n]
            per_domain: dict[str, list[float]] = {}
            for p in pts:
                per_domain.setdefault(p.domain, []).append(p.auroc)
            stats = bootstrap_mean(np.array([np.mean(v) for v in per_domain.values()]))
            out.append(
                {
                    "monitor": self.monitor,
                    "n_train": n,
                    "n_used": int(np.mean([p.n_used for p in pts])),
                    "auroc": stats["value"],
                    "ci_low": stats["ci_low"],
                    "ci_high": stats["ci_high"],
                    "n_domains": stats["n"],
                    "n_fits": len(pts),
                }
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "monitor": self.monitor,
            "summary": self.summary(),
            "by_style": self.by_style,
            "cost": self.cost,
            "points": [p.__dict__ for p in self.points],
        }


def _pairs(items: Sequence[MonitorItem], idx: Sequence[int]) -> list[list[int]]:
    """`idx` grouped by pair (items without a group are pairs of one)."""
    groups: dict[str, list[int]] = {}
    for i in idx:
        groups.setdefault(items[i].group or f"#{i}", []).append(i)
    return list(groups.values())


def sample_pairs(items: Sequence[MonitorItem], pool: Sequence[int], n: int, rng: np.random.Generator) -> list[int]:
    """About `n` indices from `pool`, drawn as whole pairs (both classes present when the pool has both)."""
    pairs = _pairs(items, pool)
    order = rng.permutation(len(pairs))
    chosen: list[int] = []
    for k in order:
        if len(chosen) >= n:
            break
        chosen.extend(pairs[k])
    return chosen


def _by_style(items: Sequence[MonitorItem], test: list[int], s: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """AUROC within each style among the held-out items (a style needs both classes)."""
    out = {}
    for style in sorted({items[i].style for i in test}):
        m = np.array([items[i].style == style for i in test])
        if len(set(y[test][m].tolist())) == 2:
            out[style] = auroc(s[m & (y[test] == 1)], s[m & (y[test] == 0)])
    return out


def heldout_curve(
    monitor: Monitor,
    items: Sequence[MonitorItem],
    sizes: Sequence[int | str] | None = None,
    repeats: int = 5,
    seed: int = 0,
    domains: Sequence[str] | None = None,
    x: np.ndarray | None = None,
) -> CurveResult:
    """The monitor's held-out-domain AUROC at each training size (see the module docstring).

    `domains` limits which domains are held out in turn (default: all); training never sees
    the held-out domain's items. `x` are the monitor's features for `items` when already computed.
    """
    y = labels(items)
    all_domains = sorted({it.domain for it in items})
    held = list(domains) if domains is not None else all_domains
    if len(all_domains) < 2:
        raise ConfigError(f"the held-out-domain protocol needs items of at least 2 domains, got {all_domains}")
    x = monitor.features(items) if x is None else x
    points: list[CurvePoint] = []
    style_aurocs: dict[str, list[float]] = {}
    for d_i, d in enumerate(held):
        test = [i for i, it in enumerate(items) if it.domain == d]
        pool = [i for i, it in enumerate(items) if it.domain != d]
        if len(set(y[test].tolist())) < 2:
            continue
        ns = sizes if sizes is not None else default_sizes(len(pool))
        for n in ns:
            n_reps = 1 if (n == ALL or not monitor.trainable) else repeats
            for r in range(n_reps):
                rng = np.random.default_rng([seed, d_i, 0 if n == ALL else int(n), r])
                train = list(pool) if n == ALL else sample_pairs(items, pool, int(n), rng)
                if len(set(y[train].tolist())) < 2:
                    continue
                monitor.fit_features(x[train], y[train], [items[i] for i in train])
                s = monitor.score_features(x[test])
                points.append(
                    CurvePoint(n, d, r, len(train), auroc(s[y[test] == 1], s[y[test] == 0]), monitor.chosen_layer)
                )
                if n == ALL:
                    for style, a in _by_style(items, test, s, y).items():
                        style_aurocs.setdefault(style, []).append(a)
    by_style = {k: float(np.mean(v)) for k, v in sorted(style_aurocs.items())}
    cost = monitor.cost.to_dict() if monitor.cost is not None else {}
    return CurveResult(monitor.name, points, by_style, cost)
