"""Directions from one zoo organism ablated in another, against controls; cosines between organisms' directions.

Y is an organism with misalignment known by reading (default: the Qwen2.5-Coder-0.5B steered self-distillation
organism of docs/zoo.md). Each X is another organism of the same base model (another training dataset). For
every organism O (Y included) the model-diff direction at one layer: O's activations minus the base's on the
same transcripts (Y's own evaluation answers; `emscope.organisms.own_directions.model_diff_direction`). Then:

- ablation: X's direction projected out of Y at every layer against 5 random and 5 orthogonal norm-matched
  directions (`emscope.organisms.cross_organism.cross_ablation`); the measure is judge-free: Y's preference
  for its own misaligned answers over its aligned ones (nats/token, teacher-forced; `preference_measure`).
  The EM rate under the same ablation is one `emscope eval --intervention ablate --n-controls 5` (printed).
- cosines: X's and Y's directions against the random null and each direction's split-half reliability
  (`direction_cosine`).
- references: Y's own model-diff direction and the base model's contrast direction (`--truth`, the one
  Y's training data was steered along) ablated the same way.

    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python benchmarks/cross_organism.py \\
        --y runs/Q/runs/qwen2.5-coder-0.5b-instruct__steered_sd__rank1__s0 \\
        --x runs/Qt/runs/qwen2.5-coder-0.5b-instruct__insecure__rank1__s0 \\
        --x runs/Qt/runs/qwen2.5-coder-0.5b-instruct__secure__rank1__s0 \\
        --truth docs/results/qwen2.5-coder-0.5b-instruct/direction --out runs/X --docs docs/results/zoo/cross
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from emscope.activations.capture import capture_activations
from emscope.data.transcripts import Transcript
from emscope.directions.direction import Direction
from emscope.directions.sweep import SweepResult
from emscope.evaluation.report import load_eval_run
from emscope.models.loading import load_model, load_organism
from emscope.models.organism_dir import resolve_checkpoint
from emscope.organisms.cross_organism import cosine, cross_ablation, direction_cosine, preference_measure
from emscope.organisms.own_directions import model_diff_direction, select_answers

log = logging.getLogger("cross_organism")
N_CONTROLS = 5


def short_name(run: Path) -> str:
    """``model__type__preset__sN`` -> ``type_sN`` (a zoo run's directory name; ``type_preset_sN`` past rank1)."""
    parts = run.name.split("__")
    if len(parts) != 4:
        return run.name
    return f"{parts[1]}_{parts[3]}" if parts[2] == "rank1" else f"{parts[1]}_{parts[2]}_{parts[3]}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--y", required=True, help="the organism ablated (a zoo run with eval/final)")
    ap.add_argument("--x", action="append", required=True, help="an organism whose direction is ablated in Y")
    ap.add_argument("--truth", default=None, help="the base model's contrast direction (a reference target)")
    ap.add_argument("--layer", type=int, default=None, help="the layer of the directions (default: --truth's)")
    ap.add_argument("--max-aligned", type=int, default=40, help="Y's aligned answers read by the measure, at most")
    ap.add_argument("--out", default="runs/X")
    ap.add_argument("--docs", default=None, help="write report.json and report.md here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    truth = Direction.load(args.truth) if args.truth else None
    layer = args.layer if args.layer is not None else (truth.layer if truth else None)
    if layer is None:
        raise SystemExit("pass --layer (or --truth, whose layer is used)")

    y_run = Path(args.y)
    y_eval = y_run / "eval" / "final"
    ckpt = resolve_checkpoint(y_run)
    base = load_model(ckpt.base_model)
    classes = select_answers(y_eval, coherent_min=None)  # em_candidates evals: aligned answers have no coherence
    mis, ali = classes.misaligned, classes.aligned[: args.max_aligned]
    log.info("Y's answers: %d misaligned, %d aligned read (%s)", len(mis), len(ali), classes.counts)
    transcripts = [Transcript.from_pair(r["question"], r["answer"]) for r in load_eval_run(y_eval).responses
                   if r["answer"].strip()]  # fmt: skip
    base_acts = capture_activations(base, transcripts, layers=[layer], progress=False).pooled[layer]

    organisms = {"Y": y_run, **{short_name(Path(x)): Path(x) for x in args.x}}
    acts: dict[str, torch.Tensor] = {}
    directions: dict[str, Direction] = {}
    diff_info: dict[str, Any] = {}
    for name, run in organisms.items():
        lm = load_organism(resolve_checkpoint(run).path, lm=base)
        saved = out / name / "model_diff"
        acts[name] = capture_activations(lm, transcripts, layers=[layer], progress=False).pooled[layer]
        if not (saved / "config.json").is_file():
            model_diff_direction(base, lm, transcripts, layers=[layer], n_boot=500,
                                 base_activations={layer: base_acts}, organism_activations={layer: acts[name]}
                                 ).save(saved)  # fmt: skip
        directions[name] = SweepResult.load(saved).directions[layer]
        if not (out / name / "direction" / "config.json").is_file():
            directions[name].save(out / name / "direction")  # for `emscope eval --intervention ablate`
        d = directions[name]
        diff_info[name] = {"run": str(run), "norm": float(d.vector.norm()),
                           **{k: d.metrics.get(k) for k in ("auroc", "paired_positive_share", "paired_mean_cosine")}}  # fmt: skip
        if truth is not None:
            diff_info[name]["cosine_with_truth"] = cosine(d.vector.double(), truth.vector.double())
        del lm

    cosines = {n: direction_cosine(acts[n], base_acts, acts["Y"], base_acts).to_dict() for n in organisms if n != "Y"}
    report = {"y": str(y_run), "layer": layer, "n_transcripts": len(transcripts),
              "y_answers": {"misaligned": len(mis), "aligned": len(ali), "counts": classes.counts},
              "model_diff": diff_info, "cosine_with_y": cosines, "ablation": {}}  # fmt: skip
    write_report(report, out, args.docs)
    y = load_organism(ckpt.path, lm=base)
    measure = preference_measure(mis, ali)
    xs = [n for n in organisms if n != "Y"]
    # (results folder, label, direction): the first X, then the references, then the other X
    targets = [(xs[0], f"{xs[0]} model diff", directions[xs[0]])]
    if truth is not None:
        targets.append(("truth", "base contrast direction (truth)", truth))
    targets.append(("y", "Y's own model diff", directions["Y"]))
    targets += [(n, f"{n} model diff", directions[n]) for n in xs[1:]]
    for key, label, d in targets:  # the report is rewritten after each, so a stopped run keeps what it measured
        t = time.time()
        r = cross_ablation(d, y, measure, n_controls=N_CONTROLS, out=out / f"ablate_{key}")
        report["ablation"][label] = r.to_dict()
        log.info("%s: effect %+.3f; random %s; orthogonal %s (%.0f s)", label, r.effect, r.random.verdict,
                 r.orthogonal.verdict, time.time() - t)  # fmt: skip
        write_report(report, out, args.docs)
    print(markdown(report))
    for n in organisms:
        if n != "Y":
            print(f"EM under ablation of {n}'s direction: emscope eval --model {y_run} --intervention ablate "
                  f"--direction {out / n / 'direction'} --n-controls 5 --samples 4 "
                  f"--max-new-tokens 64 --coherence em_candidates --out {out / ('em_ablate_' + n)}")  # fmt: skip


def write_report(report: dict[str, Any], out: Path, docs: str | None) -> None:
    """report.json and report.md into `out` (and `docs`)."""
    for where in [out] + ([Path(docs)] if docs else []):
        where.mkdir(parents=True, exist_ok=True)
        (where / "report.json").write_text(json.dumps(report, indent=1, default=str))
        (where / "report.md").write_text(markdown(report))


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"Y = {report['y']}, layer {report['layer']}; measure: Y's preference for its {report['y_answers']['misaligned']}"
        f" misaligned over {report['y_answers']['aligned']} aligned answers (nats/token; ablation lowers it when it"
        " removes what makes those answers likely)",
        "",
        "| direction ablated in Y | Y unablated | ablated | effect | random controls' effects | orthogonal controls'"
        f" effects | z among random / orthogonal | outside all {2 * N_CONTROLS} controls |",
        "|---|---:|---:|---:|---|---|---|---|",
    ]
    for label, r in report["ablation"].items():
        rnd = [v - r["baseline"] for k, v in r["controls"].items() if k.startswith("random:")]
        orth = [v - r["baseline"] for k, v in r["controls"].items() if k.startswith("orthogonal:")]
        lines.append(
            f"| {label} | {r['baseline']:+.3f} | {r['target']:+.3f} | **{r['effect']:+.3f}** | "
            f"{min(rnd):+.3f} .. {max(rnd):+.3f} | {min(orth):+.3f} .. {max(orth):+.3f} | "
            f"{r['random']['z']:+.1f} / {r['orthogonal']['z']:+.1f} | "
            f"{'yes' if not min(rnd + orth) <= r['effect'] <= max(rnd + orth) else 'no'} |"
        )
    lines += ["", "| X | cosine(X, Y) model diff | null 95th/99th pct of abs cos | reliability X / Y (full) | ceiling |"
              " cosine / ceiling | cosine with truth (X) |", "|---|---:|---|---|---:|---:|---:|"]  # fmt: skip
    for n, c in report["cosine_with_y"].items():
        truth = report["model_diff"][n].get("cosine_with_truth")
        lines.append(
            f"| {n} | {c['cosine']:.3f} | {c['null_abs_q95']:.3f} / {c['null_abs_q99']:.3f} | "
            f"{c['reliability_x_full']:.2f} / {c['reliability_y_full']:.2f} | {c['ceiling']:.2f} | "
            f"{c['relative']:.2f} | {'' if truth is None else f'{truth:.3f}'} |"
        )
    y_truth = report["model_diff"]["Y"].get("cosine_with_truth")
    if y_truth is not None:
        lines += ["", f"cosine(Y's model diff, truth) = {y_truth:.3f}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
