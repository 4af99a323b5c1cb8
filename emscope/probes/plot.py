"""The data-efficiency plot: held-out-domain AUROC against training items, one line per monitor."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import Any


def plot_curves(summaries: Sequence[dict[str, Any]], path: str | os.PathLike[str], title: str = "") -> None:
    """Write a PNG of `summaries` (rows of `CurveResult.summary()`, several monitors); "all" is drawn at its size.

    Untrained monitors (one point) are drawn as horizontal dashed lines.
    """
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

    from emscope.artifacts import atomic_write_bytes

    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    names = list(dict.fromkeys(r["monitor"] for r in summaries))
    xmax = max(int(r["n_used"]) for r in summaries)
    for k, name in enumerate(names):
        color = f"C{k % 10}"
        rows = [r for r in summaries if r["monitor"] == name]
        xs = [int(r["n_used"]) if r["n_train"] == "all" else int(r["n_train"]) for r in rows]
        ys = [r["auroc"] for r in rows]
        lo = [r["ci_low"] for r in rows]
        hi = [r["ci_high"] for r in rows]
        if len(rows) == 1:
            ax.axhline(ys[0], ls="--", lw=1.2, label=name, color=color)
            continue
        ax.plot(xs, ys, marker="o", ms=3, label=name, color=color, ls="-" if k < 10 else ":")
        ax.fill_between(xs, lo, hi, alpha=0.12, color=color)
    ax.set_xscale("log", base=2)
    ax.set_xlim(6, xmax * 1.3)
    ax.set_xlabel("training answers (pairs kept together), from the other domains")
    ax.set_ylabel("held-out-domain AUROC (mean over domains, 95% CI)")
    ax.axhline(0.5, color="grey", lw=0.6)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    atomic_write_bytes(path, buf.getvalue())
