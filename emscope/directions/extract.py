"""Extracting a direction from two labelled activation sets at one layer.

Methods are plain functions ``(pos [N, D], neg [M, D]) -> [D]`` held in `METHODS`; each
returns a vector pointing from the negative class towards the positive one (for EM work:
pos = misaligned, neg = aligned). Every method is fitted on a train split only and the
direction is scored on the held-out split (`emscope.directions.separation`), so the numbers stored in
`Direction.metrics` are never measured on the data that made the direction.

Scale convention: `diff_in_means` returns the raw mean difference. The other methods
return a unit vector rescaled to the length of the mean difference projected on it, so
that ``alpha=1`` means "one class-mean shift" whatever the method.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from emscope.directions.detect import project
from emscope.directions.direction import Direction
from emscope.directions.separation import separation_metrics
from emscope.errors import DataFormatError, LayerIndexError, WidthMismatchError, lookup
from emscope.models.lineage import Lineage
from emscope.stats import fit_logistic_probe

Method = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
PROBE_C = 1.0  # inverse L2 strength of the logistic_probe method, on standardised activations


def _check_pair(pos: torch.Tensor, neg: torch.Tensor, min_n: int = 1) -> None:
    """Raise a typed error for empty, non-2D or width-mismatched activation sets."""
    for name, x in (("pos", pos), ("neg", neg)):
        if x.ndim != 2:
            raise DataFormatError(f"{name} activations must be [N, D], got shape {tuple(x.shape)}")
        if x.shape[0] < min_n:
            raise DataFormatError(f"{name} activations hold {x.shape[0]} rows; at least {min_n} are needed")
    if pos.shape[1] != neg.shape[1]:
        raise WidthMismatchError(
            f"pos activations have width {pos.shape[1]} but neg have width {neg.shape[1]}; "
            "both sets must come from the same model and layer"
        )


def _rescale_to_mean_shift(unit: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Orient `unit` towards pos and give it the length of the mean difference projected on it."""
    unit = unit / unit.norm().clamp_min(1e-12)
    shift = float((pos.mean(0) - neg.mean(0)) @ unit)
    return unit * shift if shift != 0 else unit


def diff_in_means(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Mean of pos minus mean of neg (the method of the EM seed papers)."""
    _check_pair(pos, neg)
    return (pos.double().mean(0) - neg.double().mean(0)).float()


def logistic_probe(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """The normal of a logistic probe's decision boundary (`emscope.stats.fit_logistic_probe`, ``C=PROBE_C``).

    The probe is fitted on standardised activations; its weight is mapped back to activation
    space (``coef / scale``), so projecting raw activations on the result ranks them as the
    probe's log-odds do.
    """
    _check_pair(pos, neg)
    x = torch.cat([pos, neg]).double().numpy()
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    w = torch.from_numpy(fit_logistic_probe(x, y, c=PROBE_C).weight).double()
    return _rescale_to_mean_shift(w, pos.double(), neg.double()).float()


def pca_of_paired_differences(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """First principal axis of the paired differences ``pos[i] - neg[i]`` (not mean-centred).

    Rows must be paired (same question, two answers). The differences are not centred, so
    the axis found is the one along which the pairs consistently differ, as in
    representation-engineering style reading vectors.
    """
    _check_pair(pos, neg)
    if pos.shape[0] != neg.shape[0]:
        raise DataFormatError(
            f"pca_of_paired_differences needs paired rows, got {pos.shape[0]} pos and {neg.shape[0]} neg; "
            "use diff_in_means or logistic_probe for unpaired sets"
        )
    diffs = (pos - neg).double()
    _, _, vh = torch.linalg.svd(diffs, full_matrices=False)
    return _rescale_to_mean_shift(vh[0], pos.double(), neg.double()).float()


METHODS: dict[str, Method] = {
    "diff_in_means": diff_in_means,
    "logistic_probe": logistic_probe,
    "pca_of_paired_differences": pca_of_paired_differences,
}
# What the length of each method's vector means (stored as `Direction.normalisation`).
NORMALISATION: dict[str, str] = {
    "diff_in_means": "none",
    "logistic_probe": "unit_scaled_to_projected_mean_shift",
    "pca_of_paired_differences": "unit_scaled_to_projected_mean_shift",
}


def get_method(name: str) -> Method:
    """The extraction function registered under `name`."""
    return lookup(METHODS, name, "direction method")


@dataclass(frozen=True)
class Split:
    """Row indices of the train and held-out parts of each class."""

    pos_train: torch.Tensor
    pos_test: torch.Tensor
    neg_train: torch.Tensor
    neg_test: torch.Tensor


def _split_one(n: int, test_frac: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    perm = torch.randperm(n, generator=gen)
    n_test = min(n - 1, max(1, round(n * test_frac)))
    return perm[n_test:].sort().values, perm[:n_test].sort().values


def train_test_split(n_pos: int, n_neg: int, test_frac: float = 0.3, seed: int = 0) -> Split:
    """A seeded split; when ``n_pos == n_neg`` the rows are treated as pairs and split together.

    Splitting pairs together keeps both answers to one question on the same side, so the
    held-out score never rewards memorising a question.
    """
    if not 0 < test_frac < 1:
        raise DataFormatError(f"test_frac must be strictly between 0 and 1, got {test_frac}")
    if min(n_pos, n_neg) < 2:
        raise DataFormatError(f"need at least 2 rows per class to split train/held-out, got {n_pos} pos, {n_neg} neg")
    gen = torch.Generator().manual_seed(seed)
    if n_pos == n_neg:
        train, test = _split_one(n_pos, test_frac, gen)
        return Split(train, test, train, test)
    pos_train, pos_test = _split_one(n_pos, test_frac, gen)
    neg_train, neg_test = _split_one(n_neg, test_frac, gen)
    return Split(pos_train, pos_test, neg_train, neg_test)


def extract_direction(
    pos: torch.Tensor,
    neg: torch.Tensor,
    layer: int,
    *,
    method: str = "diff_in_means",
    test_frac: float = 0.3,
    seed: int = 0,
    n_boot: int = 1000,
    model: str = "unknown",
    model_revision: str | None = None,
    lineage: Lineage | None = None,
    dataset_fingerprint: str | None = None,
    token_selection: str = "response_mean",
    labels: tuple[str, str] = ("pos", "neg"),
    meta: dict[str, Any] | None = None,
) -> Direction:
    """Fit `method` on a train split of ``pos``/``neg`` ([N, D] at `layer`) and measure it held-out.

    The returned `Direction` points from neg towards pos; its ``metrics`` hold the held-out
    separation accuracy (threshold chosen on train), AUROC and Cohen's d with bootstrap 95%
    intervals (see `emscope.directions.separation.separation_metrics`).
    """
    fn = get_method(method)
    if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0:
        raise LayerIndexError(
            f"layer must be a block index >= 0, got {layer!r}; resolve negative indices against the model "
            "with emscope.models.architecture.resolve_layers first"
        )
    _check_pair(pos, neg, min_n=2)
    pos, neg = pos.float(), neg.float()
    split = train_test_split(len(pos), len(neg), test_frac, seed)
    vector = fn(pos[split.pos_train], neg[split.neg_train])
    metrics = separation_metrics(
        train_pos=project(pos[split.pos_train], vector),
        train_neg=project(neg[split.neg_train], vector),
        test_pos=project(pos[split.pos_test], vector),
        test_neg=project(neg[split.neg_test], vector),
        n_boot=n_boot,
        seed=seed,
    )
    metrics.update(test_frac=test_frac, split_seed=seed, paired_split=len(pos) == len(neg))
    return Direction(
        vector=vector,
        layer=int(layer),
        model=model,
        method=method,
        token_selection=token_selection,
        normalisation=NORMALISATION.get(method, "none"),
        model_revision=model_revision,
        lineage=lineage,
        n_per_class={
            labels[0]: int(len(pos)),
            labels[1]: int(len(neg)),
            f"{labels[0]}_train": int(len(split.pos_train)),
            f"{labels[1]}_train": int(len(split.neg_train)),
        },
        dataset_fingerprint=dataset_fingerprint,
        metrics=metrics,
        meta={
            "positive_label": labels[0],
            "negative_label": labels[1],
            "sign": f"points from {labels[1]} to {labels[0]}",
            **(meta or {}),
        },
    )
