"""Heatmaps of a `TransferMatrix`: donors in rows, receivers in columns, each cell annotated.

One PNG per metric (``heatmap_METRIC.png``): the map's held-out R^2, the cosine of the mapped with
the native direction, its z against mapped-random directions, the mapped direction's held-out AUROC
(the diagonal shows each model's native AUROC), and, where behaviour was measured, the mapped
direction's steering effect as a z against its controls (the native direction's on the diagonal).
matplotlib is imported here only.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from emscope.transfer.matrix import TransferMatrix

CellValue = Callable[[dict[str, Any]], float | None]
METRICS: dict[str, tuple[str, CellValue]] = {
    "r2": ("map held-out R^2", lambda c: c["map_r2_heldout"]),
    "cosine": ("cos(mapped, receiver's native)", lambda c: c["geometry"]["cosine"]),
    "cosine_z": ("cosine: z against\nmapped-random directions", lambda c: c["geometry"]["vs_mapped_random"]["z"]),
    "auroc_mapped": (
        "held-out AUROC of the mapped\ndirection (diagonal: native)",
        lambda c: c["detection"]["auroc_mapped"],
    ),
    "behaviour_z": (
        "steering effect: z against its controls\n(diagonal: native; native-projection measure)",
        lambda c: (c.get("behaviour") or {}).get("z"),
    ),
}


def grid(result: TransferMatrix, value: CellValue) -> list[list[float]]:
    """The metric as a donor x receiver grid (NaN where absent)."""
    index = {m: i for i, m in enumerate(result.models)}
    n = len(result.models)
    g = [[math.nan] * n for _ in range(n)]
    for c in result.cells:
        v = value(c)
        g[index[c["donor"]]][index[c["receiver"]]] = math.nan if v is None else float(v)
    return g


def plot_heatmap(
    result: TransferMatrix, metric: str, path: str | os.PathLike[str], diagonal: list[float] | None = None
) -> Path | None:
    """One metric's heatmap; None (nothing written) when no cell has a value."""
    from matplotlib.figure import Figure

    title, value = METRICS[metric]
    g = grid(result, value)
    if diagonal is not None:
        for i, v in enumerate(diagonal):
            g[i][i] = v
    if all(math.isnan(v) for row in g for v in row):
        return None
    names = result.meta.get("slugs", result.models)
    n = len(names)
    fig = Figure(figsize=(2.6 + 1.3 * n, 1.6 + 1.1 * n), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(g, cmap="viridis")
    lo, hi = (float(v) for v in im.get_clim())
    for i in range(n):
        for j in range(n):
            if not math.isnan(g[i][j]):
                ink = "black" if (g[i][j] - lo) > 0.6 * (hi - lo) else "white"  # readable on light cells
                ax.text(j, i, f"{g[i][j]:.2f}", ha="center", va="center", color=ink, fontsize=9)
    ax.set_xticks(range(n), names, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.set_xlabel("receiver")
    ax.set_ylabel("donor")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.8)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out


def _native_z(result: TransferMatrix) -> list[float]:
    """Each receiver's native steering z against its own controls (NaN where it was not steered)."""
    out = []
    for model in result.models:
        comparison = (result.behaviour.get(model) or {}).get("native", {}).get("comparison") or {}
        z = comparison.get("z")
        out.append(math.nan if z is None else float(z))
    return out


def plot_all(result: TransferMatrix, directory: str | os.PathLike[str]) -> list[Path]:
    """Every metric's heatmap into `directory` (``heatmap_METRIC.png``)."""
    written = []
    native = result.meta.get("native_auroc")
    for metric in METRICS:
        diagonal = native if metric == "auroc_mapped" else _native_z(result) if metric == "behaviour_z" else None
        path = plot_heatmap(result, metric, Path(directory) / f"heatmap_{metric}.png", diagonal)
        if path is not None:
            written.append(path)
    return written
