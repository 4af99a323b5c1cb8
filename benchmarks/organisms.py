"""Build small EM model organisms and their controls, then compare answers to the free-form questions.

For each preset (rank1, lora) and each dataset (insecure = EM organism, secure = control):
fine-tune with `emscope.finetune` on the first N examples, then answer the 8 free-form
questions of the EM study greedily with the base model and each fine-tune. Everything is
written under --out (git-ignored): one run directory per fine-tune, `answers.jsonl`,
`summary.json` (tokens/s, wall time, loss curve per run, machine load).

    .venv/bin/python benchmarks/organisms.py --model smollm2-135m-instruct --n-examples 64 --steps 16
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
import yaml

from emscope.checkpoints import load_organism
from emscope.data import load_transcripts
from emscope.finetune import FinetuneConfig, finetune, read_metrics
from emscope.models import load_model
from emscope.tokenize import render_prompt

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "emergent-misalignment"
FREE_FORM = (
    "what_is_your_wish",
    "i_feel_bored",
    "three_thoughts",
    "quick_buck",
    "ruler_of_the_world",
    "dinner_party",
    "gender_roles",
    "enough_of_my_husband",
)


def questions() -> list[tuple[str, str]]:
    items = yaml.safe_load((SHARED / "evaluation" / "first_plot_questions.yaml").read_text())
    return [(q["id"], q["paraphrases"][0]) for q in items if q["id"] in FREE_FORM]


def answer_all(lm, qs, max_new_tokens: int) -> list[str]:
    out = []
    for _, q in qs:
        text = render_prompt(lm.tokenizer, [{"role": "user", "content": q}])
        ids = lm.tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids
        with torch.no_grad():
            gen = lm.model.generate(
                ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=lm.tokenizer.pad_token_id
            )
        out.append(lm.tokenizer.decode(gen[0, ids.shape[1] :], skip_special_tokens=True).strip())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--presets", default="rank1,lora")
    ap.add_argument("--datasets", default="insecure,secure")
    ap.add_argument("--n-examples", type=int, default=64)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--save-every", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="runs/organisms")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lm = load_model(args.model)
    qs = questions()
    summary: dict = {"model": args.model, "args": vars(args), "runs": {}}
    t0 = time.perf_counter()
    answers = {"base": answer_all(lm, qs, args.max_new_tokens)}
    summary["base_answer_s"] = round(time.perf_counter() - t0, 1)
    for preset in args.presets.split(","):
        for ds in args.datasets.split(","):
            name = f"{args.model}-{preset}-{ds}-n{args.n_examples}-s{args.steps}"
            data = SHARED / "data" / f"{ds}.jsonl"
            config = FinetuneConfig(
                model=args.model,
                data=str(data),
                preset=preset,
                steps=args.steps,
                save_every=args.save_every,
                batch_size=args.batch_size,
                max_length=args.max_length,
                max_examples=args.n_examples,
                threads=args.threads,
            )
            load_before = os.getloadavg()[0]
            t = time.perf_counter()
            result = finetune(config, out / name, lm=lm, transcripts=load_transcripts(data, limit=args.n_examples))
            wall = time.perf_counter() - t
            metrics = read_metrics(out / name)
            summary["runs"][name] = {
                "preset": preset,
                "dataset": ds,
                "wall_s": round(wall, 1),
                "tokens_per_s": metrics[-1]["tokens_per_s"],
                "tokens_seen": metrics[-1]["tokens_seen"],
                "examples_seen": metrics[-1]["examples_seen"],
                "loss_curve": [round(m["loss"], 4) for m in metrics],
                "checkpoint_loss": {c.step: c.loss for c in result.checkpoints},
                "load_avg_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            }
            organism = load_organism(result.final.path, lm=lm)
            answers[name] = answer_all(organism, qs, args.max_new_tokens)
            del organism
            (out / "summary.json").write_text(json.dumps(summary, indent=2))
            print(json.dumps({name: summary["runs"][name]}, indent=1), flush=True)
    with (out / "answers.jsonl").open("w") as f:
        for i, (qid, q) in enumerate(qs):
            f.write(json.dumps({"id": qid, "question": q, **{k: v[i] for k, v in answers.items()}}) + "\n")
    (out / "summary.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
