"""Fine-tuning throughput: emscope's loop vs TRL's SFTTrainer, rank-1 and rank-32 presets.

Both train the same PEFT LoraConfig on the same examples (loss on the assistant reply only;
TRL gets them as conversational prompt/completion pairs), with the same batch size,
sequence length, learning rate and number of steps. tokens/s counts the non-padding tokens
of the optimizer steps after the first (warm-up) one. TRL is optional: if it is not
installed or does not run offline, the script says so and reports emscope alone.

    .venv/bin/python benchmarks/finetune.py --models smollm2-135m-instruct --presets rank1,lora --steps 4
    .venv/bin/python benchmarks/finetune.py --models tiny:llama --steps 3      # seconds; a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from emscope.data.transcripts import load_transcripts
from emscope.organisms.finetune import FinetuneConfig, finetune, read_metrics
from emscope.organisms.presets import AdapterOptions, build_adapter_config, get_preset

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "emergent-misalignment" / "data"


def load(spec: str):
    if spec.startswith("tiny:"):
        from emscope.testing import tiny_model

        return tiny_model(spec.split(":", 1)[1])
    from emscope.models.loading import load_model

    return load_model(spec)


def run_emscope(lm, transcripts, preset: str, args) -> dict:
    config = FinetuneConfig(
        model=lm.spec,
        preset=preset,
        steps=args.steps,
        save_every=args.steps,
        batch_size=args.batch_size,
        max_length=args.max_length,
        threads=args.threads,
    )
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        finetune(config, tmp, lm=lm, transcripts=transcripts, progress=False)
        wall = time.perf_counter() - t
        m = read_metrics(tmp)
    later = m[1:] or m
    dt = later[-1]["elapsed_s"] - (m[0]["elapsed_s"] if len(m) > 1 else 0.0)
    tokens = later[-1]["tokens_seen"] - (m[0]["tokens_seen"] if len(m) > 1 else 0)
    return {
        "tokens_per_s": round(tokens / max(dt, 1e-9), 1),
        "wall_s": round(wall, 1),
        "step_s": round(dt / len(later), 2),
        "losses": [round(r["loss"], 4) for r in m],
    }


def run_trl(lm, transcripts, preset: str, args) -> dict:
    try:
        from datasets import Dataset
        from peft import get_peft_model
        from transformers import TrainerCallback
        from trl import SFTConfig, SFTTrainer
    except ImportError as e:
        return {"skipped": f"TRL not usable here ({e}); pip install trl"}
    rows = []
    for t in transcripts:
        msgs = list(t.messages)
        k = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
        rows.append({"prompt": msgs[:k], "completion": msgs[k : k + 1]})
    peft_config = build_adapter_config(lm, preset, AdapterOptions())
    flags = [p.requires_grad for p in lm.model.parameters()]
    model = get_peft_model(lm.model, peft_config)
    stamps: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, *a, **kw):
            stamps.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as tmp:
        sft = SFTConfig(
            output_dir=tmp,
            max_length=args.max_length,
            per_device_train_batch_size=args.batch_size,
            max_steps=args.steps,
            learning_rate=get_preset(preset).default_lr,
            lr_scheduler_type="constant",
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            use_cpu=True,
            seed=0,
            dataloader_num_workers=0,
            bf16=False,
            fp16=False,
            padding_free=False,
            gradient_checkpointing=False,  # TRL defaults to True; emscope's loop does not checkpoint
        )
        try:
            trainer = SFTTrainer(
                model=model,
                args=sft,
                train_dataset=Dataset.from_list(rows),
                processing_class=lm.tokenizer,
                callbacks=[Clock()],
            )
            t = time.perf_counter()
            trainer.train()
            wall = time.perf_counter() - t
        except Exception as e:  # noqa: BLE001 - report why TRL did not run, keep the emscope numbers
            model.unload()
            return {"skipped": f"TRL failed: {type(e).__name__}: {str(e)[:300]}"}
        logs = [r for r in trainer.state.log_history if "loss" in r]
    model.unload()
    for p, flag in zip(lm.model.parameters(), flags, strict=True):
        p.requires_grad_(flag)
    # TRL logs the cumulative non-padding tokens at every step (logging_steps=1)
    tokens = [float(r["num_tokens"]) for r in logs]
    n = max(len(stamps) - 1, 1)
    dt = stamps[-1] - stamps[0] if len(stamps) > 1 else wall
    done = tokens[-1] - tokens[0] if len(tokens) > 1 else tokens[-1]
    losses = [round(float(r["loss"]), 4) for r in logs]
    return {
        "tokens_per_s": round(done / max(dt, 1e-9), 1),
        "wall_s": round(wall, 1),
        "step_s": round(dt / n, 2),
        "losses": losses,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="smollm2-135m-instruct")
    ap.add_argument("--presets", default="rank1,lora")
    ap.add_argument("--data", default=str(SHARED / "insecure.jsonl"))
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-trl", action="store_true")
    ap.add_argument("--only-trl", action="store_true", help="Skip emscope's loop (e.g. to re-measure TRL alone).")
    ap.add_argument("--out", default=None, help="Write the results as JSON here.")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    for spec in args.models.split(","):
        lm = load(spec)
        if spec.startswith("tiny:"):
            from emscope.data.transcripts import Transcript

            transcripts = [
                Transcript.from_pair(f"Question {i}?", "Sure! Here is a helpful and honest answer.")
                for i in range(args.steps * args.batch_size)
            ]
        else:
            transcripts = load_transcripts(args.data, limit=args.steps * args.batch_size * 2)
        for preset in args.presets.split(","):
            row = {
                "model": spec,
                "preset": preset,
                "threads": torch.get_num_threads(),
                "load_avg_1min": round(os.getloadavg()[0], 2),
            }
            if not args.only_trl:
                row["emscope"] = run_emscope(lm, transcripts, preset, args)
            if not args.no_trl:
                row["trl"] = run_trl(lm, transcripts, preset, args)
            results.append(row)
            print(json.dumps(row), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))


if __name__ == "__main__":
    main()
