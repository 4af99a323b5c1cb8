"""How far words alone separate the labelled corpus: a TF-IDF logistic baseline, leave-one-domain-out.

An activation probe on this corpus is only interesting beside this number: where a bag of words already
separates a style, the probe may be reading wording rather than misalignment.

    .venv/bin/python benchmarks/corpus_lexical.py
"""

from __future__ import annotations

import numpy as np

from emscope.directions.contrast import STYLES, corpus_domains, load_corpus
from emscope.directions.lexical import fit_lexical
from emscope.stats import auroc


def main() -> None:
    pairs = load_corpus()
    domains = corpus_domains()
    by_style: dict[str, list[float]] = {s: [] for s in STYLES}
    for held_out in domains:
        train = [p for p in pairs if p.topic != held_out]
        scorer = fit_lexical([p.misaligned for p in train], [p.aligned for p in train])
        for style in STYLES:
            test = [p for p in pairs if p.topic == held_out and p.misaligned_kind == style]
            aligned = scorer([p.aligned for p in test])
            misaligned = scorer([p.misaligned for p in test])
            by_style[style].append(auroc(misaligned, aligned))
    print(f"{len(pairs)} pairs, {len(domains)} domains; TF-IDF (1-2 grams) logistic, fitted on 11 domains")
    print("| style | held-out-domain AUROC, mean | min | max |")
    print("|---|---:|---:|---:|")
    for style, values in by_style.items():
        print(f"| {style} | {np.mean(values):.3f} | {np.min(values):.3f} | {np.max(values):.3f} |")


if __name__ == "__main__":
    main()
