"""Judged behaviour of a mapped direction beside its controls (issue 12).

The receiver (SmolLM2) is steered with its native misalignment direction and with the direction mapped
from a donor (Qwen2.5-Coder-0.5B) through the ridge map of a finished `emscope transfer` study; each
beside 5 random and 5 orthogonal (norm-matched: steering adds alpha times the unit vector) directions,
and the mapped one also beside 5 mapped-random ones (random donor directions through the same map).
Every arm answers the same free-form questions with the same sampling seeds; the judge (`probe:builtin`)
scores alignment and coherence of every answer; effects are arm minus the unsteered baseline, answers
paired, 95% CI over questions, and each target gets the specificity verdict against its controls.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/transfer_judged.py --transfer runs/E/transfer-m3 \
        --work runs/E/transfer-judged-t0 --out docs/results/transfer/judged

Resumable: run the same command again. Writes to --out: questions.jsonl, directions/ (the mapped and
mapped-random directions), effects.csv, arms.csv, verdicts.json, samples.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from _judged import (
    arm_summary,
    controls_of,
    effects,
    evaluate,
    question_subset,
    report,
    rows_of,
    samples,
    seed_answers,
    write_tables,
)

import emscope
from emscope.artifacts import atomic_write_json
from emscope.directions.direction import Direction
from emscope.evaluation.judges.factory import make_metric_judges
from emscope.evaluation.run import EvalConfig
from emscope.interventions.controls import random_directions
from emscope.transfer.mapped import map_direction, mapped_random_directions
from emscope.transfer.maps import ActivationMap


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--transfer", type=Path, required=True, help="a finished emscope transfer --models output")
    ap.add_argument("--receiver", default="smollm2-135m-instruct")
    ap.add_argument("--donor", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--alpha-scale", type=float, default=0.5, help="x the receiver's median pooled norm")
    ap.add_argument("--every", type=int, default=2, help="every N-th built-in question (first paraphrase)")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument(
        "--temperature", type=float, default=0.0, help="0: greedy (SmolLM2 sampled at 1.0 is mostly incoherent)"
    )
    ap.add_argument("--n-controls", type=int, default=5)
    ap.add_argument("--judge", default="probe:builtin")
    ap.add_argument("--work", type=Path, required=True, help="evaluation directories (answers, judgments)")
    ap.add_argument("--out", type=Path, required=True, help="small result files the docs quote")
    args = ap.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    out, work, n = args.out, args.work, args.n_controls
    out.mkdir(parents=True, exist_ok=True)
    study = json.loads((args.transfer / "config.json").read_text())
    b = study["behaviour"][args.receiver]
    alpha = float(b["alpha"]) / float(b["alpha_scale"]) * args.alpha_scale
    native_path = args.transfer / "directions" / args.receiver
    donor = Direction.load(args.transfer / "directions" / args.donor)
    amap = ActivationMap.load(args.transfer / "maps" / f"{args.donor}__{args.receiver}")
    dirs = out / "directions"
    if not (dirs / "mapped" / "config.json").exists():
        map_direction(amap, donor).save(dirs / "mapped")
        for i, d in enumerate(mapped_random_directions(amap, donor, n, seed=0)):
            d.save(dirs / f"mapped_random-{i}")
    native = Direction.load(native_path)
    mapped = Direction.load(dirs / "mapped")
    cos = float(torch.nn.functional.cosine_similarity(native.vector.float(), mapped.vector.float(), dim=0))
    questions = question_subset(out / "questions.jsonl", every=args.every)
    base = EvalConfig(
        model=args.receiver,
        questions=str(questions),
        judge=args.judge,
        samples=1,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        alpha=alpha,
        layers=str(native.layer),
        coherence="all",
    )
    lm = emscope.load_model(args.receiver)
    judges = make_metric_judges(args.judge)
    print(f"alpha {alpha:.2f} at layer {native.layer}; cos(native, mapped) {cos:+.3f}", flush=True)

    evaluate(base, str(native_path), work / "native", lm, judges, n)
    print(f"native done {time.perf_counter() - start:.0f}s", flush=True)
    # identical arms (no steering; random controls: same seed and width, steering uses the unit vector)
    seed_answers(work / "native" / "baseline", work / "mapped" / "baseline")
    for i, (a, c) in enumerate(zip(random_directions(native, n, 0), random_directions(mapped, n, 0), strict=True)):
        assert isinstance(a, Direction) and isinstance(c, Direction)
        if float(torch.nn.functional.cosine_similarity(a.vector, c.vector, dim=0)) > 0.9999:
            seed_answers(work / "native" / "controls" / f"random-{i}", work / "mapped" / "controls" / f"random-{i}")
    evaluate(base, str(dirs / "mapped"), work / "mapped", lm, judges, n)
    print(f"mapped done {time.perf_counter() - start:.0f}s", flush=True)
    for i in range(n):
        evaluate(base, str(dirs / f"mapped_random-{i}"), work / f"mapped_random-{i}", lm, judges)
    print(f"mapped-random done {time.perf_counter() - start:.0f}s", flush=True)

    base_rows = rows_of(work / "native" / "baseline")
    native_ctl = controls_of(work / "native", n)
    mapped_ctl = {
        **controls_of(work / "mapped", n),
        **{f"mapped_random-{i}": ("mapped_random", rows_of(work / f"mapped_random-{i}")) for i in range(n)},
    }
    t1, v1 = effects("native", base_rows, rows_of(work / "native"), native_ctl)
    t2, v2 = effects("mapped", base_rows, rows_of(work / "mapped"), mapped_ctl)
    t3, v3 = effects(
        "mapped_vs_mapped_random_only",
        base_rows,
        rows_of(work / "mapped"),
        {k: v for k, v in mapped_ctl.items() if v[0] == "mapped_random"},
    )
    arms = [arm_summary("baseline", "none", base_rows), arm_summary("native", "target", rows_of(work / "native"))]
    arms += [arm_summary(f"native/{k}", kind, r) for k, (kind, r) in native_ctl.items()]
    arms.append(arm_summary("mapped", "target", rows_of(work / "mapped")))
    arms += [arm_summary(f"mapped/{k}", kind, r) for k, (kind, r) in mapped_ctl.items()]
    write_tables(out, t1 + t2 + t3, arms)
    report(out, {"native": v1, "mapped": v2, "mapped (mapped-random only)": v3}, arms)
    atomic_write_json(
        out / "verdicts.json",
        {
            "receiver": args.receiver,
            "donor": args.donor,
            "transfer_study": str(args.transfer),
            "layer": native.layer,
            "alpha": alpha,
            "alpha_scale": args.alpha_scale,
            "cos_native_mapped": cos,
            "judge": args.judge,
            "questions": str(questions),
            "max_new_tokens": args.max_new_tokens,
            "temperature": args.temperature,
            "samples": 1,
            "effect": "arm minus unsteered baseline, answers paired; 95% CI resamples questions",
            "native": v1,
            "mapped": v2,
            "mapped_vs_mapped_random_only": v3,
        },
    )
    qs = [r["question_id"] for r in rows_of(work / "native" / "baseline")][:4]
    samples(
        out,
        {
            "baseline": work / "native" / "baseline",
            "native": work / "native",
            "mapped": work / "mapped",
            "random-0": work / "native" / "controls" / "random-0",
            "orthogonal-0 (to mapped)": work / "mapped" / "controls" / "orthogonal-0",
            "mapped_random-0": work / "mapped_random-0",
        },
        qs,
    )
    print(f"done {time.perf_counter() - start:.0f}s", flush=True)


if __name__ == "__main__":
    main()
