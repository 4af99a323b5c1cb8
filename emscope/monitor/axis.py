"""Does drift concentrate on one axis of trait space? PCA of drift over runs and checkpoints, against a null.

Rows are checkpoints after step 0 of every run, each a trait-drift vector [n_traits]. The PCA is the
ordinary one (rows centred on their mean; `explained` = each component's share of the total variance).
`pc1_share` gets a 95% interval by resampling whole runs (a run's checkpoints are not independent).

The null (`NULL_RULE`): the same trait geometry placed at random in the residual stream. Each null draw
rotates the trait directions by a random orthogonal matrix of the residual space (their cosines to each
other are kept exactly) and projects the same raw activation drift on them, then takes the PC1 share.
A trait set whose directions are correlated would show a high PC1 share on any drift; drift that is
one-dimensional in the residual stream itself would too. The null contains both, so an observed share
above it says the one axis is found *by these trait directions* rather than by any frame of that shape.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emscope.artifacts import atomic_write_json, read_config, write_config
from emscope.errors import DataFormatError
from emscope.records import write_csv
from emscope.stats import percentile_interval

KIND = "drift_axis"
NULL_RULE = (
    "the trait directions rotated by a random orthogonal matrix of the residual space (cosines between traits kept), "
    "the same raw activation drift projected on them; PC1 share of that drift"
)


def explained_variance(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(share of variance per component [k], components [k, D]) of the centred rows of `x` [N, D]."""
    if x.ndim != 2 or len(x) < 2:
        raise DataFormatError(f"a PCA needs at least 2 rows [N, D], got shape {x.shape}")
    centred = x - x.mean(0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    var = s**2
    total = var.sum()
    return (var / total if total > 0 else np.zeros_like(var)), vt


def pc1_share(x: np.ndarray) -> float:
    return float(explained_variance(x)[0][0])


def random_rotation(width: int, rng: np.random.Generator) -> np.ndarray:
    """A Haar-random orthogonal matrix [width, width] (QR of a Gaussian, signs fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((width, width)))
    return np.asarray(q * np.sign(np.diag(r)))


@dataclass(frozen=True)
class DriftAxis:
    """PC1 of trait drift: its share of the variance with a run-bootstrap interval, the null, the loadings."""

    names: tuple[str, ...]
    explained: list[float]  # share of variance per component
    loadings: list[float]  # PC1, one weight per trait (oriented: harmful rows score positive on average)
    pc1_share: float
    pc1_share_ci: tuple[float, float]
    null: dict[str, Any]  # mean, q95, p_value (share of null draws >= observed), n, rule
    n_rows: int
    n_runs: int
    subset: str = "all runs"
    meta: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        lo, hi = self.pc1_share_ci
        return (
            f"{self.subset}: PC1 explains {self.pc1_share:.3f} [{lo:.3f}, {hi:.3f}] of trait-drift variance "
            f"({self.n_rows} checkpoints, {self.n_runs} runs); null {self.null['mean']:.3f} "
            f"(95th percentile {self.null['q95']:.3f}, p = {self.null['p_value']:.3f})"
        )

    def fields(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}

    def save(self, directory: str | os.PathLike[str]) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_config(directory, KIND, self.fields())
        write_csv(
            directory / "loadings.csv", [{"trait": n, "pc1": w} for n, w in zip(self.names, self.loadings, strict=True)]
        )
        atomic_write_json(directory / "summary.json", {"summary": self.summary()})
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> DriftAxis:
        config = read_config(directory, KIND, ("names", "pc1_share", "loadings"))
        names = set(cls.__dataclass_fields__)
        values = {k: v for k, v in config.items() if k in names}
        values["names"] = tuple(values["names"])
        values["pc1_share_ci"] = tuple(values.get("pc1_share_ci", (float("nan"), float("nan"))))
        return cls(**values)


def drift_axis(
    rows: Sequence[Mapping[str, Any]],
    directions: np.ndarray | None = None,
    *,
    n_boot: int = 1000,
    n_null: int = 200,
    seed: int = 0,
    subset: str = "all runs",
) -> DriftAxis:
    """PCA of the ``trait_drift`` of `rows` (`emscope.monitor.drift.checkpoint_rows`), with its null.

    `directions` ([n_traits, width] unit rows, the trait set's) enables the null, which also needs each
    row's ``activation_drift``; without them the null is reported as not computed.
    """
    if len(rows) < 3:
        raise DataFormatError(f"a drift axis needs at least 3 checkpoints after step 0, got {len(rows)}")
    names = tuple(rows[0]["names"])
    x = np.stack([np.asarray(r["trait_drift"], dtype=float) for r in rows])
    runs = np.asarray([str(r["run"]) for r in rows], dtype=object)
    shares, components = explained_variance(x)
    pc1 = components[0]
    harmful = np.asarray([r.get("label") == "harmful" for r in rows])
    scores = (x - x.mean(0)) @ pc1
    sign = (
        np.sign(scores[harmful].mean()) if harmful.any() and not harmful.all() else np.sign(pc1[np.argmax(np.abs(pc1))])
    )
    pc1 = pc1 * (sign or 1.0)
    rng = np.random.default_rng(seed)
    by_run = {run: np.flatnonzero(runs == run) for run in dict.fromkeys(runs.tolist())}
    keys = list(by_run)
    boot = []
    for _ in range(n_boot):
        idx = np.concatenate([by_run[keys[i]] for i in rng.integers(0, len(keys), len(keys))])
        boot.append(pc1_share(x[idx]) if len(idx) >= 2 else np.nan)
    ci = percentile_interval(np.asarray(boot)) if n_boot > 0 else (float("nan"), float("nan"))
    observed = float(shares[0])
    null: dict[str, Any] = {
        "rule": NULL_RULE,
        "n": 0,
        "mean": float("nan"),
        "q95": float("nan"),
        "p_value": float("nan"),
    }
    if directions is not None and n_null > 0:
        acts = np.stack([np.asarray(r["activation_drift"], dtype=float) for r in rows])
        u = np.asarray(directions, dtype=float)
        u = u / np.linalg.norm(u, axis=1, keepdims=True)
        if u.shape != (len(names), acts.shape[1]):
            raise DataFormatError(
                f"directions of shape {u.shape} do not match {len(names)} traits of width {acts.shape[1]}"
            )
        draws = np.asarray([pc1_share(acts @ (u @ random_rotation(u.shape[1], rng)).T) for _ in range(n_null)])
        null = {
            "rule": NULL_RULE,
            "n": n_null,
            "mean": float(draws.mean()),
            "q95": float(np.quantile(draws, 0.95)),
            "p_value": float((1 + (draws >= observed).sum()) / (1 + n_null)),
            "check_unrotated": pc1_share(
                acts @ u.T
            ),  # equals the observed share: trait drift is linear in the raw drift
            "raw_pc1_share": pc1_share(acts),  # near 1: the raw drift is itself one-dimensional, and so is any frame's
        }
    return DriftAxis(
        names=names,
        explained=[float(s) for s in shares],
        loadings=[float(w) for w in pc1],
        pc1_share=observed,
        pc1_share_ci=(float(ci[0]), float(ci[1])),
        null=null,
        n_rows=len(rows),
        n_runs=len(keys),
        subset=subset,
        meta={"n_boot": n_boot, "seed": seed, "pca": "centred rows; no scaling (every trait is in residual units)"},
    )


def plot_axis(axes: Sequence[DriftAxis], rows: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Left: PC1 loadings per trait; right: observed PC1 share with its interval beside the null's 95th percentile."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.6), layout="constrained")
    left, right = fig.subplots(1, 2)
    first = axes[0]
    left.barh(range(len(first.names)), first.loadings, color="tab:purple")
    left.set_yticks(range(len(first.names)), first.names, fontsize=8)
    left.axvline(0, color="black", lw=0.6)
    left.set_title(f"PC1 loadings ({first.subset})", fontsize=9)
    for i, a in enumerate(axes):
        lo, hi = a.pc1_share_ci
        right.errorbar(
            [i],
            [a.pc1_share],
            yerr=[[a.pc1_share - lo], [hi - a.pc1_share]],
            fmt="o",
            color="tab:blue",
            label="observed (95% CI over runs)" if i == 0 else None,
        )
        if a.null["n"]:
            right.plot(
                [i - 0.2, i + 0.2], [a.null["q95"]] * 2, color="tab:red", label="null 95th pct" if i == 0 else None
            )
            right.plot(
                [i - 0.2, i + 0.2], [a.null["mean"]] * 2, color="tab:red", ls=":", label="null mean" if i == 0 else None
            )
    right.set_xticks(range(len(axes)), [a.subset for a in axes], fontsize=8)
    right.set_ylim(0, 1.05)
    right.set_ylabel("PC1 share of drift variance")
    right.legend(fontsize=7)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path
