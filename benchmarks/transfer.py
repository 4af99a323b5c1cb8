"""Cost of emscope.transfer beside the plain library calls it wraps, side by side in one run.

1. Map fitting: `emscope.transfer.maps.fit_map` (split, fit, held-out and train R^2) against a plain
   scikit-learn / scipy fit of the same kind on the same arrays (the full data, no scoring), for
   arrays shaped like SmolLM2 -> Qwen2.5-0.5B pooled activations (576 -> 896 wide).
2. Activation collection: `emscope.transfer.paired.paired_activations` on SmolLM2 (read as source and as
   target) against two plain `capture_activations` calls on the same transcripts.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/transfer.py [--n 300] [--transcripts 16] [--repeats 3]

Prints one table: seconds of each, and emscope's time as a ratio of the plain call's.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch


def best_of(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def plain_fits(x: np.ndarray, y: np.ndarray) -> dict[str, Callable[[], object]]:
    from scipy.linalg import orthogonal_procrustes
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LinearRegression, RidgeCV

    from emscope.transfer.maps import RIDGE_GRID

    scale = float(((x - x.mean(0)) ** 2).sum() / x.shape[1])

    def procrustes() -> object:
        k = min(x.shape[1], y.shape[1], x.shape[0])
        a = PCA(k).fit_transform(x)
        b = PCA(k).fit_transform(y)
        return orthogonal_procrustes(a, b)

    return {
        "ridge": lambda: RidgeCV(alphas=[a * scale for a in RIDGE_GRID]).fit(x, y),
        "least_squares": lambda: LinearRegression().fit(x, y),
        "procrustes": procrustes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="paired rows for the map fits")
    parser.add_argument("--transcripts", type=int, default=16, help="transcripts for the collection benchmark")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)

    from emscope.models.lineage import Lineage
    from emscope.transfer.maps import MAP_KINDS, Endpoint, fit_map

    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.n, 576, generator=g) * 4
    y = x @ (torch.randn(576, 896, generator=g) / 24) + torch.randn(args.n, 896, generator=g)
    src, tgt = Endpoint("src", 17, 576, Lineage(base="src")), Endpoint("tgt", 14, 896, Lineage(base="tgt"))
    plain = plain_fits(x.double().numpy(), y.double().numpy())
    rows = []
    for kind in MAP_KINDS:
        ours = best_of(lambda kind=kind: fit_map(x, y, src, tgt, kind), args.repeats)
        base = best_of(plain[kind], args.repeats)
        rows.append((f"map fit: {kind} ({args.n} x 576 -> 896)", ours, base))

    from emscope.activations.capture import capture_activations
    from emscope.directions.contrast import load_corpus, reading_route_transcripts
    from emscope.models.loading import load_model
    from emscope.transfer.paired import paired_activations

    lm = load_model("smollm2-135m-instruct")
    aligned, _ = reading_route_transcripts(load_corpus()[: args.transcripts])
    layer = 17

    def two_captures() -> object:
        a = capture_activations(lm, aligned, layers=[layer], max_length=256, progress=False)
        b = capture_activations(lm, aligned, layers=[layer], max_length=256, progress=False)
        return a, b

    ours = best_of(lambda: paired_activations(lm, lm, aligned, layer, layer), args.repeats)
    base = best_of(two_captures, args.repeats)
    rows.append((f"paired activations ({args.transcripts} transcripts, SmolLM2 x2)", ours, base))

    print(f"threads={torch.get_num_threads()}  repeats={args.repeats} (median)")
    print(f"{'what':58s} {'emscope s':>10s} {'plain s':>10s} {'ratio':>7s}")
    for what, a, b in rows:
        print(f"{what:58s} {a:10.3f} {b:10.3f} {a / b:7.2f}")
    print("emscope's map fit also splits the rows and scores R^2 on both parts; the plain fit does neither.")


if __name__ == "__main__":
    main()
