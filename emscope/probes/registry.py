"""One registry of monitors: each reads a feature source and puts a head on it; all have `fit`, `score`, `cost`.

A `Monitor` is a feature source (a forward pass, cached in a `FeatureStore`), the array it
reads (``mean``, ``last``, ``max``, ``p_yes``), and a head:

- ``diff_in_means`` / ``logistic``: linear heads (`emscope.probes.heads`); on features with
  several candidate layers the layer is chosen on the training rows only, by the
  cross-validated AUROC of the difference-in-means head (closed form, so choosing costs no
  solver runs), with inner folds by domain when the rows span at least three domains, else
  by pair;
- ``none``: the array is the score itself (zero-shot P(yes), a fixed judge), `fit` does nothing.

Scores are higher for misaligned answers. `MONITORS` holds the arms emscope ships below the
evaluation layer; `emscope.evaluation.monitors` adds the offline judge's probe.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from emscope.errors import ConfigError, lookup
from emscope.models.loading import LoadedModel
from emscope.probes.heads import HEADS, LinearHead, cv_folds, fit_diff_in_means
from emscope.probes.items import MonitorItem, labels
from emscope.probes.sources import Cost, FeatureSource, FeatureStore, PromptedReading, RawActivations, SaeMaxPool

NO_SAE = (
    "the SAE max-pool monitor needs an SAE: train one with `emscope sae train` "
    "and pass it (CLI: --sae DIR; Python: MonitorContext(sae=emscope.sae.load_sae(DIR)))"
)


@dataclass
class MonitorContext:
    """What monitors are built from: the monitored model, candidate layers, a feature store, an SAE if any."""

    lm: LoadedModel | None = None
    layers: Sequence[int] | None = None
    store: FeatureStore = field(default_factory=FeatureStore)
    sae: Any = None
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. a judge, for arms above this layer
    _sources: dict[str, FeatureSource] = field(default_factory=dict)

    def source(self, kind: str, make: Callable[[], FeatureSource]) -> FeatureSource:
        """One source instance per kind, shared by every monitor built from this context."""
        if kind not in self._sources:
            self._sources[kind] = make()
        return self._sources[kind]

    def model(self) -> LoadedModel:
        if self.lm is None:
            raise ConfigError("this monitor reads the monitored model's activations: give MonitorContext(lm=...)")
        return self.lm


class Monitor:
    """A feature source, the array it reads, and a head. `fit(items)` then `score(items)` (higher = misaligned)."""

    def __init__(
        self,
        name: str,
        source: FeatureSource,
        feature: str,
        head: str,
        store: FeatureStore,
        layer: int | None = None,
        sign: float = 1.0,
    ) -> None:
        if head != "none":
            lookup(HEADS, head, "head")
        self.name, self.source, self.feature, self.head_kind = name, source, feature, head
        self.store, self.layer, self.sign = store, layer, sign
        self.head: LinearHead | None = None
        self.layer_index: int | None = None
        self.layer_cv: dict[int, float] = {}

    @property
    def trainable(self) -> bool:
        return self.head_kind != "none"

    def features(self, items: Sequence[MonitorItem]) -> np.ndarray:
        """The array this monitor reads, for `items` (computed once per item and source, then cached)."""
        return self.store.get(self.source, items)[self.feature]

    @property
    def cost(self) -> Cost | None:
        """Measured cost per item of the source's forward pass (None before any item was read)."""
        return self.store.costs.get(self.source.name)

    def fit(self, items: Sequence[MonitorItem]) -> Monitor:
        if self.trainable:
            self.fit_features(self.features(items), labels(items), items)
        return self

    def score(self, items: Sequence[MonitorItem]) -> np.ndarray:
        return self.score_features(self.features(items))

    def fit_features(self, x: np.ndarray, y: np.ndarray, items: Sequence[MonitorItem]) -> Monitor:
        """Fit the head on precomputed features `x` ([N] / [N, L, D]) of `items` with labels `y`."""
        if not self.trainable:
            return self
        groups = [it.group or str(i) for i, it in enumerate(items)]
        self.layer_index = self._choose_layer(x, y, items, groups)
        rows = x[:, self.layer_index]
        fit = HEADS[self.head_kind]
        self.head = fit(rows, y, groups)
        return self

    def _choose_layer(self, x: np.ndarray, y: np.ndarray, items: Sequence[MonitorItem], groups: list[str]) -> int:
        layers = getattr(self.source, "layers", [0])
        if x.shape[1] == 1:
            return 0
        if self.layer is not None:
            return list(layers).index(self.layer)
        domains = [it.domain for it in items]
        by = domains if len(set(domains)) >= 3 else groups
        splits = cv_folds(y, by, folds=4, seed=0)
        res: dict[int, float] = {}
        for li in range(x.shape[1]):  # the closed-form head ranks layers for both heads: one fit, no solver
            res[li] = _dim_cv(x[:, li], y, splits)
        self.layer_cv = {int(layers[li]): v for li, v in res.items()}
        usable = {li: v for li, v in res.items() if not np.isnan(v)}
        return max(usable, key=lambda k: usable[k]) if usable else x.shape[1] // 2

    @property
    def chosen_layer(self) -> int | None:
        layers = getattr(self.source, "layers", None)
        return None if layers is None or self.layer_index is None else int(layers[self.layer_index])

    def score_features(self, x: np.ndarray) -> np.ndarray:
        if not self.trainable:
            return self.sign * np.asarray(x, dtype=float).reshape(len(x))
        if self.head is None or self.layer_index is None:
            raise ConfigError(f"monitor {self.name!r} is not fitted: call fit(items) first")
        return self.head.score(x[:, self.layer_index])


def _dim_cv(x: np.ndarray, y: np.ndarray, splits: list[tuple[np.ndarray, np.ndarray]]) -> float:
    if not splits:
        return float("nan")
    from emscope.stats import auroc

    scores, seen = np.zeros(len(y)), np.zeros(len(y), dtype=bool)
    for tr, te in splits:
        scores[te] = fit_diff_in_means(x[tr], y[tr]).score(x[te])
        seen[te] = True
    return auroc(scores[seen & (y == 1)], scores[seen & (y == 0)])


@dataclass(frozen=True)
class MonitorSpec:
    """A registered monitor: its arm (the family it belongs to), a one-line description, and a builder."""

    arm: str
    description: str
    build: Callable[[str, MonitorContext], Monitor]


def _raw(pool: str, head: str) -> Callable[[str, MonitorContext], Monitor]:
    def build(name: str, ctx: MonitorContext) -> Monitor:
        lm = ctx.model()
        src = ctx.source("raw", lambda: RawActivations(lm, ctx.layers))
        return Monitor(name, src, pool, head, ctx.store)

    return build


def _prompted(head: str) -> Callable[[str, MonitorContext], Monitor]:
    def build(name: str, ctx: MonitorContext) -> Monitor:
        lm = ctx.model()
        return Monitor(name, ctx.source("prompted", lambda: PromptedReading(lm, ctx.layers)), "last", head, ctx.store)

    return build


def _zero_shot(name: str, ctx: MonitorContext) -> Monitor:
    lm = ctx.model()
    return Monitor(name, ctx.source("prompted", lambda: PromptedReading(lm, ctx.layers)), "p_yes", "none", ctx.store)


def _sae(name: str, ctx: MonitorContext) -> Monitor:
    if ctx.sae is None:
        raise ConfigError(NO_SAE)
    lm = ctx.model()
    return Monitor(name, ctx.source("sae", lambda: SaeMaxPool(lm, ctx.sae)), "max", "logistic", ctx.store)


MONITORS: dict[str, MonitorSpec] = {
    **{
        f"raw-{pool}-{short}": MonitorSpec(
            "raw", f"{head.replace('_', '-')} probe on the answer's residual stream, {pool}-pooled", _raw(pool, head)
        )
        for pool in ("mean", "last", "max")
        for short, head in (("dim", "diff_in_means"), ("logistic", "logistic"))
    },
    "prompted-logistic": MonitorSpec(
        "prompted",
        "logistic probe on the last token after a task description, the transcript and a question",
        _prompted("logistic"),
    ),
    "prompted-dim": MonitorSpec(
        "prompted", "difference-in-means probe on the prompted last token", _prompted("diff_in_means")
    ),
    "sae-max-logistic": MonitorSpec(
        "sae", "logistic probe on the max over answer tokens of an SAE's latents (needs --sae)", _sae
    ),
    "zero-shot": MonitorSpec("zero-shot", "the monitored model's own P(yes) to 'is this answer harmful?'", _zero_shot),
}


def get_monitor(name: str, ctx: MonitorContext, registry: dict[str, MonitorSpec] | None = None) -> Monitor:
    """Build the monitor `name` (unknown names: the choices and a did-you-mean)."""
    spec = lookup(registry if registry is not None else MONITORS, name, "monitor")
    return spec.build(name, ctx)
