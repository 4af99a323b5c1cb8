"""Layer, method and pooling chosen by how well a direction carries over to a domain it never saw.

A random train/held-out split of one corpus rewards whatever separates that corpus, its wording
included; the layer it picks need not be the one that generalizes. Here every candidate (pooling x
layer x method) is fitted on all domains but one and scored on the one left out (pairs stay
together: a domain is left out whole), for every domain in turn.

Choice rule (`CHOICE_RULE`, fixed before any result is seen and stored with every result): the
highest mean held-out-domain AUROC, each domain weighted equally; ties go to the higher worst-domain
AUROC, then the earliest layer, then the method and pooling asked for first. The same candidates are
also scored on a within-distribution random split (`emscope.directions.extract.train_test_split`) and
that number is reported beside it, with the candidate the random split would have chosen.

Because the rule picks the best of many candidates on the very folds it then reports, the chosen
candidate's mean is a little optimistic. `nested` gives the estimate without that hindsight: for each
domain, the rule is applied to the other domains' held-out scores only, and the candidate it picks is
scored on that domain (the other folds' fits did train on it, but its own score never enters the choice).

At the chosen candidate the result also holds the domain x domain matrix (fit on domain i, score domain
j; the diagonal is a random split inside domain i) and the style x style matrix (fit on style s of all
domains but one, score style t of the one left out, averaged over domains), and one direction per layer
fitted on every pair, which is what the CLI and the demo ship.

The result and its plots: `emscope.directions.cross_domain_result`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import partial
from typing import Any

import numpy as np
import torch

from emscope.data.transcripts import Transcript, fingerprint
from emscope.directions.cross_domain_result import (
    Candidate,
    CrossDomainResult,
)
from emscope.directions.detect import project
from emscope.directions.direction import Direction, direction_provenance
from emscope.directions.extract import NORMALISATION, extract_direction, get_method
from emscope.errors import ConfigError, DataFormatError
from emscope.stats import auroc, auroc_batched, percentile_interval, resample

log = logging.getLogger(__name__)
PROTOCOLS = ("random_split", "cross_domain")
DEFAULT_METHODS = ("diff_in_means", "logistic_probe")
DEFAULT_POOLS = ("mean", "last")
Acts = Mapping[str, Mapping[int, torch.Tensor]]  # pool -> layer -> [N, D], row i of pos and neg = pair i


def _groups(values: Sequence[str]) -> dict[str, np.ndarray]:
    """Row indices of each distinct value, in order of first appearance."""
    arr = np.asarray(values, dtype=object)
    return {v: np.flatnonzero(arr == v) for v in dict.fromkeys(values)}


def _scores(
    vector: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, idx: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    t = torch.from_numpy(idx)
    return project(pos[t], vector).double().numpy(), project(neg[t], vector).double().numpy()


def _fit(method: str, pos: torch.Tensor, neg: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(idx)
    return get_method(method)(pos[t], neg[t])


def _mean_auroc_interval(scores: Sequence[tuple[np.ndarray, np.ndarray]], n_boot: int, seed: int) -> list[float]:
    """95% interval of the mean over domains of the AUROC, resampling each domain's two classes separately."""
    if n_boot < 1:
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    total = np.zeros(n_boot)
    for p, n in scores:
        total += auroc_batched(resample(p, n_boot, rng), resample(n, n_boot, rng))
    return list(percentile_interval(total / len(scores)))


def _leave_one_domain_out(
    method: str, pos: torch.Tensor, neg: torch.Tensor, by_domain: Mapping[str, np.ndarray]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Held-out scores of each domain, from the direction fitted on every other domain."""
    n = len(pos)
    out = {}
    for domain, idx in by_domain.items():
        train = np.setdiff1d(np.arange(n), idx)
        out[domain] = _scores(_fit(method, pos, neg, train), pos, neg, idx)
    return out


def _key(value: float, worst: float, c: Candidate, order: Mapping[str, int]) -> tuple[float, float, int, int, int]:
    return (round(value, 6), round(worst, 6), -c.layer, -order[c.method], -order[f"pool:{c.pool}"])


def cross_domain_sweep(
    pos: Acts,
    neg: Acts,
    domains: Sequence[str],
    styles: Sequence[str] | None = None,
    methods: Sequence[str] = DEFAULT_METHODS,
    test_frac: float = 0.3,
    seed: int = 0,
    n_boot: int = 1000,
    labels: tuple[str, str] = ("misaligned", "aligned"),
    **direction_fields: Any,
) -> CrossDomainResult:
    """Leave-one-domain-out at every pooling (keys of `pos`), layer and method; choose by `CHOICE_RULE`.

    `pos` / `neg`: ``{pool: {layer: [N, D]}}`` with row i of each the two answers of pair i;
    `domains` (and `styles`, optional) tag each pair. Extra keyword arguments (``model``, ``lineage``,
    ``dataset_fingerprint``, ``meta`` ...) go into the shipped `Direction`s, as in `extract_direction`.
    """
    methods = list(dict.fromkeys(methods))
    for m in methods:
        get_method(m)  # an unknown name fails here, with the choices
    pools = [p for p in pos if p in neg]
    if not pools:
        raise DataFormatError(f"no pooling is present in both sets (pos has {list(pos)}, neg has {list(neg)})")
    n = len(domains)
    by_domain = _groups(domains)
    if len(by_domain) < 2:
        raise DataFormatError(f"leave-one-domain-out needs at least 2 domains, got {list(by_domain)}")
    if styles is not None and len(styles) != n:
        raise DataFormatError(f"got {len(styles)} style tags for {n} pairs")
    layers = sorted(set.intersection(*(set(pos[p]) & set(neg[p]) for p in pools)))
    if not layers:
        raise DataFormatError("no layer is present in both sets at every pooling")
    for p in pools:
        for layer in layers:
            if len(pos[p][layer]) != n or len(neg[p][layer]) != n:
                raise DataFormatError(
                    f"pool {p!r} layer {layer}: {len(pos[p][layer])} pos and {len(neg[p][layer])} neg rows, "
                    f"but {n} domain tags; one tag per pair, rows paired"
                )
    order = {m: i for i, m in enumerate(methods)} | {f"pool:{p}": i for i, p in enumerate(pools)}
    rows, per_domain, held_scores = [], {}, {}
    within: dict[Candidate, dict[str, Any]] = {}
    for pool in pools:
        for layer in layers:
            x, y = pos[pool][layer].float(), neg[pool][layer].float()
            for method in methods:
                c = Candidate(pool, method, layer)
                scores = _leave_one_domain_out(method, x, y, by_domain)
                aurocs = {d: auroc(*s) for d, s in scores.items()}
                worst = min(aurocs, key=lambda d: aurocs[d])
                lo, hi = _mean_auroc_interval(list(scores.values()), n_boot, seed)
                w = extract_direction(x, y, layer, method=method, test_frac=test_frac, seed=seed, n_boot=n_boot)
                within[c], per_domain[c], held_scores[c] = w.metrics, aurocs, scores
                ws_lo, ws_hi = w.metrics.get("auroc_ci", [float("nan")] * 2)
                rows.append(
                    {
                        "pool": pool,
                        "method": method,
                        "layer": layer,
                        "heldout_domain_auroc": float(np.mean(list(aurocs.values()))),
                        "heldout_domain_auroc_lo": lo,
                        "heldout_domain_auroc_hi": hi,
                        "worst_domain_auroc": aurocs[worst],
                        "worst_domain": worst,
                        "within_split_auroc": w.metrics["auroc"],
                        "within_split_auroc_lo": ws_lo,
                        "within_split_auroc_hi": ws_hi,
                        "within_split_accuracy": w.metrics["accuracy"],
                    }
                )
            log.info("cross-domain sweep: pool %s layer %d done", pool, layer)
    candidates = list(per_domain)

    def held_key(c: Candidate, skip: str | None = None) -> tuple[float, ...]:
        values = [v for d, v in per_domain[c].items() if d != skip]
        return _key(float(np.mean(values)), min(values), c, order)

    chosen = max(candidates, key=held_key)
    random_choice = max(
        candidates,
        key=lambda c: (
            (round(within[c]["auroc"], 6), round(within[c]["accuracy"], 6), round(within[c]["cohens_d"], 6))
            + _key(0.0, 0.0, c, order)[2:]
        ),
    )
    nested_choices = {d: max(candidates, key=partial(held_key, skip=d)) for d in by_domain}
    nested = {
        "mean_auroc": float(np.mean([per_domain[c][d] for d, c in nested_choices.items()])),
        "same_choice_share": float(np.mean([c == chosen for c in nested_choices.values()])),
        "per_domain": {d: {**c.__dict__, "auroc": per_domain[c][d]} for d, c in nested_choices.items()},
    }
    px, nx = pos[chosen.pool][chosen.layer].float(), neg[chosen.pool][chosen.layer].float()
    folds = _folds(held_scores[chosen], by_domain, styles)
    domain_matrix = _domain_matrix(chosen, px, nx, by_domain, test_frac, seed)
    style_names, style_matrix = _style_matrix(chosen, px, nx, domains, styles)
    directions = {
        layer: _shipped_direction(
            Candidate(chosen.pool, chosen.method, layer),
            pos[chosen.pool][layer].float(),
            neg[chosen.pool][layer].float(),
            rows,
            per_domain,
            within,
            labels,
            direction_fields,
        )
        for layer in layers
    }
    config = {
        "protocol": "cross_domain",
        "methods": methods,
        "pools": pools,
        "layers": layers,
        "test_frac": test_frac,
        "seed": seed,
        "n_boot": n_boot,
        "n_pairs": n,
        "n_domains": len(by_domain),
    }
    result = CrossDomainResult(
        rows=rows,
        chosen=chosen,
        random_split_choice=random_choice,
        directions=directions,
        domains=list(by_domain),
        domain_matrix=domain_matrix,
        styles=style_names,
        style_matrix=style_matrix,
        folds=folds,
        nested=nested,
        config=config,
    )
    log.info("%s", result.summary())
    return result


def _folds(
    scores: Mapping[str, tuple[np.ndarray, np.ndarray]],
    by_domain: Mapping[str, np.ndarray],
    styles: Sequence[str] | None,
) -> list[dict[str, Any]]:
    """AUROC of each held-out domain, over all its pairs and per style."""
    out = []
    for domain, (p, n) in scores.items():
        row: dict[str, Any] = {"heldout_domain": domain, "n_pairs": len(p), "all": auroc(p, n)}
        if styles is not None:
            tags = np.asarray(styles, dtype=object)[by_domain[domain]]
            for style in dict.fromkeys(styles):
                keep = tags == style
                row[style] = auroc(p[keep], n[keep]) if keep.any() else float("nan")
        out.append(row)
    return out


def _domain_matrix(
    c: Candidate, x: torch.Tensor, y: torch.Tensor, by_domain: Mapping[str, np.ndarray], test_frac: float, seed: int
) -> list[list[float]]:
    """[i][j]: fit on domain i, AUROC on domain j; [i][i]: a random split inside domain i."""
    matrix = []
    for di, idx in by_domain.items():
        vector = _fit(c.method, x, y, idx)
        row = []
        for dj, jdx in by_domain.items():
            if di == dj:
                t = torch.from_numpy(idx)
                inner = extract_direction(
                    x[t], y[t], c.layer, method=c.method, test_frac=test_frac, seed=seed, n_boot=0
                )
                row.append(float(inner.metrics["auroc"]))
            else:
                row.append(auroc(*_scores(vector, x, y, jdx)))
        matrix.append(row)
    return matrix


def _style_matrix(
    c: Candidate, x: torch.Tensor, y: torch.Tensor, domains: Sequence[str], styles: Sequence[str] | None
) -> tuple[list[str], list[list[float]]]:
    """[s][t]: fit on style s of every domain but one, AUROC on style t of the one left out, mean over domains."""
    if styles is None:
        return [], []
    names = list(dict.fromkeys(styles))
    d_arr, s_arr = np.asarray(domains, dtype=object), np.asarray(styles, dtype=object)
    sums = np.zeros((len(names), len(names)))
    counts = np.zeros((len(names), len(names)))
    for domain in dict.fromkeys(domains):
        for i, s in enumerate(names):
            train = np.flatnonzero((d_arr != domain) & (s_arr == s))
            if len(train) < 2:
                continue
            vector = _fit(c.method, x, y, train)
            for j, t in enumerate(names):
                test = np.flatnonzero((d_arr == domain) & (s_arr == t))
                if len(test):
                    sums[i, j] += auroc(*_scores(vector, x, y, test))
                    counts[i, j] += 1
    return names, np.where(counts > 0, sums / np.maximum(counts, 1), np.nan).tolist()


def _shipped_direction(
    c: Candidate,
    x: torch.Tensor,
    y: torch.Tensor,
    rows: Sequence[dict[str, Any]],
    per_domain: Mapping[Candidate, dict[str, float]],
    within: Mapping[Candidate, dict[str, Any]],
    labels: tuple[str, str],
    fields: Mapping[str, Any],
) -> Direction:
    """Candidate `c` fitted on every pair; its metrics are the held-out-domain ones, the within split beside them."""
    row = next(r for r in rows if (r["pool"], r["method"], r["layer"]) == (c.pool, c.method, c.layer))
    metrics = {
        "protocol": "cross_domain",
        "auroc": row["heldout_domain_auroc"],
        "auroc_ci": [row["heldout_domain_auroc_lo"], row["heldout_domain_auroc_hi"]],
        "worst_domain_auroc": row["worst_domain_auroc"],
        "per_domain_auroc": per_domain[c],
        "within_split": within[c],
    }
    fields = {"model": "unknown", **fields}
    meta = {
        "positive_label": labels[0],
        "negative_label": labels[1],
        "sign": f"points from {labels[1]} to {labels[0]}",
        "fitted_on": "every pair (all domains); metrics from leave-one-domain-out fits",
        **fields.pop("meta", {}),
    }
    return Direction(
        vector=get_method(c.method)(x, y),
        layer=c.layer,
        method=c.method,
        token_selection=f"response_{c.pool}",
        normalisation=NORMALISATION.get(c.method, "none"),
        n_per_class={labels[0]: len(x), labels[1]: len(y)},
        metrics=metrics,
        meta=meta,
        **fields,
    )


def sweep_cross_domain(
    lm: Any,
    pos: Sequence[Transcript],
    neg: Sequence[Transcript],
    domains: Sequence[str],
    styles: Sequence[str] | None = None,
    layers: Any = "all",
    methods: Sequence[str] = DEFAULT_METHODS,
    pools: Sequence[str] = DEFAULT_POOLS,
    test_frac: float = 0.3,
    seed: int = 0,
    n_boot: int = 1000,
    batch_size: int = 8,
    labels: tuple[str, str] = ("misaligned", "aligned"),
    progress: bool = True,
    max_length: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> CrossDomainResult:
    """Capture paired ``pos``/``neg`` transcripts on `lm` (every pooling in one pass, cached in `cache_dir`), then
    `cross_domain_sweep` with full provenance. Row i of `pos`, `neg`, `domains` (and `styles`) is pair i."""
    from emscope.directions.pooled_cache import capture_pooled

    for m in methods:
        get_method(m)  # fail before the (slow) capture
    if len(pos) != len(neg) or len(pos) != len(domains):
        raise DataFormatError(
            f"the cross-domain protocol needs paired rows: got {len(pos)} pos, {len(neg)} neg, {len(domains)} domains"
        )
    if not pos:
        raise DataFormatError("need transcripts on both sides, got none")
    data = [replace(t, label=labels[0]) for t in pos] + [replace(t, label=labels[1]) for t in neg]
    acts = capture_pooled(
        lm, data, layers, pools, cache_dir=cache_dir, batch_size=batch_size, max_length=max_length, progress=progress
    )
    n = len(pos)
    data_fingerprint = fingerprint(data)
    result = cross_domain_sweep(
        {p: {layer: x[:n] for layer, x in by.items()} for p, by in acts.items()},
        {p: {layer: x[n:] for layer, x in by.items()} for p, by in acts.items()},
        domains,
        styles,
        methods=methods,
        test_frac=test_frac,
        seed=seed,
        n_boot=n_boot,
        labels=labels,
        dataset_fingerprint=data_fingerprint,
        **direction_provenance(lm),
    )
    config = {**result.config, **lm.provenance(), "dataset_fingerprint": data_fingerprint, "labels": list(labels)}
    return replace(result, config=config)


def check_protocol(protocol: str, domains: Sequence[str] | None) -> None:
    """Refuse an unknown protocol, or the cross-domain one without a domain per pair."""
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    if protocol == "cross_domain" and not domains:
        raise ConfigError("the cross_domain protocol needs a domain per pair (domains=[...]); or use random_split")
