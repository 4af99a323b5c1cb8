"""Held-out response loss of the base model and of each organism built by `benchmarks/organisms.py`.

Per-batch training loss in a one-epoch run mixes "the model learned" with "this batch was
easier"; the mean assistant-token loss on fixed held-out examples (rows --offset.. of the
insecure and secure files, never trained on) separates them. Loss on held-out insecure
code falling more for the insecure fine-tune than for the secure one is the narrow
(in-distribution) effect; it says nothing yet about emergent misalignment.

    .venv/bin/python benchmarks/organism_heldout.py --runs runs/organisms --n 8
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from emscope.checkpoints import list_checkpoints, load_organism
from emscope.data import load_transcripts
from emscope.finetune import build_examples, collate, response_loss_sum
from emscope.models import load_model

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "emergent-misalignment" / "data"


def heldout_loss(lm, examples) -> float:
    total, count = 0.0, 0
    with torch.no_grad():
        for ex in examples:
            loss, n = response_loss_sum(lm.model, collate([ex], lm.tokenizer.pad_token_id))
            total, count = total + float(loss), count + n
    return total / count


def write_answers(lm, runs: Path) -> None:
    """Greedy answers (48 tokens) of the base model and each run's final checkpoint, as in organisms.py."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from organisms import answer_all, questions

    qs = questions()
    answers = {"base": answer_all(lm, qs, 48)}
    for run in sorted(p for p in runs.iterdir() if (p / "checkpoints").is_dir()):
        answers[run.name] = answer_all(load_organism(list_checkpoints(run)[-1].path, lm=lm), qs, 48)
    with (runs / "answers.jsonl").open("w") as f:
        for i, (qid, q) in enumerate(qs):
            f.write(json.dumps({"id": qid, "question": q, **{k: v[i] for k, v in answers.items()}}) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="runs/organisms")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--offset", type=int, default=1000)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--all-checkpoints", action="store_true", help="Every checkpoint, not only the last.")
    ap.add_argument("--answers", action="store_true", help="Also answer the 8 free-form questions (final checkpoints).")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lm = load_model(args.model)
    sets = {}
    for name in ("insecure", "secure"):
        rows = load_transcripts(SHARED / f"{name}.jsonl", limit=args.offset + args.n)[args.offset :]
        sets[name], _ = build_examples(lm.tokenizer, rows, args.max_length)
    results = {"base": {k: round(heldout_loss(lm, v), 4) for k, v in sets.items()}}
    print(json.dumps({"base": results["base"]}), flush=True)
    for run in sorted(p for p in Path(args.runs).iterdir() if (p / "checkpoints").is_dir()):
        chosen = list_checkpoints(run) if args.all_checkpoints else list_checkpoints(run)[-1:]
        for ckpt in chosen:
            organism = load_organism(ckpt.path, lm=lm)
            key = f"{run.name}@{ckpt.step}" if args.all_checkpoints else run.name
            results[key] = {"step": ckpt.step, **{k: round(heldout_loss(organism, v), 4) for k, v in sets.items()}}
            print(json.dumps({key: results[key]}), flush=True)
    if args.answers:
        write_answers(lm, Path(args.runs))
    (Path(args.runs) / "heldout.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=2))


if __name__ == "__main__":
    main()
