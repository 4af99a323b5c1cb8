"""Judged behaviour under latent steering (issue 13): the top diff latent's decoder direction against controls.

SmolLM2 is steered at the SAE's layer along the unit decoder row of one latent (default: latent 39 of
`runs/A/sae-topk-e2`, the top latent of the steered self-distillation diff, which the organism *lost*;
a negative alpha removes it as the organism did), beside >= 3 frequency-matched latents (the latents whose
base firing rate is closest to its own, among those whose decoder lies no closer to the misalignment
direction than the random-latent null's 95th percentile, so that the controls are not themselves
misalignment latents) and 5 random + 5 orthogonal norm-matched directions. Every arm answers the same
free-form questions with the same sampling seeds; the judge (`probe:builtin`) scores alignment and
coherence of every answer; effects are arm minus the unsteered baseline, answers paired, 95% CI over
questions, with the specificity verdict against the controls.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sae_judged.py --sae runs/A/sae-topk-e2 \
        --diff docs/results/sae/diff-steered_sd --work runs/E/sae-judged --out docs/results/sae/judged

Resumable: run the same command again. Writes to --out: questions.jsonl, directions/, effects.csv,
arms.csv, verdicts.json, samples.md.
"""

from __future__ import annotations

import argparse
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
from emscope.sae.diff import LatentDiff
from emscope.sae.intervene import frequency_matched
from emscope.sae.model import load_sae


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sae", type=Path, default=Path("runs/A/sae-topk-e2"))
    ap.add_argument("--diff", type=Path, default=Path("docs/results/sae/diff-steered_sd"))
    ap.add_argument("--latent", type=int, default=None, help="default: the diff's top latent")
    ap.add_argument("--direction", type=Path, default=Path("docs/results/sae/direction-l15"))
    ap.add_argument("--null-pct", type=float, default=95.0, help="matched latents: |cos| below this percentile")
    ap.add_argument("--n-matched", type=int, default=3)
    ap.add_argument("--alpha", type=float, default=-24.0)
    ap.add_argument("--every", type=int, default=2, help="every N-th built-in question (first paraphrase)")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument(
        "--temperature", type=float, default=0.0, help="0: greedy (SmolLM2 sampled at 1.0 is mostly incoherent)"
    )
    ap.add_argument("--n-controls", type=int, default=5)
    ap.add_argument("--judge", default="probe:builtin")
    ap.add_argument("--baseline-from", type=Path, default=Path("runs/E/transfer-judged-t0/native/baseline"))
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    out, work, n = args.out, args.work, args.n_controls
    out.mkdir(parents=True, exist_ok=True)
    sae = load_sae(args.sae)
    diff = LatentDiff.load(args.diff)
    latent = diff.ranking[0] if args.latent is None else args.latent
    mis = Direction.load(args.direction)
    unit = mis.vector.float() / mis.vector.float().norm()
    dec = sae.W_dec.detach().float().cpu()
    cos = (dec / dec.norm(dim=1, keepdim=True)) @ unit
    bar = float(torch.quantile(cos.abs(), args.null_pct / 100))
    rates = diff.rate_base.clone().float()
    keep = rates[latent].item()
    rates[cos.abs() >= bar] = 0.0  # frequency_matched skips latents of rate 0
    rates[latent] = keep
    matched = frequency_matched(rates, latent, args.n_matched)
    dirs = out / "directions"
    names = [f"latent-{latent}"] + [f"latent-{i}" for i in matched]
    for name, i in zip(names, [latent, *matched], strict=True):
        if not (dirs / name / "config.json").exists():
            sae.decoder_direction(i).save(dirs / name)
    questions = question_subset(out / "questions.jsonl", every=args.every)
    base = EvalConfig(
        model=str(sae.model),
        questions=str(questions),
        judge=args.judge,
        samples=1,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        alpha=args.alpha,
        layers=str(sae.layer),
        coherence="all",
    )
    lm = emscope.load_model(str(sae.model))
    judges = make_metric_judges(args.judge)
    rate = float(diff.rate_base[latent])
    print(f"latent {latent} (rate {rate:.3f}, cos {float(cos[latent]):+.3f}); matched {matched}", flush=True)
    seed_answers(args.baseline_from, work / "target" / "baseline")
    evaluate(base, str(dirs / names[0]), work / "target", lm, judges, n)
    print(f"target done {time.perf_counter() - start:.0f}s", flush=True)
    for name in names[1:]:
        evaluate(base, str(dirs / name), work / name, lm, judges)
    print(f"matched done {time.perf_counter() - start:.0f}s", flush=True)

    base_rows = rows_of(work / "target" / "baseline")
    ctl = {
        **{name: ("latent", rows_of(work / name)) for name in names[1:]},
        **controls_of(work / "target", n),
    }
    t1, v1 = effects(names[0], base_rows, rows_of(work / "target"), ctl)
    t2, v2 = effects(
        f"{names[0]}_vs_latents_only",
        base_rows,
        rows_of(work / "target"),
        {k: v for k, v in ctl.items() if v[0] == "latent"},
    )
    arms = [arm_summary("baseline", "none", base_rows), arm_summary(names[0], "target", rows_of(work / "target"))]
    arms += [arm_summary(k, kind, r) for k, (kind, r) in ctl.items()]
    write_tables(out, t1 + t2, arms)
    report(out, {names[0]: v1, f"{names[0]} (latents only)": v2}, arms)
    atomic_write_json(
        out / "verdicts.json",
        {
            "sae": str(args.sae),
            "diff": str(args.diff),
            "latent": latent,
            "latent_rate_base": rate,
            "latent_cos_with_direction": float(cos[latent]),
            "matched": {f"latent-{i}": {"rate_base": float(diff.rate_base[i]), "cos": float(cos[i])} for i in matched},
            "matched_rule": f"closest base firing rate among latents with |cos| < {bar:.3f} (pct {args.null_pct})",
            "layer": sae.layer,
            "alpha": args.alpha,
            "judge": args.judge,
            "questions": str(questions),
            "max_new_tokens": args.max_new_tokens,
            "temperature": args.temperature,
            "samples": 1,
            "effect": "arm minus unsteered baseline, answers paired; 95% CI resamples questions",
            "target": v1,
            "target_vs_latents_only": v2,
        },
    )
    qs = [r["question_id"] for r in base_rows][:4]
    arms_md = {"baseline": work / "target" / "baseline", names[0]: work / "target", names[1]: work / names[1]}
    arms_md |= {"random-0": work / "target" / "controls" / "random-0"}
    samples(out, arms_md, qs)
    print(f"done {time.perf_counter() - start:.0f}s", flush=True)


if __name__ == "__main__":
    main()
