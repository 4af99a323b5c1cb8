"""Reading fine-tuning run directories and their checkpoints (the write half is `emscope.organisms.checkpoints`).

A run directory (written by `emscope.organisms.finetune.finetune`) looks like::

    RUN/config.json                 kind "finetune": the FinetuneConfig + provenance
    RUN/metrics.jsonl               one line per optimizer step (loss, tokens/s, data seen)
    RUN/checkpoints/step-000050/    config.json (kind "finetune_checkpoint": step, loss, data seen)
                                    adapter_model.safetensors + adapter_config.json (PEFT)
                                    trainer_state.json + trainer_state.safetensors (optimizer, scheduler,
                                    RNG, data position; latest checkpoint only; no pickle)

Every checkpoint holds only the adapter (a few MB); the optimizer state needed to resume
is kept in the latest one alone. Each directory is written under a temporary name and
renamed when complete, so a killed run never leaves a half-written checkpoint.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emscope.artifacts import load_tensors, read_config
from emscope.errors import ArtifactError
from emscope.records import read_jsonl

CHECKPOINT_KIND = "finetune_checkpoint"
RUN_KIND = "finetune"
STATE_NAME = "trainer_state.json"  # + trainer_state.safetensors (see emscope.organisms.checkpoints)
FULL_WEIGHTS = "model.safetensors"
METRICS_NAME = "metrics.jsonl"
ADAPTER_WEIGHTS = "adapter_model.safetensors"  # as PEFT saves it


@dataclass(frozen=True)
class Checkpoint:
    """One saved checkpoint: where it is and what it records."""

    path: Path
    step: int
    loss: float | None  # mean training loss of the last save_every steps; None for step 0
    examples_seen: int
    tokens_seen: int
    info: dict[str, Any]

    @property
    def has_trainer_state(self) -> bool:
        return (self.path / STATE_NAME).is_file()

    @property
    def base_model(self) -> str:
        return str(self.info.get("model"))


def checkpoint_dir(run_dir: str | os.PathLike[str], step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step-{step:06d}"


def read_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    path = Path(path)
    info = read_config(path, CHECKPOINT_KIND, required=("step", "examples_seen", "tokens_seen"))
    loss = None if info.get("loss") is None else float(info["loss"])
    return Checkpoint(path, int(info["step"]), loss, int(info["examples_seen"]), int(info["tokens_seen"]), info)


def list_checkpoints(run_dir: str | os.PathLike[str]) -> list[Checkpoint]:
    """The run's complete checkpoints, by step (step 0 = the starting adapter, when saved)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(
        (read_checkpoint(p) for p in root.glob("step-*") if (p / "config.json").is_file()), key=lambda c: c.step
    )


@dataclass(frozen=True)
class FinetuneRun:
    """A fine-tuning run as saved: its config, complete checkpoints and per-step metrics."""

    path: Path
    config: dict[str, Any]
    checkpoints: list[Checkpoint]
    metrics: list[dict[str, Any]]


def read_run(path: str | os.PathLike[str]) -> FinetuneRun:
    """Read a run directory (a killed run reads as far as it got: a torn last metrics line is skipped)."""
    path = Path(path)
    config = read_config(path, RUN_KIND)
    return FinetuneRun(path, config, list_checkpoints(path), read_metrics(path))


def read_metrics(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The run's per-step metrics (loss, tokens/s, data seen); a torn last line, from a kill, is skipped."""
    return read_jsonl(Path(run_dir) / METRICS_NAME, missing_ok=True, torn_tail_ok=True)


def is_organism_dir(path: str | os.PathLike[str]) -> bool:
    """Whether `path` is an emscope fine-tuning run or one of its checkpoints."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    try:
        return read_config(Path(path)).get("kind") in (RUN_KIND, CHECKPOINT_KIND)
    except ArtifactError:  # a model's own config.json: not an emscope artifact
        return False


def resolve_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """A checkpoint directory, or a run directory (meaning its latest checkpoint)."""
    path = Path(path)
    if (path / "config.json").is_file() and read_config(path).get("kind") == RUN_KIND:
        found = list_checkpoints(path)
        if not found:
            raise ArtifactError(f"run {path} has no checkpoint yet")
        return found[-1]
    return read_checkpoint(path)


def load_weights_into(model: Any, checkpoint: Checkpoint) -> None:
    """Copy a checkpoint's adapter (or full) weights into a model that already has that shape."""
    if (checkpoint.path / FULL_WEIGHTS).is_file():
        model.load_state_dict(load_tensors(checkpoint.path / FULL_WEIGHTS))
        return
    from peft import set_peft_model_state_dict

    weights = load_tensors(checkpoint.path / ADAPTER_WEIGHTS)
    result = set_peft_model_state_dict(model, weights)
    unexpected = getattr(result, "unexpected_keys", None)
    if unexpected:
        raise ArtifactError(f"{checkpoint.path} does not fit this model: unexpected keys {unexpected[:3]}")
