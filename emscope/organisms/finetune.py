"""Supervised fine-tuning on chat transcripts, loss on assistant tokens only, through PEFT.

A plain PyTorch loop, so that resuming is exact: the data order is a function of the
seed and the step alone (a fresh permutation per epoch), and a checkpoint holds the
adapter, the optimizer and scheduler state and the RNG state. Re-running `finetune` on a
run directory continues from its latest checkpoint and gives the same adapter as an
uninterrupted run; it may also extend a finished run to more `steps`. The trainer state
is stored as safetensors + JSON, never as a pickle, so resuming a run directory someone
else wrote runs no code from it.

The pieces: `emscope.organisms.examples` (tokenized examples, order, batches, loss),
`emscope.organisms.training_loop` (the loop and its ``on_step(step, lm, row)`` hook),
`emscope.organisms.checkpoints` (writing checkpoints and the trainer state).

Defaults fit a 2-core CPU and the embedded models (fp32, sequence length 256, batch 4).
For a 7B model on one GPU: ``device="cuda", dtype="bfloat16", batch_size=2,
grad_accum=8, max_length=1024`` (rank-1 or rank-32 adapters fit in 24 GB at that length).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from emscope.artifacts import read_config, write_config
from emscope.data.transcripts import Transcript, as_transcripts, fingerprint
from emscope.errors import ArtifactError, DataFormatError, require
from emscope.models.embedded import DEFAULT_MODEL
from emscope.models.organism_dir import RUN_KIND, Checkpoint, list_checkpoints, read_metrics, resolve_checkpoint
from emscope.organisms.checkpoints import check_no_pickled_state
from emscope.organisms.examples import (
    IGNORE_INDEX,
    Example,
    build_examples,
    collate,
    example_order,
    response_loss,
    response_loss_sum,
)
from emscope.organisms.presets import AdapterOptions, build_adapter_config, get_preset
from emscope.organisms.training_loop import StepHook, train_loop
from emscope.runtime import set_seed

__all__ = [  # the examples' names stay importable from here
    "IGNORE_INDEX",
    "Example",
    "FinetuneConfig",
    "FinetuneResult",
    "StepHook",
    "build_examples",
    "collate",
    "example_order",
    "finetune",
    "read_metrics",
    "response_loss",
    "response_loss_sum",
]
log = logging.getLogger(__name__)
# Fields that may differ between a run and its resumption (the data file may move; its
# content is checked through the dataset fingerprint).
RESUMABLE_CHANGES = ("steps", "max_tokens", "save_every", "threads", "data")


@dataclass(frozen=True)
class FinetuneConfig:
    """Everything that defines a fine-tuning run; saved as the run's ``config.json``."""

    model: str = DEFAULT_MODEL
    data: str | None = None  # the training JSONL (recorded; transcripts may also be passed directly)
    preset: str = "rank1"  # rank1 | lora | custom | full (see emscope.organisms.presets)
    layers: Any = None  # layer spec for the adapters; None = the preset's default
    rank: int | None = None  # None = the preset's (1 for rank1, 32 for lora)
    alpha: float | None = None  # None = the preset's (16 x rank for rank1, 2 x rank for lora)
    dropout: float = 0.0
    peft_config: str | None = None  # JSON of LoraConfig kwargs for preset "custom"
    init_adapter: str | None = None  # continue training this checkpoint's adapter (re-alignment)
    steps: int = 100  # optimizer steps
    max_tokens: int | None = None  # token budget: stop after the step that reaches it (non-padding tokens)
    save_every: int = 25
    batch_size: int = 4
    grad_accum: int = 1
    lr: float | None = None  # None = the preset's default
    warmup_steps: int = 0  # linear warm-up, then constant
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    max_length: int = 256
    max_examples: int | None = None  # use the first N transcripts of the file
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    threads: int | None = None  # torch CPU threads; None = leave torch's setting

    def __post_init__(self) -> None:
        get_preset(self.preset)  # an unknown preset fails here, listing the known ones
        for name in ("steps", "save_every", "batch_size", "grad_accum", "max_length"):
            if int(getattr(self, name)) < 1:
                raise DataFormatError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("max_tokens", "max_examples"):
            if getattr(self, name) is not None and int(getattr(self, name)) < 1:
                raise DataFormatError(f"{name} must be at least 1, got {getattr(self, name)}")
        if isinstance(self.layers, list | tuple):
            object.__setattr__(self, "layers", [int(i) for i in self.layers])

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else get_preset(self.preset).default_lr

    @property
    def examples_per_step(self) -> int:
        return self.batch_size * self.grad_accum


@dataclass
class FinetuneResult:
    run_dir: Path
    checkpoints: list[Checkpoint]
    metrics: list[dict[str, Any]] = field(default_factory=list)  # one per step run in this call

    @property
    def final(self) -> Checkpoint:
        return self.checkpoints[-1]


def finetune(
    config: FinetuneConfig,
    out: str | os.PathLike[str],
    *,
    lm: Any = None,
    transcripts: Sequence[Transcript] | None = None,
    progress: bool = True,
    on_step: StepHook | None = None,
) -> FinetuneResult:
    """Fine-tune `config.model` (or `lm`) on the transcripts; checkpoints go under `out`.

    If `out` already holds this run, training resumes from its latest checkpoint. A
    `LoadedModel` passed as `lm` is left as it was afterwards (the adapter is removed;
    for full fine-tuning a copy is trained). `on_step(step, lm, row)` is called after each
    optimizer step with the model being trained, in eval mode under no_grad
    (`emscope.organisms.training_loop`).
    """
    if transcripts is None:
        if not config.data:
            raise DataFormatError("no training data: set config.data to a messages JSONL or pass transcripts")
        transcripts = as_transcripts(config.data)
    transcripts = list(transcripts)[: config.max_examples] if config.max_examples else list(transcripts)
    if lm is None:
        from emscope.models.loading import load_model

        lm = load_model(config.model, dtype=config.dtype, device=config.device)
    examples, skipped = build_examples(lm.tokenizer, transcripts, config.max_length)
    run_dir = Path(out)
    data_fingerprint = fingerprint(transcripts)
    resume_from = _check_resumable(run_dir, config, data_fingerprint)
    set_seed(config.seed)
    model, undo = _prepare_model(lm, config)
    threads_before = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)  # restored on return
    try:
        if resume_from is None:
            write_config(
                run_dir,
                RUN_KIND,
                {
                    **_run_fields(config, lm, transcripts, model),
                    "dataset_fingerprint": data_fingerprint,
                    "n_skipped_too_long": skipped,
                    "n_train_examples": len(examples),
                },
            )
        rows = train_loop(config, run_dir, model, lm, examples, resume_from, progress, on_step)
        return FinetuneResult(run_dir, list_checkpoints(run_dir), rows)
    finally:
        undo()
        torch.set_num_threads(threads_before)


def _run_fields(config: FinetuneConfig, lm: Any, transcripts: Sequence[Transcript], model: Any) -> dict[str, Any]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    targets = sorted(
        getattr(next(iter(getattr(model, "peft_config", {}).values()), None), "target_modules", None) or []
    )
    return {
        **lm.provenance(),
        "model_loaded_as": lm.spec,
        **asdict(config),  # the config itself, flat: `FinetuneConfig(**fields)` rebuilds it
        "learning_rate": config.learning_rate,
        "n_examples": len(transcripts),
        "trainable_params": trainable,
        "target_modules": targets,
    }


def _check_resumable(run_dir: Path, config: FinetuneConfig, data_fingerprint: str) -> Checkpoint | None:
    if not (run_dir / "config.json").is_file():
        return None
    saved = read_config(run_dir, RUN_KIND)
    now = {**asdict(config), "dataset_fingerprint": data_fingerprint}
    diff = [k for k in now if k not in RESUMABLE_CHANGES and saved.get(k) != now[k]]
    if diff:
        raise ArtifactError(
            f"{run_dir} holds another run (different {', '.join(diff)}): pass a new output directory, "
            "or the same settings to resume it"
        )
    checkpoints = list_checkpoints(run_dir)
    if checkpoints:
        check_no_pickled_state(checkpoints[-1])
    found = [c for c in checkpoints if c.has_trainer_state]
    if not found:
        return None
    log.info("resuming %s from step %d", run_dir, found[-1].step)
    return found[-1]


def _prepare_model(lm: Any, config: FinetuneConfig) -> tuple[Any, Callable[[], None]]:
    """The trainable model and a function that puts `lm` back as it was."""
    base = lm.model
    flags = {name: p.requires_grad for name, p in base.named_parameters()}
    was_training = base.training
    if config.preset == "full" and config.init_adapter is None:
        import copy

        model = copy.deepcopy(base)
        model.train()
        return model, lambda: None
    require("peft", extra="train")
    if config.init_adapter:
        from peft import PeftModel

        ckpt = resolve_checkpoint(config.init_adapter)
        model = PeftModel.from_pretrained(base, str(ckpt.path), is_trainable=True)
    else:
        from peft import get_peft_model

        options = AdapterOptions(config.layers, config.rank, config.alpha, config.dropout, config.peft_config)
        model = get_peft_model(base, build_adapter_config(lm, config.preset, options))
    model.train()

    def undo() -> None:
        model.unload()
        for name, p in base.named_parameters():
            p.requires_grad_(flags.get(name, p.requires_grad))
        base.train(was_training)

    return model, undo
