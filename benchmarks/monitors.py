"""The monitoring methods side by side on the labelled corpus, held out by domain (issue 11).

Reads a subsample of the corpus (`--per-cell` pairs of each of the 12 domains x 3 styles, both
answers) with the monitored model once per feature source (cached under --features, resumable;
with --features-only the pairs are read k = 1, 2, ... per cell in turn, so a run stopped early
still holds a balanced subsample), then runs `emscope.evaluation.monitors.run_monitors`: every
monitor's held-out-domain AUROC against training size (8, 16, ..., all; 5 draws each), per
style, and its cost per item.

With --judge-features DIR (the cache of benchmarks/judge_corpus.py: the offline judge's
residuals at every layer and its raw 0-100 score for each answer it read), the answers both
models read are compared side by side in OUT/same-answers: the monitored model's arms beside
`judge-probe` (the shipped probe) and `judge-refit` (a logistic probe on the judge's features,
layer and C chosen on the training domains).

    python benchmarks/monitors.py --model smollm2-135m-instruct --per-cell 5 --features-only
    python benchmarks/monitors.py --model smollm2-135m-instruct --per-cell 5 --cached-only \
        --judge-features runs/P2/judge --out docs/results/monitors/smollm2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from emscope.directions.contrast import load_corpus
from emscope.probes import MONITORS, FeatureStore, Monitor, corpus_items, heldout_curve, subsample_pairs
from emscope.probes.items import nested_subsamples
from emscope.probes.sources import Precomputed

FEATURE_LAYERS = [9, 14, 17, 19, 23]  # what benchmarks/judge_corpus.py caches

DEFAULT = ",".join(m for m in MONITORS if not m.startswith("sae"))
ROOT = Path(__file__).resolve().parents[1]


def complete_pairs(items: list, ok: list[bool]) -> list:
    """The items whose pair has both answers marked ok."""
    bad = {it.group for it, o in zip(items, ok, strict=True) if not o}
    return [it for it in items if it.group not in bad]


def judge_source(path: Path, items: list, probe_dir: Path) -> tuple[Precomputed, list]:
    """The judge's cached features for the items it read: residuals at its feature layers, and a probe's score.

    `probe_dir` must not have been fitted on these answers (the refitted built-in probe was: pass the one
    shipped before it).
    """
    from emscope.evaluation.judges.probe import ProbeJudge, probe_scores

    old = ProbeJudge.load(probe_dir)
    raw = {}
    for line in (path / "raw.jsonl").read_text().splitlines():
        r = json.loads(line)
        raw[r["key"]] = r
    ok = [it.key in raw and (path / f"h_{it.key}.pt").is_file() for it in items]
    chosen = complete_pairs(items, ok)
    rows = {}
    for it in chosen:
        h = torch.load(path / f"h_{it.key}.pt").float().numpy()  # [len(FEATURE_LAYERS), D]
        rows[it.key] = {
            "last": h,
            "misaligned": np.float32(100.0 - probe_scores(old.weights, h[FEATURE_LAYERS.index(old.layer)][None])[0]),
            "seconds": np.float32(raw[it.key]["secs"]),
            "tokens": np.float32(raw[it.key].get("tokens", 0)),
        }
    return Precomputed("judge:qwen2.5-coder-1.5b-instruct", rows, FEATURE_LAYERS), chosen


def same_answers(args: argparse.Namespace, lm, names: list[str], items: list, store: FeatureStore, sae=None) -> None:
    """All arms on the answers the judge read too."""
    from emscope.evaluation.monitors import ALL_MONITORS, write_results
    from emscope.probes import MonitorContext, get_monitor

    src, chosen = judge_source(args.judge_features, items, args.judge_probe)
    print(f"same answers: {len(chosen)} read by both models", flush=True)
    ctx = MonitorContext(lm=lm, store=store, sae=sae)
    monitors = [get_monitor(m, ctx) for m in names]
    jstore = FeatureStore()
    monitors += [
        Monitor("judge-probe", src, "misaligned", "none", jstore),
        Monitor("judge-refit", src, "last", "logistic", jstore),
    ]
    curves = {}
    for m in monitors:
        print(f"same answers: {m.name}", flush=True)
        curves[m.name] = heldout_curve(m, chosen, repeats=args.repeats)
    seconds = float(np.median([src.rows[it.key]["seconds"] for it in chosen]))
    tokens = float(np.mean([src.rows[it.key]["tokens"] for it in chosen]))
    for name in ("judge-probe", "judge-refit"):  # the judge's measured cost, from its own cache
        curves[name].cost = {"forward_tokens": tokens, "seconds": seconds, "n_items": len(chosen)}
    from emscope.evaluation.monitors import table_row

    arms = {
        **{m: ALL_MONITORS[m].arm for m in names},
        "judge-probe": "judge",
        "judge-refit": "judge",
    }
    result = {
        "table": [table_row(m, arms[m], c) for m, c in curves.items()],
        "curves": {m: c.to_dict() for m, c in curves.items()},
    }
    write_results(args.out / "same-answers", result, chosen, lm)
    print(json.dumps(result["table"], indent=1, default=str))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--monitors", default=DEFAULT)
    ap.add_argument("--per-cell", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--features", type=Path, default=Path("runs/P2/features"))
    ap.add_argument("--features-only", action="store_true", help="Compute and cache the features, no analysis.")
    ap.add_argument("--cached-only", action="store_true", help="Analyse only the pairs whose features are cached.")
    ap.add_argument("--judge-features", type=Path, default=None, help="benchmarks/judge_corpus.py's --out.")
    ap.add_argument(
        "--judge-probe",
        type=Path,
        default=ROOT / "emscope" / "resources" / "judge" / "probe-qwen2.5-coder-1.5b",
        help="The probe judge-probe scores with (one not fitted on these answers).",
    )
    ap.add_argument("--skip-main", action="store_true", help="With --judge-features: only the same-answers comparison.")
    ap.add_argument("--sae", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from emscope.evaluation.monitors import ALL_MONITORS, run_monitors
    from emscope.models.loading import load_model
    from emscope.probes import MonitorContext

    names = args.monitors.split(",")
    pairs = load_corpus()
    lm = load_model(args.model)
    say = lambda msg: print(msg, flush=True)  # noqa: E731
    features = args.features / args.model
    sae = None
    if args.sae is not None:
        from emscope.sae import load_sae

        sae = load_sae(args.sae)
    if args.features_only:  # k = 1, 2, ... pairs per cell in turn: a run stopped early holds a balanced subsample
        done: list = []
        for k, part in enumerate(nested_subsamples(pairs, args.per_cell, seed=0), 1):
            done += part
            run_monitors(names, lm, corpus_items(done), features=features, sae=sae, features_only=True, progress=say)
            print(f"features done for per-cell {k}", flush=True)
        return
    items = corpus_items(subsample_pairs(pairs, args.per_cell, seed=0))
    store = FeatureStore(features)
    if args.cached_only:
        ctx = MonitorContext(lm=lm, store=store, sae=sae)
        sources = {ALL_MONITORS[m].build(m, ctx).source.name: ALL_MONITORS[m].build(m, ctx).source for m in names}
        ok = [all(c) for c in zip(*(store.cached(s, items) for s in sources.values()), strict=True)]
        items = complete_pairs(items, ok)
        print(f"{len(items)} answers cached for every source", flush=True)
    t0 = time.perf_counter()
    if not args.skip_main:
        result = run_monitors(
            names, lm, items, out=args.out, features=features, repeats=args.repeats, sae=sae, progress=say
        )
        print(json.dumps(result["table"], indent=1, default=str))
    if args.judge_features is not None and args.out is not None:
        same_answers(args, lm, names, items, FeatureStore(features), sae)
    print(f"done in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
