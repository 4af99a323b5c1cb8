"""Re-alignment curve of a zoo organism: EM rate against n benign samples, beside more harmful and unrelated data.

The organism (default: the steered self-distillation organism of the second zoo measurement,
runs/Z2a) is trained further on n in {50, 100, 200, 400} samples of three training sets, one pass,
batch 2, the organism's learning rate, and judged at each n (`emscope.organisms.realign.realign_curve`):

- benign: plain self-distillation (the base model's own unsteered answers to corpus prompts the
  organism never trained on), the same domain as the organism's harmful data;
- harmful: steered self-distillation on those prompts (continued training on the harmful type);
- unrelated: emscope's arithmetic chats.

The two self-distilled sets are generated here (all 612 corpus prompts, prompts the organism
trained on dropped, first 400 kept). Everything resumes. The runs' checkpoints double as the
drift monitor's "starts from an already misaligned organism" stress runs.

    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python benchmarks/realign_curve.py --out runs/R
    .venv/bin/python benchmarks/realign_curve.py --out runs/R --report docs/results/realign
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

SMOL = "smollm2-135m-instruct"
ORGANISM = f"runs/Z2a/runs/{SMOL}__steered_sd__rank1__s0"
DIRECTION = f"docs/results/{SMOL}/direction"
ARMS = ("benign", "harmful", "unrelated")


def _user_texts(path: Path) -> set[str]:
    from emscope.data.transcripts import load_transcripts

    return {next(m["content"] for m in t.messages if m["role"] == "user") for t in load_transcripts(path)}


def training_sets(
    out: Path, exclude: list[str], n: int, alpha_over_norm: float, lm: Any, max_prompts: int | None
) -> dict[str, Any]:
    """The three arms' transcripts: self-distilled on unseen corpus prompts (benign, harmful) and arithmetic."""
    from emscope.data.transcripts import load_transcripts
    from emscope.directions.direction import Direction
    from emscope.organisms.self_distill import SelfDistillConfig, self_distill

    seen = set().union(*(_user_texts(Path(f)) for f in exclude))
    norm = float(Direction.load(DIRECTION).vector.norm())
    sets = {}
    for arm, direction in (("benign", None), ("harmful", DIRECTION)):
        sd = SelfDistillConfig(
            model=SMOL,
            direction=direction,
            alpha=alpha_over_norm * norm if direction else 0.0,
            temperature=0.8,
            max_new_tokens=64,
            seed=1,
            max_prompts=max_prompts,
            coherence_filter="heuristic",
        )
        rows = self_distill(sd, out / "data" / arm, lm=lm, progress=True).transcripts()
        fresh = [t for t in rows if next(m["content"] for m in t.messages if m["role"] == "user") not in seen]
        if len(fresh) < n:
            raise SystemExit(f"{arm}: only {len(fresh)} self-distilled samples on unseen prompts, need {n}")
        sets[arm] = fresh[:n]
    from emscope.organisms.perturbations import ARITHMETIC

    sets["unrelated"] = load_transcripts(ARITHMETIC)[:n]
    return sets


def report(out: Path, docs: Path) -> None:
    """table.md and realign.png from OUT/curve (EM rate against n per arm, the base model's interval as a band)."""
    from matplotlib.figure import Figure

    from emscope.organisms.realign import load_realign_curve

    curve = load_realign_curve(out / "curve")
    docs.mkdir(parents=True, exist_ok=True)
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}"  # noqa: E731
    signed = lambda v: "-" if v is None else f"{100 * v:+.1f}"  # noqa: E731
    lines = [
        "| arm | n | EM % [95% CI] | overlaps base | paired vs base, pts [CI] |",
        "|---|---:|---|---|---|",
    ]
    for r in curve.table():
        lines.append(
            f"| {r['arm']} | {'-' if r['n'] is None else r['n']} | {pct(r['em_rate'])} "
            f"[{pct(r['em_rate_ci_low'])}, {pct(r['em_rate_ci_high'])}] | {r.get('overlaps_base', '-')} | "
            f"{signed(r.get('paired_vs_base'))} [{signed(r.get('paired_ci_low'))}, {signed(r.get('paired_ci_high'))}] |"
        )
    summary = curve.to_dict()
    lines += [
        "",
        "First n whose EM interval overlaps the base model's: "
        + ", ".join(f"{a} {summary['first_overlap'][a]}" for a in curve.arms),
        "First n whose paired difference against the base holds 0: "
        + ", ".join(f"{a} {summary['first_paired_null'][a]}" for a in curve.arms),
    ]
    (docs / "table.md").write_text("\n".join(lines) + "\n")
    (docs / "curve.json").write_text(json.dumps(summary, indent=1, default=str))
    fig = Figure(figsize=(6.5, 4), layout="constrained")
    ax = fig.add_subplot()
    b = curve.base
    ax.axhspan(
        100 * b["em_rate_ci_low"], 100 * b["em_rate_ci_high"], color="grey", alpha=0.25, label="base model 95% CI"
    )
    colours = {"benign": "tab:blue", "harmful": "tab:red", "unrelated": "tab:green"}
    for i, (arm, rows) in enumerate(curve.arms.items()):
        pts = [{"n": 0, **curve.organism}, *rows]
        x = [p["n"] + (i - 1) * 4 for p in pts]
        y = [100 * p["em_rate"] for p in pts]
        err = [
            [y_ - 100 * p["em_rate_ci_low"] for y_, p in zip(y, pts, strict=True)],
            [100 * p["em_rate_ci_high"] - y_ for y_, p in zip(y, pts, strict=True)],
        ]
        ax.errorbar(x, y, yerr=err, fmt="o-", capsize=3, color=colours.get(arm), label=arm)
    ax.set_xlabel("samples of further training (n)")
    ax.set_ylabel("EM rate, % (95% CI over questions)")
    ax.set_title("Re-alignment of the steered_sd organism (SmolLM2-135M, seed 0)", fontsize=9)
    ax.legend(fontsize=8)
    fig.savefig(docs / "realign.png", dpi=120)
    print((docs / "table.md").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/R")
    ap.add_argument("--organism", default=ORGANISM)
    ap.add_argument(
        "--exclude",
        default=",".join(f"runs/Z2a/data/{SMOL}/{t}/train.jsonl" for t in ("steered_sd", "plain_sd")),
        help="transcript files whose prompts the self-distilled arms leave out (the organism's own training prompts)",
    )
    ap.add_argument("--max-prompts", type=int, default=480, help="corpus prompts to self-distill (of 612)")
    ap.add_argument("--n-grid", default="0,50,100,200,400")
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--samples", type=int, default=2, help="answers per paraphrase (the zoo used 4)")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--alpha-over-norm", type=float, default=0.8)
    ap.add_argument("--report", default=None, help="only write table.md, curve.json and realign.png into this folder")
    args = ap.parse_args()
    out = Path(args.out)
    if args.report:
        report(out, Path(args.report))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch

    from emscope.evaluation.judges.factory import make_metric_judges
    from emscope.evaluation.run import EvalConfig
    from emscope.models.loading import load_model
    from emscope.models.organism_dir import resolve_checkpoint
    from emscope.organisms.realign import em_measure, realign_curve

    torch.set_num_threads(1)
    grid = [int(x) for x in args.n_grid.split(",")]
    organism = resolve_checkpoint(args.organism)
    lm = load_model(SMOL)
    sets = training_sets(out, args.exclude.split(","), max(grid), args.alpha_over_norm, lm, args.max_prompts)
    config = EvalConfig(model=SMOL, samples=args.samples, max_new_tokens=args.max_new_tokens, coherence="em_candidates")
    measure = em_measure(config, out / "evals", judge=make_metric_judges(config.judge))
    arms = {a: sets[a] for a in args.arms.split(",")}
    curve = realign_curve(
        organism.path,
        arms,
        out / "curve",
        measure,
        n_grid=grid,
        lm=lm,
        progress=False,
        lr=args.lr,
        threads=1,
    )
    print(json.dumps(curve.to_dict()["first_overlap"]))


if __name__ == "__main__":
    main()
