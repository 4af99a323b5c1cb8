"""The result of a cross-domain layer choice: what was chosen, the matrices behind it, and its plots.

A result is a directory (kind ``cross_domain_sweep``): ``config.json``, ``layers.csv`` (one row per
candidate), ``domains.csv``, ``styles.csv``, ``folds.csv`` (per held-out domain and style, chosen
candidate), ``directions.safetensors`` (the chosen method and pooling at every layer) and the heatmaps
``layers.png``, ``domains.png``, ``styles.png``. The protocol that fills it is `emscope.directions.cross_domain`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emscope.artifacts import DAMAGED, load_artifact, save_artifact
from emscope.directions.direction import LAYER_CONVENTION, Direction
from emscope.errors import ArtifactError
from emscope.records import write_csv

KIND = "cross_domain_sweep"
CHOICE_RULE = (
    "highest mean held-out-domain AUROC (fit on every domain but one, score the one left out, each domain weighted "
    "equally); ties -> higher worst-domain AUROC -> earliest layer -> method, then pooling, in the order asked "
    "(compared at 6 decimals); fixed before any result is seen"
)
LAYER_COLUMNS = (
    "pool",
    "method",
    "layer",
    "heldout_domain_auroc",
    "heldout_domain_auroc_lo",
    "heldout_domain_auroc_hi",
    "worst_domain_auroc",
    "worst_domain",
    "within_split_auroc",
    "within_split_auroc_lo",
    "within_split_auroc_hi",
    "within_split_accuracy",
)


@dataclass(frozen=True)
class Candidate:
    """One pooling x method x layer."""

    pool: str
    method: str
    layer: int

    def describe(self) -> str:
        return f"layer {self.layer}, {self.method}, {self.pool} pooling"


@dataclass(frozen=True)
class CrossDomainResult:
    """Every candidate's held-out-domain and within-split AUROC, the choice, matrices and the shipped directions."""

    rows: list[dict[str, Any]]  # one per candidate, the columns of ``layers.csv``
    chosen: Candidate
    random_split_choice: Candidate  # what the within-distribution split would have chosen
    directions: dict[int, Direction]  # the chosen method and pooling at every layer, fitted on every pair
    domains: list[str]
    domain_matrix: list[list[float]]  # [fit domain][score domain]; diagonal: random split inside the domain
    styles: list[str]
    style_matrix: list[list[float]]  # [fit style][score style], held-out domains, averaged
    folds: list[dict[str, Any]]  # chosen candidate: AUROC per held-out domain and style
    nested: dict[str, Any]  # the no-hindsight estimate (see the module docstring)
    config: dict[str, Any] = field(default_factory=dict)
    rule: str = CHOICE_RULE

    @property
    def best_layer(self) -> int:
        return self.chosen.layer

    @property
    def method(self) -> str:
        return self.chosen.method

    @property
    def pool(self) -> str:
        return self.chosen.pool

    @property
    def best(self) -> Direction:
        """The shipped direction: the chosen candidate, fitted on every pair."""
        return self.directions[self.chosen.layer]

    @property
    def layers(self) -> list[int]:
        return sorted(self.directions)

    def row(self, candidate: Candidate) -> dict[str, Any]:
        return next(
            r
            for r in self.rows
            if (r["pool"], r["method"], r["layer"]) == (candidate.pool, candidate.method, candidate.layer)
        )

    def summary(self) -> str:
        """Two lines: the chosen candidate's held-out-domain AUROC, and the within-split number beside it."""
        c, r = self.chosen, self.row(self.chosen)
        q = self.row(self.random_split_choice)
        return (
            f"chosen {c.describe()}: held-out-domain AUROC {r['heldout_domain_auroc']:.3f} "
            f"[{r['heldout_domain_auroc_lo']:.3f}, {r['heldout_domain_auroc_hi']:.3f}] (worst domain "
            f"{r['worst_domain']} {r['worst_domain_auroc']:.3f}; no-hindsight {self.nested['mean_auroc']:.3f}); "
            f"within-distribution split AUROC {r['within_split_auroc']:.3f}\n"
            f"the random split would choose {self.random_split_choice.describe()}: within-split AUROC "
            f"{q['within_split_auroc']:.3f}, held-out-domain AUROC {q['heldout_domain_auroc']:.3f}"
        )

    def save(self, directory: str | os.PathLike[str], plot: bool = True) -> Path:
        """Write ``config.json``, the CSVs, ``directions.safetensors`` (and the heatmaps)."""
        directory = Path(directory)
        fields = {
            **self.config,
            "rule": self.rule,
            "chosen": self.chosen.__dict__,
            "random_split_choice": self.random_split_choice.__dict__,
            "layer_convention": LAYER_CONVENTION,
            "rows": self.rows,
            "domains": self.domains,
            "domain_matrix": self.domain_matrix,
            "styles": self.styles,
            "style_matrix": self.style_matrix,
            "folds": self.folds,
            "nested": self.nested,
            "direction_fields": {k: v for k, v in self.best.fields().items() if k not in ("layer", "metrics")},
            "metrics": {str(layer): d.metrics for layer, d in self.directions.items()},
        }
        tensors = {f"layer_{layer}": d.vector for layer, d in self.directions.items()}
        save_artifact(directory, KIND, fields, tensors, tensors_name="directions.safetensors")
        write_csv(directory / "layers.csv", self.rows, LAYER_COLUMNS)
        write_csv(directory / "domains.csv", _matrix_rows("fit_domain", self.domains, self.domain_matrix))
        write_csv(directory / "styles.csv", _matrix_rows("fit_style", self.styles, self.style_matrix))
        write_csv(directory / "folds.csv", self.folds)
        if plot:
            plot_cross_domain(self, directory)
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> CrossDomainResult:
        required = ("chosen", "random_split_choice", "rows", "direction_fields", "metrics", "rule")
        config, tensors = load_artifact(directory, KIND, required)
        names = set(Direction.__dataclass_fields__) - {"vector", "layer", "metrics"}
        base = {k: v for k, v in config["direction_fields"].items() if k in names}
        try:
            directions = {
                int(layer): Direction(vector=tensors[f"layer_{layer}"], layer=int(layer), metrics=m, **base)
                for layer, m in config["metrics"].items()
            }
            chosen, other = Candidate(**config["chosen"]), Candidate(**config["random_split_choice"])
        except (KeyError, ValueError, TypeError, AttributeError) as e:
            raise ArtifactError(
                f"{directory}: the sweep's layers do not match its tensors ({e!r}); {DAMAGED}"
            ) from None
        own = {*required, "layer_convention", "domains", "domain_matrix", "styles", "style_matrix", "folds", "nested"}
        own |= {"tensors_file", "kind", "format_version", "emscope_version"}
        return cls(
            rows=config["rows"],
            chosen=chosen,
            random_split_choice=other,
            directions=directions,
            domains=config.get("domains", []),
            domain_matrix=config.get("domain_matrix", []),
            styles=config.get("styles", []),
            style_matrix=config.get("style_matrix", []),
            folds=config.get("folds", []),
            nested=config.get("nested", {}),
            config={k: v for k, v in config.items() if k not in own},
            rule=config["rule"],
        )


def _matrix_rows(name: str, labels: Sequence[str], matrix: Sequence[Sequence[float]]) -> list[dict[str, Any]]:
    return [{name: a, **dict(zip(labels, row, strict=True))} for a, row in zip(labels, matrix, strict=True)]


def plot_cross_domain(result: CrossDomainResult, directory: str | os.PathLike[str]) -> list[Path]:
    """``layers.png`` (held-out-domain and within-split AUROC per layer, chosen pooling and method) and the
    ``domains.png`` / ``styles.png`` heatmaps."""
    from matplotlib.figure import Figure

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    fig = Figure(figsize=(7.5, 3.8), layout="constrained")
    ax = fig.add_subplot()
    methods = list(dict.fromkeys(r["method"] for r in result.rows))
    pools = list(dict.fromkeys(r["pool"] for r in result.rows))
    colours = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")
    styles = ("-", "--", "-.", ":")
    for pool in pools:
        for method in methods:
            rs = [r for r in result.rows if r["pool"] == pool and r["method"] == method]
            colour = colours[methods.index(method) % len(colours)]
            xs = [r["layer"] for r in rs]
            ax.plot(
                xs,
                [r["heldout_domain_auroc"] for r in rs],
                ls=styles[pools.index(pool) % len(styles)],
                marker="o",
                ms=2,
                lw=1,
                color=colour,
                label=f"{method}/{pool}",
            )
            if (pool, method) == (result.chosen.pool, result.chosen.method):
                ax.fill_between(
                    xs,
                    [r["heldout_domain_auroc_lo"] for r in rs],
                    [r["heldout_domain_auroc_hi"] for r in rs],
                    color=colour,
                    alpha=0.15,
                )
                within = [r["within_split_auroc"] for r in rs]
                ax.plot(xs, within, color="black", lw=1, ls=":", label=f"{method}/{pool}, within split")
    ax.axvline(result.chosen.layer, color="grey", ls="--", lw=1)
    ax.set_xlabel("layer (output of decoder block i)")
    ax.set_ylabel("AUROC")
    ax.set_title(
        f"{result.best.model}: held-out-domain AUROC per candidate (95% band for the chosen one)\n"
        f"chosen {result.chosen.describe()}",
        fontsize=8,
    )
    ax.legend(fontsize=6, loc="lower right", ncol=2)
    paths.append(directory / "layers.png")
    fig.savefig(paths[-1], dpi=120)
    for name, labels, matrix, xlabel, ylabel in (
        ("domains", result.domains, result.domain_matrix, "scored on domain", "fitted on domain"),
        ("styles", result.styles, result.style_matrix, "scored on style (held-out domains)", "fitted on style"),
    ):
        if not matrix:
            continue
        size = max(3.0, 1.0 + 0.55 * len(labels))
        fig = Figure(figsize=(size + 1.5, size), layout="constrained")
        ax = fig.add_subplot()
        im = ax.imshow(np.asarray(matrix, dtype=float), vmin=0.5, vmax=1.0, cmap="viridis")
        ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        for i, row in enumerate(matrix):
            for j, v in enumerate(row):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6, color="white" if v < 0.8 else "black")
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.set_title(f"{result.best.model}\nAUROC, {result.chosen.describe()}", fontsize=8)
        fig.colorbar(im, ax=ax, shrink=0.8)
        paths.append(directory / f"{name}.png")
        fig.savefig(paths[-1], dpi=120)
    return paths
