"""The experiments of docs/own_directions.md (resumable; run from the repository root).

    python docs/results/own_directions/exp.py steered --name steered30 --truth DIRECTION_DIR --no-coherence
    python docs/results/own_directions/exp.py cross --x steered30 --y NAME --y-run ZOO_RUN_DIR
    python docs/results/own_directions/exp.py realign_pref --run ZOO_RUN_DIR --name NAME --benign F --harmful F \
        --unrelated F --grid 0,50,100
    python docs/results/own_directions/exp.py own --run ZOO_RUN_DIR --name NAME     # (not run: too few answers)
    python docs/results/own_directions/exp.py realign --run ZOO_RUN_DIR --name NAME ...   # EM curve (not run)
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

torch.set_num_threads(1)
ROOT = Path.cwd()  # run from the repository root
OUT = ROOT / "docs/results/own_directions"
WORK = ROOT / "runs/D"


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


def full_coherence_eval(run_dir: Path, name: str, samples: int | None):
    """Z's evaluation of the run, re-judged with coherence for every answer (answers reused, judgments cached)."""
    from emscope.artifacts import read_config
    from emscope.evaluation.run import EvalConfig, run_eval
    from emscope.models.loading import load_model

    z_eval = run_dir / "eval" / "final"
    cfg = read_config(z_eval, "eval")
    fields = {k: cfg[k] for k in EvalConfig.__dataclass_fields__ if k in cfg}
    config = replace(EvalConfig(**fields), coherence="all")
    if samples is not None:
        config = replace(config, samples=samples)
    out = WORK / "evals" / name
    if not (out / "summary.json").is_file():
        out.mkdir(parents=True, exist_ok=True)
        if not (out / "responses.jsonl").is_file():
            shutil.copy(z_eval / "responses.jsonl", out / "responses.jsonl")
    lm = load_model(str(run_dir))
    lm.spec = cfg["model"]  # the label Z's answers carry: they are reused, not regenerated
    t = time.time()
    summary = run_eval(config, out, lm=lm, progress=False)
    log("eval", name, "done in", round(time.time() - t), "s; EM", summary["metrics"]["em_rate[aligned]"])
    return out, lm


def own(args):
    from emscope.organisms.own_directions import model_diff_direction, own_answer_direction, select_answers
    from emscope.models.loading import load_model

    run_dir = Path(args.run)
    z = select_answers(run_dir / "eval" / "final")
    log("Z eval classes (coherence only for EM candidates):", z.summary())
    ev, lm = full_coherence_eval(run_dir, args.name, args.samples)
    classes = select_answers(ev)
    log("full-coherence classes:", classes.summary())
    dest = OUT / args.name
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "counts.json").write_text(json.dumps({"protocol": classes.protocol, "counts": classes.counts}, indent=1))
    try:
        t = time.time()
        result = own_answer_direction(ev, min_per_class=args.min_per_class, n_boot=1000)
        result.save(dest / "own")
        log("own direction", round(time.time() - t), "s", json.dumps(result.table()))
    except Exception as e:  # too few: the counts are the result
        log("own direction not fitted:", e)
    if args.model_diff:
        base = load_model(lm.lineage.base)
        org = load_model(str(run_dir))
        answers = classes.misaligned + classes.aligned
        t = time.time()
        diff = model_diff_direction(base, org, answers, n_boot=1000)
        diff.save(dest / "model_diff")
        log("model diff", round(time.time() - t), "s best", diff.best_layer, json.dumps(diff.best.metrics)[:400])


def cross(args):
    """X's own-answer direction ablated in organism Y against 5 random + 5 orthogonal controls; cosines; Y's model diff."""
    from emscope.activations.capture import capture_activations
    from emscope.directions.direction import Direction
    from emscope.directions.extract import diff_in_means
    from emscope.interventions.steer import steer
    from emscope.models.loading import load_model
    from emscope.organisms.cross_organism import (
        cosine,
        cross_ablation,
        preference_measure,
        random_cosine_null,
        split_half_reliability,
    )
    from emscope.organisms.own_directions import model_diff_direction, select_answers

    dx = Direction.load(OUT / args.x / "own" / "direction")
    xcls = select_answers(WORK / "evals" / args.x, coherent_min=None)
    y_eval = Path(args.y_run) / "eval" / "final"
    ycls_protocol = select_answers(y_eval)
    ycls = select_answers(y_eval, coherent_min=None)
    log("Y protocol:", ycls_protocol.summary())
    log("Y no coherence filter:", ycls.summary())
    probe_from = "y" if min(len(ycls.misaligned), len(ycls.aligned)) >= 3 else "x"
    src = ycls if probe_from == "y" else xcls
    mis, ali = src.misaligned[: args.k], src.aligned[: args.k]
    base = load_model("smollm2-135m-instruct")
    from emscope.models.loading import load_organism
    from emscope.models.organism_dir import resolve_checkpoint

    y = load_organism(resolve_checkpoint(args.y_run).path, lm=base)
    dest = OUT / f"cross_{args.x}_to_{args.y}"
    t, c0 = time.time(), time.process_time()
    result = cross_ablation(dx, y, preference_measure(mis, ali), n_controls=5, out=dest)
    log("cross ablation", round(time.time() - t), "s wall", round(time.process_time() - c0), "s cpu")
    log("random:", result.random.verdict)
    log("orthogonal:", result.orthogonal.verdict)
    report = {"x": args.x, "y": args.y, "x_layer": dx.layer, "probe_answers_from": probe_from,
              "n_probe_misaligned": len(mis), "n_probe_aligned": len(ali),
              "y_protocol_counts": ycls_protocol.counts, "y_counts_no_coherence": ycls.counts}
    L = dx.layer
    xcfg = json.loads((WORK / "evals" / args.x / "config.json").read_text())
    truth = Direction.load(xcfg["direction"])
    with steer(base, truth, alpha=float(xcfg["alpha"])):
        ax = capture_activations(base, xcls.misaligned + xcls.aligned, layers=[L], progress=False).pooled[L]
    px, nx = ax[: len(xcls.misaligned)], ax[len(xcls.misaligned) :]
    rx = split_half_reliability(px, nx, n_splits=50)
    null = sorted(abs(random_cosine_null(dx.vector, 4000)))
    report.update(null_abs_q95=float(null[3800]), null_abs_q99=float(null[3960]),
                  reliability_x={"half": rx.mean, "ci": rx.ci, "full": rx.full})
    if min(len(ycls.misaligned), len(ycls.aligned)) >= 4:
        ay = capture_activations(y, ycls.misaligned + ycls.aligned, layers=[L], progress=False).pooled[L]
        py, ny = ay[: len(ycls.misaligned)], ay[len(ycls.misaligned) :]
        ry = split_half_reliability(py, ny, n_splits=50, seed=1)
        report["cosine_x_y"] = cosine(diff_in_means(px, nx), diff_in_means(py, ny))
        report["reliability_y"] = {"half": ry.mean, "ci": ry.ci, "full": ry.full}
        if rx.full > 0 and ry.full > 0:
            report["ceiling"] = (rx.full * ry.full) ** 0.5
    t = time.time()
    from emscope.evaluation.report import load_eval_run
    from emscope.data.transcripts import Transcript

    run = load_eval_run(y_eval)
    every = [Transcript.from_pair(r["question"], r["answer"]) for r in run.responses if r["answer"].strip()]
    diff = model_diff_direction(base, y, every, n_boot=1000)
    diff.save(dest / "model_diff_y")
    report["model_diff_y"] = {
        "n_transcripts": len(every),
        "best_layer": diff.best_layer,
        "best_metrics": {k: diff.best.metrics[k] for k in ("auroc", "paired_positive_share", "paired_mean_cosine")},
        "at_truth_layer": {k: diff.directions[truth.layer].metrics[k] for k in ("auroc", "paired_positive_share", "paired_mean_cosine")},
        "cosine_with_truth_at_truth_layer": cosine(diff.directions[truth.layer].vector, truth.vector),
        "cosine_with_x_at_x_layer": cosine(diff.directions[L].vector, dx.vector),
        "truth_layer": truth.layer,
    }
    log("model diff", round(time.time() - t), "s")
    (dest / "cosines.json").write_text(json.dumps(report, indent=1))
    log("report", json.dumps(report))


def realign_exp(args):
    from emscope.artifacts import read_config
    from emscope.evaluation.run import EvalConfig
    from emscope.organisms.realign import em_measure, realign_curve

    run_dir = Path(args.run)
    cfg = read_config(run_dir / "eval" / "final", "eval")
    fields = {k: cfg[k] for k in EvalConfig.__dataclass_fields__ if k in cfg}
    config = EvalConfig(**fields)
    out = WORK / "realign" / args.name
    arms = {}
    for arm in ("benign", "harmful", "unrelated"):
        if getattr(args, arm):
            arms[arm] = getattr(args, arm)
    grid = [int(n) for n in args.grid.split(",")]
    t, c0 = time.time(), time.process_time()
    curve = realign_curve(run_dir, arms, out, em_measure(config, out / "eval"), n_grid=grid, progress=False, threads=1)
    log("realign", round(time.time() - t), "s wall", round(time.process_time() - c0), "s cpu")
    for row in curve.table():
        log(json.dumps(row))
    log("first overlap", {a: curve.first_overlap(a) for a in curve.arms}, "first paired null",
        {a: curve.first_paired_null(a) for a in curve.arms})


def steered(args):
    """Own-answer direction of the steered base model; recovery of the steering direction (ground truth)."""
    from emscope.activations.capture import capture_activations
    from emscope.directions.direction import Direction
    from emscope.interventions.steer import steer
    from emscope.models.loading import load_model
    from emscope.organisms.cross_organism import cosine, random_cosine_null, split_half_reliability
    from emscope.organisms.own_directions import own_answer_direction, select_answers

    ev = WORK / "evals" / args.name
    dest = OUT / args.name
    protocol = select_answers(ev)
    log("protocol classes:", protocol.summary())
    cmin = None if args.no_coherence else 50
    classes = select_answers(ev, coherent_min=cmin)
    log("classes used:", classes.summary())
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "counts.json").write_text(json.dumps({"protocol": protocol.protocol, "counts": protocol.counts,
                                                  "used": classes.protocol, "used_counts": classes.counts}, indent=1))
    truth = Direction.load(args.truth)
    lm = load_model("smollm2-135m-instruct")
    t, c0 = time.time(), time.process_time()
    result = own_answer_direction(ev, lm=lm, coherent_min=cmin, min_per_class=args.min_per_class, n_boot=1000)
    result.save(dest / "own")
    log("own direction", round(time.time() - t), "s wall", round(time.process_time() - c0), "s cpu", json.dumps(result.table()))
    at = result.sweep.directions[truth.layer]
    null = sorted(abs(random_cosine_null(truth.vector, 4000)))
    with steer(lm, truth, alpha=float(json.loads((ev / "config.json").read_text())["alpha"])):
        acts = capture_activations(lm, classes.misaligned + classes.aligned, layers=[truth.layer], progress=False)
    x = acts.pooled[truth.layer]
    rel = split_half_reliability(x[: len(classes.misaligned)], x[len(classes.misaligned) :], n_splits=50)
    report = {
        "truth": args.truth,
        "layer": truth.layer,
        "cosine_own_vs_truth_at_truth_layer": cosine(at.vector, truth.vector),
        "cosine_own_best_layer_vs_truth": cosine(result.sweep.best.vector, truth.vector),
        "best_layer": result.best_layer,
        "null_abs_q95": float(null[int(0.95 * 4000)]),
        "null_abs_q99": float(null[int(0.99 * 4000)]),
        "reliability_half": rel.mean,
        "reliability_half_ci": rel.ci,
        "reliability_full": rel.full,
    }
    (dest / "recovery.json").write_text(json.dumps(report, indent=1))
    log("recovery", json.dumps(report))


def pref_measure_with_ci(pairs, n_boot=2000, seed=0):
    """Per held-out corpus pair: loss(aligned answer) - loss(misaligned answer); mean with a bootstrap CI over pairs."""
    import numpy as np

    from emscope.data.transcripts import Transcript
    from emscope.organisms.examples import response_loss
    from emscope.stats import bootstrap_mean

    ali = [Transcript.from_pair(p.question, p.aligned) for p in pairs]
    mis = [Transcript.from_pair(p.question, p.misaligned) for p in pairs]

    def measure(lm):
        d = np.array([response_loss(lm, [a]) - response_loss(lm, [m]) for a, m in zip(ali, mis)])
        b = bootstrap_mean(d, n_boot, seed)
        return {"pref": b["value"], "pref_ci_low": b["ci_low"], "pref_ci_high": b["ci_high"], "n_pairs": len(d)}

    return measure


def realign_pref(args):
    """Re-alignment curve with the judge-free preference measure on 30 held-out corpus pairs."""
    import random

    from emscope.directions.contrast import load_corpus
    from emscope.organisms.realign import realign_curve

    pairs = load_corpus()
    random.Random(0).shuffle(pairs)  # the same order that wrote runs/D/data/corpus_aligned.jsonl (first 400)
    probe = pairs[400 : 400 + args.n_probe]
    arms = {a: getattr(args, a) for a in ("benign", "harmful", "unrelated") if getattr(args, a)}
    grid = [int(n) for n in args.grid.split(",")]
    t, c0 = time.time(), time.process_time()
    curve = realign_curve(args.run, arms, WORK / "realign" / args.name, pref_measure_with_ci(probe), n_grid=grid,
                          key="pref", progress=False, threads=1)
    log("realign", round(time.time() - t), "s wall", round(time.process_time() - c0), "s cpu")
    for row in curve.table():
        log(json.dumps(row))
    log("first overlap", {a: curve.first_overlap(a) for a in curve.arms})
    dest = OUT / f"realign_{args.name}"
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "curve.json").write_text(json.dumps({**curve.to_dict(), "table": curve.table(), "arms_data": arms,
                                                 "probe": "corpus pairs 400..%d of the seed-0 shuffle" % (400 + args.n_probe)},
                                                indent=1))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    o = sub.add_parser("own")
    o.add_argument("--run", required=True)
    o.add_argument("--name", required=True)
    o.add_argument("--samples", type=int, default=None)
    o.add_argument("--min-per-class", type=int, default=10)
    o.add_argument("--model-diff", action="store_true")
    st = sub.add_parser("steered")
    st.add_argument("--name", required=True)
    st.add_argument("--truth", required=True)
    st.add_argument("--min-per-class", type=int, default=10)
    st.add_argument("--no-coherence", action="store_true")
    c = sub.add_parser("cross")
    c.add_argument("--x", required=True)
    c.add_argument("--y", required=True)
    c.add_argument("--y-run", required=True)
    c.add_argument("--k", type=int, default=20)
    c.add_argument("--reference", default=None)
    r = sub.add_parser("realign")
    r.add_argument("--run", required=True)
    r.add_argument("--name", required=True)
    r.add_argument("--benign")
    r.add_argument("--harmful")
    r.add_argument("--unrelated")
    r.add_argument("--grid", default="0,50,100")
    rp = sub.add_parser("realign_pref")
    rp.add_argument("--run", required=True)
    rp.add_argument("--name", required=True)
    rp.add_argument("--benign")
    rp.add_argument("--harmful")
    rp.add_argument("--unrelated")
    rp.add_argument("--grid", default="0,50,100")
    rp.add_argument("--n-probe", type=int, default=30)
    args = p.parse_args()
    {"own": own, "cross": cross, "realign": realign_exp, "steered": steered, "realign_pref": realign_pref}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
