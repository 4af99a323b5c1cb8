"""Linear maps from one model's residual stream to another's, fitted on paired pooled activations.

A map is ``y = x @ matrix + intercept`` from the source model's activation ``x`` [D_s] at one layer to
the target model's activation ``y`` [D_t] at one layer, both pooled over the same transcript's response.
Fitting methods are plain functions in `MAP_KINDS`; each kind is saved as its own artifact kind
(``activation_map_ridge`` ...), all read back by `ActivationMap.load`:

- ``ridge``: scikit-learn `RidgeCV`, one alpha for all outputs chosen by efficient leave-one-out
  over a grid scaled to the data (``alpha * ||X - mean||_F^2 / D_s``, so the grid means the same at
  any activation scale);
- ``least_squares``: scikit-learn `LinearRegression` (the minimum-norm solution when there are fewer
  transcripts than source dimensions: it then interpolates its training rows, which the held-out
  R^2 shows);
- ``procrustes``: both sides projected by PCA to a common dimension ``k`` (at most the smaller width
  and the number of training rows), then scaled orthogonal Procrustes (`scipy.linalg.orthogonal_procrustes`)
  between the projections; the map is ``P_s (s R) P_t^T``, a rotation of the shared subspace.

Every map is fitted on a seeded train split and scored on the held-out rest (R^2 pooled over the target
dimensions, `sklearn.metrics.r2_score` ``variance_weighted``); the held-out rows are recorded so that a
bootstrap can resample them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emscope.artifacts import DAMAGED, load_artifact, read_config, save_artifact
from emscope.errors import (
    ArtifactError,
    DataFormatError,
    LayerIndexError,
    ModelMismatchError,
    WidthMismatchError,
    lookup,
)
from emscope.models.lineage import Compatibility, Lineage

KIND_PREFIX = "activation_map_"
RIDGE_GRID = tuple(float(a) for a in np.logspace(-4, 3, 15))  # times ||X - mean||_F^2 / D_s


@dataclass(frozen=True)
class Fitted:
    """What a fitting method returns: ``y ~ x @ matrix + intercept`` and its settings."""

    matrix: np.ndarray  # [D_s, D_t]
    intercept: np.ndarray  # [D_t]
    alpha: float | None = None  # the regularisation chosen (ridge)
    extra: dict[str, Any] = field(default_factory=dict)


Fit = Callable[[np.ndarray, np.ndarray], Fitted]


def fit_ridge(x: np.ndarray, y: np.ndarray) -> Fitted:
    """Ridge regression with one alpha picked by leave-one-out from `RIDGE_GRID` (scaled to the data)."""
    from sklearn.linear_model import RidgeCV

    scale = float(((x - x.mean(0)) ** 2).sum() / x.shape[1]) or 1.0
    model = RidgeCV(alphas=[a * scale for a in RIDGE_GRID]).fit(x, y)
    return Fitted(
        np.asarray(model.coef_, dtype=np.float64).T.reshape(x.shape[1], y.shape[1]),
        np.asarray(model.intercept_, dtype=np.float64).reshape(y.shape[1]),
        alpha=float(model.alpha_),
        extra={"alpha_relative": float(model.alpha_) / scale, "alpha_grid_relative": list(RIDGE_GRID)},
    )


def fit_least_squares(x: np.ndarray, y: np.ndarray) -> Fitted:
    """Ordinary least squares (minimum-norm when under-determined)."""
    from sklearn.linear_model import LinearRegression

    model = LinearRegression().fit(x, y)
    return Fitted(
        np.asarray(model.coef_, dtype=np.float64).T.reshape(x.shape[1], y.shape[1]),
        np.asarray(model.intercept_, dtype=np.float64).reshape(y.shape[1]),
    )


def fit_procrustes(x: np.ndarray, y: np.ndarray, dim: int | None = None) -> Fitted:
    """Scaled orthogonal Procrustes between the PCA projections of both sides to a common dimension."""
    from scipy.linalg import orthogonal_procrustes

    k = min(x.shape[1], y.shape[1], x.shape[0], dim or x.shape[1])
    mx, my = x.mean(0), y.mean(0)
    ps, pt = _pca_basis(x - mx, k), _pca_basis(y - my, k)  # [D_s, k], [D_t, k]
    a, b = (x - mx) @ ps, (y - my) @ pt
    rotation, trace = orthogonal_procrustes(a, b)  # argmin ||a R - b||, R orthogonal; trace = sum of singular values
    s = float(trace / max((a**2).sum(), 1e-30))
    matrix = ps @ (s * rotation) @ pt.T
    return Fitted(matrix, my - mx @ matrix, extra={"common_dim": int(k), "scale": s})


def _pca_basis(centred: np.ndarray, k: int) -> np.ndarray:
    """The top-`k` right singular vectors of `centred` as columns [D, k] (signs fixed for reproducibility)."""
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    basis = vt[:k].T
    if basis.shape[1] < k:  # fewer rows than k: pad with an orthonormal completion
        q, _ = np.linalg.qr(np.concatenate([basis, np.eye(centred.shape[1])[:, : k - basis.shape[1]]], axis=1))
        basis = q[:, :k]
    signs = np.sign(basis[np.abs(basis).argmax(0), np.arange(k)])
    return basis * np.where(signs == 0, 1.0, signs)


MAP_KINDS: dict[str, Fit] = {
    "ridge": fit_ridge,
    "least_squares": fit_least_squares,
    "procrustes": fit_procrustes,
}


def r2(y: np.ndarray, predicted: np.ndarray) -> float:
    """R^2 pooled over output dimensions (scikit-learn ``variance_weighted``): 1 - SSE / SST."""
    from sklearn.metrics import r2_score

    return float(r2_score(y, predicted, multioutput="variance_weighted"))


@dataclass(frozen=True)
class Endpoint:
    """One side of a map: which model and layer, with its width and lineage."""

    model: str
    layer: int
    width: int
    lineage: Lineage
    revision: str | None = None

    @classmethod
    def of(cls, lm: Any, layer: int) -> Endpoint:
        """The endpoint of a `LoadedModel` at `layer` (checked against its depth)."""
        if not 0 <= layer < lm.n_layers:
            raise LayerIndexError(f"layer {layer} is out of range for {lm.spec!r} (layers 0..{lm.n_layers - 1})")
        return cls(lm.spec, int(layer), int(lm.width), lm.lineage, lm.revision)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "layer": self.layer,
            "width": self.width,
            "lineage": self.lineage.to_dict(),
            "revision": self.revision,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Endpoint:
        try:
            return cls(d["model"], int(d["layer"]), int(d["width"]), Lineage.from_dict(d["lineage"]), d.get("revision"))
        except (KeyError, TypeError):
            raise ArtifactError(
                f"a map endpoint needs model, layer, width and lineage, got {d!r:.120}; {DAMAGED}"
            ) from None

    def describe(self) -> str:
        return f"{self.model} layer {self.layer} (width {self.width})"

    def check(self, model: str, width: int, lineage: Lineage, compatibility: Compatibility, what: str) -> None:
        """Raise unless a thing of `width` and `lineage` fits this endpoint."""
        if width != self.width:
            raise WidthMismatchError(
                f"{what} has width {width} but the map's {self.describe()} has width {self.width}; "
                "use a map fitted between these models (emscope transfer --source A --target B)"
            )
        if not self.lineage.fits(lineage, compatibility):
            raise ModelMismatchError(
                f"{what} ({model!r}: {lineage.describe()}) is not the map's {self.describe()} "
                f"({self.lineage.describe()}) under compatibility={compatibility!r}; fit a map for this model, "
                "or pass compatibility='any' to use it across models on purpose"
            )


@dataclass(frozen=True)
class ActivationMap:
    """A fitted map from `source`'s activations to `target`'s, with its held-out quality."""

    kind: str  # a key of MAP_KINDS
    matrix: torch.Tensor  # [D_s, D_t] float32
    intercept: torch.Tensor  # [D_t]
    source: Endpoint
    target: Endpoint
    r2_heldout: float
    r2_train: float
    alpha: float | None = None
    n_train: int = 0
    test_rows: tuple[int, ...] = ()  # row indices (of the paired data) held out
    dataset_fingerprint: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if tuple(self.matrix.shape) != (self.source.width, self.target.width):
            raise DataFormatError(
                f"map matrix has shape {list(self.matrix.shape)}, expected [{self.source.width}, {self.target.width}]"
            )
        if tuple(self.intercept.shape) != (self.target.width,):
            raise DataFormatError(
                f"map intercept has shape {list(self.intercept.shape)}, expected [{self.target.width}]"
            )

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Source activations [..., D_s] -> predicted target activations [..., D_t]."""
        if x.shape[-1] != self.source.width:
            raise WidthMismatchError(
                f"activations have width {x.shape[-1]} but the map's {self.source.describe()} has width "
                f"{self.source.width}"
            )
        return x.float() @ self.matrix + self.intercept

    def apply_linear(self, v: torch.Tensor) -> torch.Tensor:
        """A difference of source activations (a direction) [..., D_s] -> [..., D_t]: the intercept cancels."""
        if v.shape[-1] != self.source.width:
            raise WidthMismatchError(
                f"vector has width {v.shape[-1]} but the map's {self.source.describe()} has width {self.source.width}"
            )
        return v.float() @ self.matrix

    def fields(self) -> dict[str, Any]:
        return {
            "map_kind": self.kind,
            "source": self.source.to_dict(),
            "target": self.target.to_dict(),
            "r2_heldout": self.r2_heldout,
            "r2_train": self.r2_train,
            "alpha": self.alpha,
            "n_train": self.n_train,
            "test_rows": list(self.test_rows),
            "dataset_fingerprint": self.dataset_fingerprint,
            "meta": self.meta,
            "equation": "target = source @ matrix + intercept (pooled block outputs, resid_post)",
        }

    def save(self, directory: str | os.PathLike[str]) -> Path:
        return save_artifact(
            directory, KIND_PREFIX + self.kind, self.fields(), {"matrix": self.matrix, "intercept": self.intercept}
        )

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> ActivationMap:
        kind = str(read_config(directory).get("kind", ""))
        if not kind.startswith(KIND_PREFIX) or kind[len(KIND_PREFIX) :] not in MAP_KINDS:
            known = ", ".join(KIND_PREFIX + k for k in MAP_KINDS)
            raise ArtifactError(f"{directory} holds a {kind!r} result, expected an activation map ({known})")
        config, tensors = load_artifact(
            directory, kind, required=("source", "target", "r2_heldout"), tensors=("matrix", "intercept")
        )
        try:
            return cls(
                kind=kind[len(KIND_PREFIX) :],
                matrix=tensors["matrix"],
                intercept=tensors["intercept"],
                source=Endpoint.from_dict(config["source"]),
                target=Endpoint.from_dict(config["target"]),
                r2_heldout=config["r2_heldout"],
                r2_train=config.get("r2_train", float("nan")),
                alpha=config.get("alpha"),
                n_train=config.get("n_train", 0),
                test_rows=tuple(config.get("test_rows", ())),
                dataset_fingerprint=config.get("dataset_fingerprint"),
                meta=config.get("meta", {}),
            )
        except DataFormatError as e:
            raise ArtifactError(f"{directory}: {e}; {DAMAGED}") from None


def split_rows(n: int, test_frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, test) row indices, both sorted; at least 2 rows on each side."""
    if not 0 < test_frac < 1:
        raise DataFormatError(f"test_frac must lie strictly between 0 and 1, got {test_frac}")
    if n < 4:
        raise DataFormatError(f"fitting a map needs at least 4 paired transcripts, got {n}")
    perm = np.random.default_rng(seed).permutation(n)
    n_test = min(n - 2, max(2, round(n * test_frac)))
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def fit_map(
    x: torch.Tensor,
    y: torch.Tensor,
    source: Endpoint,
    target: Endpoint,
    kind: str = "ridge",
    *,
    test_frac: float = 0.25,
    seed: int = 0,
    dataset_fingerprint: str | None = None,
    meta: dict[str, Any] | None = None,
) -> ActivationMap:
    """Fit a `kind` map from paired rows ``x`` [N, D_s] (source) to ``y`` [N, D_t] (target); R^2 held out.

    Row i of both must come from the same transcript. The map is fitted on a seeded train split
    only, so ``r2_heldout`` is measured on rows it never saw.
    """
    fit = lookup(MAP_KINDS, kind, "map kind")
    if x.ndim != 2 or y.ndim != 2:
        raise DataFormatError(f"paired activations must be [N, D], got {list(x.shape)} and {list(y.shape)}")
    if len(x) != len(y):
        raise DataFormatError(f"paired activations need one row per transcript on both sides: {len(x)} vs {len(y)}")
    for side, t, end in (("source", x, source), ("target", y, target)):
        if t.shape[1] != end.width:
            raise WidthMismatchError(f"{side} activations have width {t.shape[1]}, but {end.describe()} is declared")
    train, test = split_rows(len(x), test_frac, seed)
    xs, ys = x.double().numpy(), y.double().numpy()
    fitted = fit(xs[train], ys[train])
    predict = lambda rows: xs[rows] @ fitted.matrix + fitted.intercept  # noqa: E731
    return ActivationMap(
        kind=kind,
        matrix=torch.from_numpy(fitted.matrix).float(),
        intercept=torch.from_numpy(fitted.intercept).float(),
        source=source,
        target=target,
        r2_heldout=r2(ys[test], predict(test)),
        r2_train=r2(ys[train], predict(train)),
        alpha=fitted.alpha,
        n_train=int(len(train)),
        test_rows=tuple(int(i) for i in test),
        dataset_fingerprint=dataset_fingerprint,
        meta={**fitted.extra, "test_frac": test_frac, "seed": seed, **(meta or {})},
    )
