"""Overhead of the live trait monitor on fine-tuning: the same run with and without it, side by side.

One process, one model, the same data, config and number of steps for both arms; the arms
alternate (pair 1: plain first, pair 2: monitored first, ...) after a short warm-up run of each. The
monitored arm calls `TraitMonitor` as emscope's ``on_step`` hook every `--every` steps on
the whole probe set (the defaults of `emscope finetune --monitor`; `--n-probes` reads fewer); its step-0
baseline is read before the timed run, like loading the model (a one-off cost, reported).

Reported: seconds per training step (plain arm), seconds per reading, the steady-state
overhead ``reading / (every x step)``, and the measured ratios of the monitored runs to the
plain ones, in wall time and in this process's CPU time (with one thread, the latter is
hardly disturbed by other jobs on a shared machine), and both estimates at the default
interval. The trait directions are random unit vectors at `--layer` (default: the last
block, the worst case: the reading's forward pass stops after the trait layer), unless
`--traits DIR` gives a fitted trait set; the cost does not depend on the directions.

Results and what they mean: docs/results/monitor_overhead/README.md (SmolLM2 on CPU, the whole probe set:
a reading costs ~1.5 training steps, ~3% at the default interval of 50 steps).

    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python benchmarks/monitor.py --every 10 --steps 10 --pairs 1 \
        --out docs/results/monitor_overhead/smollm2_cpu_64probes.json
    .venv/bin/python benchmarks/monitor.py --model tiny:llama --every 2 --steps 4     # seconds; a smoke test
    python benchmarks/monitor.py --model random:llama:32:4096 --device cuda --dtype bfloat16 --threads 0 \
        --every 50 --steps 200 --pairs 2 --noop-arm       # a random-init ~8B model on a GPU
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from emscope.data.transcripts import Transcript, load_transcripts
from emscope.monitor.live import DEFAULT_EVERY, TraitMonitor, probe_subset, read_monitor_log
from emscope.monitor.projections import load_probe_set
from emscope.monitor.traits import BUILTIN_TRAITS, TraitSet
from emscope.organisms.finetune import FinetuneConfig, finetune, read_metrics

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "emergent-misalignment" / "data" / "insecure.jsonl"


def load(spec: str, device: str, dtype: str) -> Any:
    """An embedded/hub model, ``tiny:FAMILY`` or ``random:FAMILY:LAYERS:WIDTH`` (random init, tiny tokenizer).

    A random model has 64-dim heads (width/64 of them, about a third as many key/value heads) and an MLP
    4x the width; its vocabulary is the tiny tokenizer's 400, so its output layer costs next to nothing in
    training, as it does in a reading (which skips it): the measured overhead is an upper bound for a
    real model of that size.
    """
    if spec.startswith(("tiny:", "random:")):
        from transformers import AutoModelForCausalLM

        from emscope.models.loading import LoadedModel
        from emscope.testing import tiny_config, tiny_model, tiny_tokenizer

        family, *size = spec.split(":")[1:]
        if spec.startswith("tiny:"):
            lm = tiny_model(family)
        else:
            layers, width = (int(x) for x in size)
            tok = tiny_tokenizer()
            config = tiny_config(family, layers, width, len(tok), tok.eos_token_id, tok.pad_token_id)
            heads = width // 64
            kv = next(d for d in range(max(1, heads // 3), 0, -1) if heads % d == 0)
            config.update({"num_attention_heads": heads, "num_key_value_heads": kv, "head_dim": 64})
            config.update({"intermediate_size": 4 * width})
            torch.manual_seed(0)
            with torch.device(device):  # initialised where it runs: a 7B model in seconds on a GPU
                model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
            lm = LoadedModel(model=model, tokenizer=tok, spec=spec, source="random-init")
        lm.model.to(device=device, dtype=getattr(torch, dtype))
        return lm
    from emscope.models.loading import load_model

    return load_model(spec, device=device, dtype=dtype)


def trait_set(lm: Any, args: argparse.Namespace) -> TraitSet:
    if args.traits:
        return TraitSet.load(args.traits)
    layer = lm.n_layers - 1 if args.layer is None else args.layer
    d = torch.randn(len(BUILTIN_TRAITS), lm.width, generator=torch.Generator().manual_seed(0))
    return TraitSet(BUILTIN_TRAITS, layer, d / d.norm(dim=1, keepdim=True), model=lm.spec, lineage=lm.lineage)


def one_run(
    lm: Any, data: list[Transcript], config: FinetuneConfig, arm: str, watch: Callable[[Path], TraitMonitor]
) -> dict[str, Any]:
    """One fine-tuning run in a fresh directory and its timings; `arm`: plain (no hook), noop (a hook that does
    nothing: what the loop's hook call costs by itself) or monitored (a new `watch(log_path)`)."""
    with tempfile.TemporaryDirectory() as tmp:
        monitor: Any = None
        baseline_s = 0.0
        if arm == "noop":
            monitor = _noop
        elif arm == "monitored":
            monitor = watch(Path(tmp) / "monitor.jsonl")
            t = time.perf_counter()
            monitor(0, lm)  # the baseline: before training, like loading the model
            baseline_s = time.perf_counter() - t
        t, cpu = time.perf_counter(), time.process_time()
        finetune(config, Path(tmp) / "run", lm=lm, transcripts=data, progress=False, on_step=monitor)
        wall, cpu = time.perf_counter() - t, time.process_time() - cpu
        steps = read_metrics(Path(tmp) / "run")
        rows = read_monitor_log(monitor.path) if arm == "monitored" else []
    readings = [r["seconds"] for r in rows if not r.get("baseline")]
    return {
        "arm": arm,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),  # this process's CPU time: less disturbed than wall time on a shared machine
        "steps": len(steps),
        "tokens": steps[-1]["tokens_seen"],
        "baseline_s": round(baseline_s, 3),
        "readings": len(readings),
        "reading_s": readings,
    }


def _noop(step: int, lm: Any, row: dict[str, Any]) -> None:
    return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--data", default=str(SHARED if SHARED.is_file() else ROOT / "examples" / "chats.jsonl"))
    p.add_argument("--traits", default=None, help="A fitted trait set (default: random directions at --layer).")
    p.add_argument("--layer", type=int, default=None, help="Trait layer of the random set (default: the last).")
    p.add_argument("--probes", default=None, help="Probe set JSONL (default: the built-in one).")
    p.add_argument("--n-probes", type=int, default=None, help="Read only this many probes (default: all).")
    p.add_argument("--every", type=int, default=DEFAULT_EVERY)
    p.add_argument("--steps", type=int, default=None, help="Steps per run (default: --every: one reading a run).")
    p.add_argument("--pairs", type=int, default=1, help="With/without pairs, alternating which runs first.")
    p.add_argument("--preset", default="rank1")
    p.add_argument("--batch-size", type=int, default=FinetuneConfig.batch_size)
    p.add_argument("--max-length", type=int, default=FinetuneConfig.max_length)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: leave torch's setting).")
    p.add_argument("--noop-arm", action="store_true", help="Also runs with a hook that does nothing.")
    p.add_argument("--out", default=None, help="Write the result JSON here.")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    steps = args.steps or args.every
    lm = load(args.model, args.device, args.dtype)
    data = load_transcripts(args.data)[: steps * args.batch_size * 2]
    traits = trait_set(lm, args)
    probes = probe_subset(load_probe_set(args.probes), args.n_probes)
    config = FinetuneConfig(
        model=lm.spec,
        preset=args.preset,
        steps=steps,
        save_every=max(steps, 1),
        batch_size=args.batch_size,
        max_length=args.max_length,
        device=args.device,
        dtype=args.dtype,
        seed=0,
    )

    def watch(path: Path) -> TraitMonitor:
        return TraitMonitor(traits, probes, path, every=args.every)

    arms = ["plain", "monitored", *(["noop"] if args.noop_arm else [])]
    for arm in arms:
        one_run(lm, data, replace(config, steps=1, save_every=1), arm, watch)  # warm-up
    runs = []
    for i in range(args.pairs):
        for arm in arms if i % 2 == 0 else arms[::-1]:
            runs.append(one_run(lm, data, config, arm, watch))
            print(json.dumps({k: v for k, v in runs[-1].items() if k != "reading_s"}), flush=True)
    plain = [r for r in runs if r["arm"] == "plain"]
    watched = [r for r in runs if r["arm"] == "monitored"]
    noop = [r for r in runs if r["arm"] == "noop"]
    step_s = sum(r["wall_s"] for r in plain) / sum(r["steps"] for r in plain)
    readings = [s for r in watched for s in r["reading_s"]]
    reading_s = sum(readings) / max(len(readings), 1)
    cpu_step_s = sum(r["cpu_s"] for r in plain) / sum(r["steps"] for r in plain)
    extra_cpu = sum(r["cpu_s"] for r in watched) - cpu_step_s * sum(r["steps"] for r in watched)
    cpu_reading_s = extra_cpu / max(len(readings), 1)
    result = {
        "model": lm.spec,
        "device": args.device,
        "dtype": args.dtype,
        "threads": torch.get_num_threads(),
        "data": args.data,
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "preset": args.preset,
        "steps_per_run": steps,
        "pairs": args.pairs,
        "every": args.every,
        "n_probes": len(probes),
        "trait_layer": traits.layer,
        "n_layers": lm.n_layers,
        "step_s": round(step_s, 3),
        "reading_s": round(reading_s, 3),
        "baseline_s": round(sum(r["baseline_s"] for r in watched) / len(watched), 3),
        "steady_state_overhead": round(reading_s / (args.every * step_s), 4),
        # the same at emscope's default interval, from wall time and from this process's CPU time per reading
        "default_every": DEFAULT_EVERY,
        "overhead_at_default_every": round(reading_s / (DEFAULT_EVERY * step_s), 4),
        "cpu_overhead_at_default_every": round(cpu_reading_s / (DEFAULT_EVERY * cpu_step_s), 4),
        "wall_ratio": round(sum(r["wall_s"] for r in watched) / sum(r["wall_s"] for r in plain), 4),
        "cpu_ratio": round(sum(r["cpu_s"] for r in watched) / sum(r["cpu_s"] for r in plain), 4),
        "noop_hook_wall_ratio": round(sum(r["wall_s"] for r in noop) / sum(r["wall_s"] for r in plain), 4)
        if noop
        else None,
        "runs": runs,
    }
    print(
        f"{lm.spec} on {args.device}: {step_s:.2f} s/step (batch {args.batch_size}, <= {args.max_length} tokens); "
        f"a reading of {len(probes)} probes at layer {traits.layer}/{lm.n_layers}: {reading_s:.2f} s; "
        f"every {args.every} steps: steady-state overhead {100 * result['steady_state_overhead']:.1f}% "
        f"(every {DEFAULT_EVERY}: {100 * result['overhead_at_default_every']:.1f}% by wall time, "
        f"{100 * result['cpu_overhead_at_default_every']:.1f}% by CPU time), "
        f"measured monitored/plain wall ratio {result['wall_ratio']:.3f}, CPU-time ratio {result['cpu_ratio']:.3f} "
        f"({args.pairs} pair(s) of {steps} steps)"
        + (f"; a hook that does nothing: wall ratio {result['noop_hook_wall_ratio']:.3f}" if noop else "")
    )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
