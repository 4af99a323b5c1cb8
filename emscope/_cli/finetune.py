"""`emscope finetune`: build a FinetuneConfig from the options and train an organism."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from emscope._cli import options as o
from emscope._cli.common import config_from
from emscope.errors import ConfigError
from emscope.monitor.live import DEFAULT_EVERY
from emscope.organisms.finetune import FinetuneConfig
from emscope.organisms.presets import PRESETS

NAME = "finetune"
EXAMPLES = (
    "emscope finetune --data examples/chats.jsonl --preset rank1 --steps 4 --save-every 2 --out runs/organism",
    "emscope finetune --data examples/chats.jsonl --preset lora --layers 10-20 --max-tokens 2000 --save-every 5 "
    "--out runs/organism-lora",
    "emscope finetune --data examples/chats.jsonl --steps 200 --monitor runs/traits --monitor-detector runs/drift/detector "
    "--monitor-stop --out runs/organism-watched",
)
PYTHON = "emscope.organisms.finetune.finetune(FinetuneConfig(data='examples/chats.jsonl', steps=4), 'runs/organism')"


def command(
    data: Annotated[Path, o.data_file("Messages JSONL to train on (loss on assistant tokens only).")],
    out: Annotated[Path, o.out_dir("Run directory; re-running on it resumes from its last checkpoint.")],
    model: o.Model = FinetuneConfig.model,
    preset: Annotated[
        str, typer.Option("--preset", help=" | ".join(PRESETS) + ".", callback=o.choice(PRESETS, "adapter preset"))
    ] = FinetuneConfig.preset,
    layers: Annotated[
        str | None,
        typer.Option(
            "--layers", help="Layers to adapt, e.g. '4,8,12' or '2-5' (default: the preset's).", callback=o.check_layers
        ),
    ] = None,
    rank: Annotated[
        int | None, o.count("--rank", "LoRA rank (default: 1 for rank1, 32 for lora).")
    ] = FinetuneConfig.rank,
    alpha: Annotated[
        float | None, typer.Option("--alpha", help="LoRA alpha (default: 16 x rank for rank1, 2 x rank for lora).")
    ] = FinetuneConfig.alpha,
    peft_config: Annotated[
        Path | None, o.data_file("JSON of LoraConfig kwargs (with --preset custom).", "--peft-config")
    ] = None,
    steps: Annotated[int, o.count("--steps", "Optimizer steps (at most).")] = FinetuneConfig.steps,
    max_tokens: Annotated[
        int | None, o.count("--max-tokens", "Token budget: stop once this many (non-padding) tokens were trained on.")
    ] = FinetuneConfig.max_tokens,
    save_every: Annotated[int, o.count("--save-every", "Save a checkpoint every K steps.")] = FinetuneConfig.save_every,
    batch_size: Annotated[int, o.count("--batch-size", "Examples per micro-batch.")] = FinetuneConfig.batch_size,
    grad_accum: Annotated[
        int, o.count("--grad-accum", "Micro-batches per optimizer step.")
    ] = FinetuneConfig.grad_accum,
    lr: Annotated[
        float | None, typer.Option("--lr", help="Learning rate (default: the preset's).")
    ] = FinetuneConfig.lr,
    max_length: Annotated[
        int, o.count("--max-length", "Tokens per example (longer ones are cut).")
    ] = FinetuneConfig.max_length,
    max_examples: Annotated[
        int | None, o.count("--max-examples", "Use only the first N transcripts.")
    ] = FinetuneConfig.max_examples,
    seed: o.Seed = FinetuneConfig.seed,
    device: o.Device = FinetuneConfig.device,
    dtype: o.Dtype = FinetuneConfig.dtype,
    threads: Annotated[int | None, o.count("--threads", "torch CPU threads.")] = FinetuneConfig.threads,
    export: Annotated[Path | None, o.out_dir("Also save the merged model (safetensors) here.", "--export")] = None,
    monitor: Annotated[
        Path | None,
        typer.Option(
            "--monitor",
            help="Watch trait drift live with this saved trait set (emscope traits fit --out DIR): OUT/monitor.jsonl.",
        ),
    ] = None,
    monitor_every: Annotated[
        int, o.count("--monitor-every", "Read the monitor every N optimizer steps.")
    ] = DEFAULT_EVERY,
    monitor_detector: Annotated[
        Path | None,
        typer.Option(
            "--monitor-detector",
            help="A drift detector (emscope drift --detector --out DIR: DIR/detector): score and alert per reading.",
        ),
    ] = None,
    monitor_stop: Annotated[
        bool, typer.Option("--monitor-stop", help="On an alert, save a resumable checkpoint and stop.")
    ] = False,
    monitor_probes: Annotated[
        Path | None,
        o.data_file("Probe set JSONL for --monitor (default: the built-in one).", "--monitor-probes"),
    ] = None,
) -> None:
    """Fine-tune a model into an organism with LoRA / rank-1 LoRA; checkpoints every K steps."""
    from emscope.organisms.checkpoints import export_merged
    from emscope.organisms.finetune import finetune

    config = config_from(
        FinetuneConfig, locals(), data=str(data), peft_config=str(peft_config) if peft_config else None
    )
    lm, watch = None, None
    if monitor is not None:
        from emscope._cli.monitor import live_monitor
        from emscope.models.loading import load_model

        watch = live_monitor(
            monitor,
            out,
            every=monitor_every,
            detector=monitor_detector,
            stop_on_alert=monitor_stop,
            probes=monitor_probes,
        )
        lm = load_model(config.model, dtype=config.dtype, device=config.device)  # what finetune would load
        watch(0, lm)  # the baseline, on the model before training (a resumed run keeps its logged one)
    elif monitor_detector is not None or monitor_stop or monitor_probes is not None:
        raise ConfigError("--monitor-detector, --monitor-stop and --monitor-probes need --monitor TRAITS_DIR")
    result = finetune(config, out, lm=lm, on_step=watch)
    last = result.metrics[-1] if result.metrics else None
    summary = f"{len(result.checkpoints)} checkpoints in {out}/checkpoints"
    if last:
        summary += f"; step {last['step']} loss {last['loss']:.4f}, {last['tokens_per_s']:.0f} tokens/s"
    typer.echo(summary)
    if watch is not None:
        from emscope._cli.monitor import monitor_summary

        typer.echo(monitor_summary(watch))
    if export:
        typer.echo(f"merged model: {export_merged(result.final.path, export)}")
