"""Writing fine-tuning checkpoints and exporting merged organisms (the read half is `emscope.models.organism_dir`)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from emscope.artifacts import atomic_save_tensors, write_config
from emscope.errors import ArtifactError
from emscope.models.loading import LoadedModel, load_organism
from emscope.models.organism_dir import (
    CHECKPOINT_KIND,
    FULL_WEIGHTS,
    STATE_NAME,
    Checkpoint,
    checkpoint_dir,
    list_checkpoints,
)


def save_checkpoint(
    run_dir: Path, step: int, model: Any, fields: dict[str, Any], trainer_state: dict[str, Any] | None
) -> Path:
    """Write the checkpoint atomically; drop the trainer state of older checkpoints."""
    target = checkpoint_dir(run_dir, step)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    work.chmod(0o755)  # mkdtemp makes it private; a checkpoint is an ordinary result directory
    try:
        if hasattr(model, "peft_config"):
            model.save_pretrained(work, safe_serialization=True)
        else:  # full fine-tuning
            atomic_save_tensors(work / FULL_WEIGHTS, dict(model.state_dict()))
        if trainer_state is not None:
            torch.save(trainer_state, work / STATE_NAME)
        write_config(work, CHECKPOINT_KIND, {"step": step, **fields})
        if target.exists():
            shutil.rmtree(target)
        os.replace(work, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for older in list_checkpoints(run_dir):
        if older.step < step:
            (older.path / STATE_NAME).unlink(missing_ok=True)
    return target


def load_trainer_state(checkpoint: Checkpoint) -> dict[str, Any]:
    if not checkpoint.has_trainer_state:
        raise ArtifactError(f"{checkpoint.path} has no {STATE_NAME}: only the latest checkpoint can be resumed")
    return torch.load(checkpoint.path / STATE_NAME, map_location="cpu", weights_only=False)


def export_merged(
    checkpoint: str | os.PathLike[str], out: str | os.PathLike[str], lm: LoadedModel | None = None
) -> Path:
    """Merge a checkpoint's adapter into its base model and save it as safetensors + tokenizer.

    The result is a plain Hugging Face directory that `emscope.models.loading.load_model` reads.
    """
    organism = load_organism(checkpoint, lm=lm, merge=True)
    out = Path(out)
    organism.model.save_pretrained(out, safe_serialization=True)
    organism.tokenizer.save_pretrained(out)
    return out
