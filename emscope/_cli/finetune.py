"""`emscope finetune` and `emscope realign`: build a FinetuneConfig and call the library."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from emscope._cli.common import friendly_errors

log = logging.getLogger(__name__)


def register(app: typer.Typer) -> None:
    app.command("finetune")(finetune_cmd)
    app.command("realign")(realign_cmd)


@friendly_errors
def finetune_cmd(
    data: Annotated[Path, typer.Option(help="Messages JSONL to train on (loss on assistant tokens only).")],
    out: Annotated[Path, typer.Option(help="Run directory; re-running on it resumes from its last checkpoint.")],
    model: Annotated[
        str, typer.Option(help="Model spec: embedded name, .gguf, directory or hub id.")
    ] = "smollm2-135m-instruct",
    preset: Annotated[str, typer.Option(help="rank1 | lora | custom | full.")] = "rank1",
    layers: Annotated[
        str | None, typer.Option(help="Layers to adapt, e.g. '4,8,12' or '2-5' (default: the preset's).")
    ] = None,
    rank: Annotated[int | None, typer.Option(help="LoRA rank (default: 1 for rank1, 32 for lora).")] = None,
    alpha: Annotated[
        float | None, typer.Option(help="LoRA alpha (default: 16 x rank for rank1, 2 x rank for lora).")
    ] = None,
    peft_config: Annotated[Path | None, typer.Option(help="JSON of LoraConfig kwargs (with --preset custom).")] = None,
    steps: Annotated[int, typer.Option(help="Optimizer steps (at most).")] = 100,
    max_tokens: Annotated[
        int | None, typer.Option(help="Token budget: stop once this many (non-padding) tokens were trained on.")
    ] = None,
    save_every: Annotated[int, typer.Option(help="Save an adapter checkpoint every K steps.")] = 25,
    batch_size: Annotated[int, typer.Option()] = 4,
    grad_accum: Annotated[int, typer.Option()] = 1,
    lr: Annotated[float | None, typer.Option(help="Learning rate (default: the preset's).")] = None,
    max_length: Annotated[int, typer.Option(help="Tokens per example (longer ones are cut).")] = 256,
    max_examples: Annotated[int | None, typer.Option(help="Use only the first N transcripts.")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    device: Annotated[str, typer.Option()] = "cpu",
    dtype: Annotated[str, typer.Option()] = "float32",
    threads: Annotated[int | None, typer.Option(help="torch CPU threads.")] = None,
    export: Annotated[Path | None, typer.Option(help="Also save the merged model (safetensors) here.")] = None,
) -> None:
    """Fine-tune a model into an organism with LoRA / rank-1 LoRA; checkpoints every K steps."""
    from emscope.organisms.checkpoints import export_merged
    from emscope.organisms.finetune import FinetuneConfig, finetune

    config = FinetuneConfig(
        model=model,
        data=str(data),
        preset=preset,
        layers=layers,
        rank=rank,
        alpha=alpha,
        peft_config=str(peft_config) if peft_config else None,
        steps=steps,
        max_tokens=max_tokens,
        save_every=save_every,
        batch_size=batch_size,
        grad_accum=grad_accum,
        lr=lr,
        max_length=max_length,
        max_examples=max_examples,
        seed=seed,
        device=device,
        dtype=dtype,
        threads=threads,
    )
    result = finetune(config, out)
    last = result.metrics[-1] if result.metrics else None
    summary = f"{len(result.checkpoints)} checkpoints in {out}/checkpoints"
    if last:
        summary += f"; step {last['step']} loss {last['loss']:.4f}, {last['tokens_per_s']:.0f} tokens/s"
    typer.echo(summary)
    if export:
        typer.echo(f"merged model: {export_merged(result.final.path, export)}")


@friendly_errors
def realign_cmd(
    organism: Annotated[Path, typer.Option(help="Organism checkpoint (or run directory = its latest checkpoint).")],
    data: Annotated[Path, typer.Option(help="Benign messages JSONL (e.g. secure code or good advice).")],
    out: Annotated[Path, typer.Option(help="Run directory of the re-alignment.")],
    questions: Annotated[
        str | None, typer.Option(help="Measure the EM rate on these questions (a .yaml/.jsonl file or 'builtin').")
    ] = None,
    judge: Annotated[str, typer.Option(help="Judge for the EM rate (as in `emscope eval`).")] = "probe:builtin",
    samples: Annotated[int, typer.Option(help="Answers per question for the EM rate.")] = 4,
    max_new_tokens: Annotated[int, typer.Option()] = 128,
    direction: Annotated[
        Path | None, typer.Option(help="Misalignment direction directory; its projection is reported.")
    ] = None,
    probe: Annotated[
        Path | None, typer.Option(help="Transcripts whose response tokens are projected on --direction.")
    ] = None,
    n_examples: Annotated[int | None, typer.Option(help="Benign examples to use (first N).")] = None,
    steps: Annotated[int, typer.Option()] = 50,
    save_every: Annotated[int, typer.Option()] = 10,
    batch_size: Annotated[int, typer.Option()] = 4,
    lr: Annotated[float | None, typer.Option()] = None,
    max_length: Annotated[int, typer.Option()] = 256,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Train an organism further on benign data; report the EM rate and/or projection after each checkpoint."""
    from emscope.data.transcripts import load_transcripts
    from emscope.directions.direction import Direction
    from emscope.errors import DataFormatError
    from emscope.evaluation.run import EvalConfig
    from emscope.organisms.realign import em_measure, projection_measure, realign

    if (direction is None) != (probe is None):
        raise DataFormatError("--direction and --probe go together: the probe transcripts are read on the direction")
    measures = []
    if questions is not None:
        config = EvalConfig(
            questions=questions, judge=judge, samples=samples, max_new_tokens=max_new_tokens, coherence="em_candidates"
        )
        measures.append(em_measure(config, out / "eval"))
    if direction is not None and probe is not None:
        measures.append(projection_measure(Direction.load(direction), load_transcripts(probe)))
    if not measures:
        raise DataFormatError("nothing to measure: pass --questions (EM rate), or --direction with --probe")

    def measure(lm: Any) -> dict[str, Any]:
        return {k: v for m in measures for k, v in m(lm).items()}

    rows = realign(
        organism,
        data,
        out,
        measure,
        n_examples=n_examples,
        steps=steps,
        save_every=save_every,
        batch_size=batch_size,
        lr=lr,
        max_length=max_length,
        seed=seed,
    )
    for row in rows:
        shown = [f"{k} {row[k]:+.4f}" for k in ("em_rate", "projection") if row.get(k) is not None]
        typer.echo(
            f"step {row['step']:>5}  examples {row['examples_seen']:>6}  loss {row['loss'] or float('nan'):.4f}  "
            + "  ".join(shown)
        )
