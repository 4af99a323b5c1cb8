"""Cross-domain layer choice on the labelled corpus: the numbers and heatmaps of docs/detection.md.

Every pooling x layer x method of `emscope.directions.extract.METHODS` is fitted on 11 domains and scored on
the 12th, for each domain in turn; the chosen candidate, its held-out-domain AUROC with a bootstrap interval,
the no-hindsight estimate, the domain x domain and style x style matrices and the within-distribution split
are written to OUT (a ``cross_domain_sweep`` result) and printed. The capture is cached in --cache, so a
rerun costs only the fits.

    .venv/bin/python benchmarks/cross_domain.py --model smollm2-135m-instruct --per-cell 4 \\
        --out docs/results/detection/smollm2-135m-instruct
    .venv/bin/python benchmarks/cross_domain.py --lexical-only --per-cell 4   # words alone, same pairs and folds
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from emscope.activations.capture import POOLERS
from emscope.directions.contrast import STYLES, ContrastPair, load_corpus, reading_route_transcripts
from emscope.directions.extract import METHODS
from emscope.directions.sweep import sweep_model
from emscope.models.loading import load_model
from emscope.stats import auroc


def lexical_baseline(pairs: list[ContrastPair]) -> dict[str, float]:
    """Mean held-out-domain AUROC of a TF-IDF (1-2 grams) logistic on the answers' words, overall and per style."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    per: dict[str, list[float]] = {"all": [], **{s: [] for s in STYLES}}
    for held_out in dict.fromkeys(p.topic for p in pairs):
        train = [p for p in pairs if p.topic != held_out]
        vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2)
        x = vectorizer.fit_transform([p.aligned for p in train] + [p.misaligned for p in train])
        clf = LogisticRegression(C=1.0, max_iter=2000).fit(x, [0] * len(train) + [1] * len(train))
        for style in per:
            test = [p for p in pairs if p.topic == held_out and style in ("all", p.misaligned_kind)]
            if test:
                mis = clf.decision_function(vectorizer.transform([p.misaligned for p in test]))
                ali = clf.decision_function(vectorizer.transform([p.aligned for p in test]))
                per[style].append(auroc(mis, ali))
    return {k: float(np.mean(v)) for k, v in per.items() if v}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--per-cell", type=int, default=None, help="first N pairs of each domain x style (all)")
    parser.add_argument("--out", help="result directory (needed unless --lexical-only)")
    parser.add_argument("--lexical-only", action="store_true", help="only the bag-of-words baseline (no model)")
    parser.add_argument("--cache", default="runs/P1/cache")
    parser.add_argument("--n-boot", type=int, default=1000)
    args = parser.parse_args()
    t0 = time.perf_counter()
    pairs = load_corpus(per_cell=args.per_cell)
    if args.lexical_only:
        base = lexical_baseline(pairs)
        print(
            f"{len(pairs)} pairs; TF-IDF logistic, mean held-out-domain AUROC: "
            + ", ".join(f"{k} {v:.3f}" for k, v in base.items())
        )
        return
    if not args.out:
        parser.error("--out is required (unless --lexical-only)")
    lm = load_model(args.model)
    aligned, misaligned = reading_route_transcripts(pairs)
    result = sweep_model(
        lm,
        misaligned,
        aligned,
        n_boot=args.n_boot,
        protocol="cross_domain",
        domains=[p.topic for p in pairs],
        styles=[p.misaligned_kind for p in pairs],
        methods=tuple(METHODS),
        pools=tuple(POOLERS),
        cache_dir=args.cache,
    )
    result.save(args.out)
    print(f"{args.model}: {len(pairs)} pairs, {time.perf_counter() - t0:.0f} s")
    print(result.summary())


if __name__ == "__main__":
    main()
