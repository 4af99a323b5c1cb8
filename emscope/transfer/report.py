"""Markdown tables of a saved `TransferMatrix` (what ``emscope transfer --models`` writes to ``summary.md``).

Built only from the saved result: per pair, the map's held-out R^2, the geometry and detection beside
their controls, and the behaviour verdict where it was measured; per model, donor and receiver scores
with their bootstrap intervals; per unordered pair, the asymmetry.
"""

from __future__ import annotations

import math
from typing import Any

from emscope.transfer.matrix import TransferMatrix

SCORE_TITLES = {
    "r2": "map held-out R^2",
    "cosine": "cos(mapped, native)",
    "auroc_mapped": "mapped direction's held-out AUROC",
}


def _f(x: Any, fmt: str = "+.3f") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return format(x, fmt)


def _ci(d: dict[str, Any], i: int, j: int | None = None, fmt: str = "+.3f") -> str:
    pick = (lambda v: v[i]) if j is None else (lambda v: v[i][j])
    v, lo, hi = pick(d["value"]), pick(d["ci_low"]), pick(d["ci_high"])
    return f"{_f(v, fmt)} [{_f(lo, fmt)}, {_f(hi, fmt)}]"


def pair_table(result: TransferMatrix) -> str:
    lines = [
        "| donor -> receiver | map R^2 (held out) | cos(mapped, native) | cos z vs mapped-random | "
        "mapped-random cos (mean ± sd) | AUROC mapped | AUROC native | AUROC mapped-random (mean) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in result.cells:
        g, d = c["geometry"], c["detection"]
        mr = g["mapped_random"]
        lines.append(
            f"| {c['donor']} -> {c['receiver']} | {_f(c['map_r2_heldout'], '.3f')} | {_f(g['cosine'])} | "
            f"{_f(g['vs_mapped_random']['z'], '+.2f')} | {_f(mr['mean'])} ± {_f(mr['std'], '.3f')} | "
            f"{_f(d['auroc_mapped'], '.3f')} | {_f(d['auroc_native'], '.3f')} | "
            f"{_f(d['auroc_mapped_random']['mean'], '.3f')} |"
        )
    return "\n".join(lines)


def behaviour_table(result: TransferMatrix) -> str:
    if not result.behaviour:
        return "Behaviour was not measured."
    lines = [
        "| receiver | steered with | effect on native projection [95% CI over prompts] | verdict against controls |",
        "|---|---|---|---|",
    ]
    for receiver, s in result.behaviour.items():
        rows = [("native", s["native"])] + [(f"mapped from {d}", m) for d, m in s["mapped"].items()]
        for name, spec in rows:
            e = spec["effect"]
            lines.append(
                f"| {receiver} (alpha {_f(s.get('alpha'), '.1f')}) | {name} | "
                f"{_f(e['value'])} [{_f(e['ci_low'])}, {_f(e['ci_high'])}] (n={e['n']}) | {spec['verdict']} |"
            )
            for kind, k in spec["by_kind"].items():
                e = k["effect_pooled"]
                lines.append(
                    f"| | its {kind} controls (n={k['n']}, pooled) | "
                    f"{_f(e['value'])} [{_f(e['ci_low'])}, {_f(e['ci_high'])}] | - |"
                )
    return "\n".join(lines)


def score_table(result: TransferMatrix) -> str:
    lines = [
        "| metric | model | donor score (row mean) | receiver score (column mean) | asymmetry (donor - receiver) |",
        "|---|---|---|---|---|",
    ]
    for metric, title in SCORE_TITLES.items():
        s = result.scores.get(metric)
        if not s:
            continue
        for i, model in enumerate(result.models):
            lines.append(
                f"| {title} | {model} | {_ci(s['donor'], i)} | {_ci(s['receiver'], i)} | {_ci(s['asymmetry'], i)} |"
            )
    return "\n".join(lines)


def asymmetry_table(result: TransferMatrix) -> str:
    lines = ["| metric | pair a, b | M[a->b] - M[b->a] [95% CI] |", "|---|---|---|"]
    n = len(result.models)
    for metric, title in SCORE_TITLES.items():
        s = result.scores.get(metric)
        if not s:
            continue
        for i in range(n):
            for j in range(i + 1, n):
                lines.append(f"| {title} | {result.models[i]}, {result.models[j]} | {_ci(s['pair_asymmetry'], i, j)} |")
    return "\n".join(lines)


def markdown(result: TransferMatrix) -> str:
    """All tables, with the settings that made them."""
    cfg = result.config
    meta = result.meta
    head = (
        f"Models (layer): {', '.join(f'{m} ({layer})' for m, layer in zip(result.models, result.layers, strict=True))}. "
        f"Map: {cfg.get('map_kind')} on {meta.get('n_neutral')} neutral transcripts "
        f"({int(100 * cfg.get('map_test_frac', 0))}% held out); corpus: {meta.get('n_corpus_pairs')} pairs "
        f"({int(100 * cfg.get('test_frac', 0))}% held out); {cfg.get('n_random')} random directions; "
        f"{result.scores.get('n_boot')} bootstrap resamples."
    )
    return "\n\n".join(
        [
            head,
            "### Per pair: geometry and detection\n\n" + pair_table(result),
            "### Donor and receiver scores\n\n" + score_table(result),
            "### Pairwise asymmetry\n\n" + asymmetry_table(result),
            "### Behaviour (steering; measured by the native-direction projection of the answers)\n\n"
            + behaviour_table(result),
        ]
    )
