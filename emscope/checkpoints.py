"""Fine-tuning checkpoints: small adapter directories that monitors and re-alignment read.

A run directory (written by `emscope.finetune.finetune`) looks like::

    RUN/config.json                 kind "finetune": the FinetuneConfig + provenance
    RUN/metrics.jsonl               one line per optimizer step (loss, tokens/s, data seen)
    RUN/checkpoints/step-000050/    config.json (kind "finetune_checkpoint": step, loss, data seen)
                                    adapter_model.safetensors + adapter_config.json (PEFT)
                                    trainer_state.pt (optimizer, scheduler, RNG; latest checkpoint only)

Every checkpoint holds only the adapter (a few MB); the optimizer state needed to resume
is kept in the latest one alone. Each directory is written under a temporary name and
renamed when complete, so a killed run never leaves a half-written checkpoint.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .artifacts import read_config, write_config
from .errors import ArtifactError, require

CHECKPOINT_KIND = "finetune_checkpoint"
RUN_KIND = "finetune"
STATE_NAME = "trainer_state.pt"
FULL_WEIGHTS = "model.safetensors"


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
    info = read_config(path, CHECKPOINT_KIND)
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
            from .artifacts import atomic_save_tensors

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


def load_weights_into(model: Any, checkpoint: Checkpoint) -> None:
    """Copy a checkpoint's adapter (or full) weights into a model that already has that shape."""
    from safetensors.torch import load_file

    if (checkpoint.path / FULL_WEIGHTS).is_file():
        model.load_state_dict(load_file(str(checkpoint.path / FULL_WEIGHTS)))
        return
    from peft import set_peft_model_state_dict

    weights = load_file(str(checkpoint.path / "adapter_model.safetensors"))
    result = set_peft_model_state_dict(model, weights)
    unexpected = getattr(result, "unexpected_keys", None)
    if unexpected:
        raise ArtifactError(f"{checkpoint.path} does not fit this model: unexpected keys {unexpected[:3]}")


def load_organism(checkpoint: str | os.PathLike[str], lm: Any = None, merge: bool = True) -> Any:
    """The fine-tuned model of a checkpoint (or a run's latest) as a `LoadedModel`.

    `lm` is the base model (loaded from the checkpoint's record when None). With
    ``merge=True`` (default) the adapter is merged and a plain model comes back; the base
    model passed in is copied first, never modified.
    """
    import copy

    from .models import LoadedModel, load_model

    ckpt = resolve_checkpoint(checkpoint)
    if lm is None:
        lm = load_model(ckpt.base_model, dtype=ckpt.info.get("dtype", "float32"), device=ckpt.info.get("device", "cpu"))
    model = copy.deepcopy(lm.model)
    if (ckpt.path / FULL_WEIGHTS).is_file():
        load_weights_into(model, ckpt)
    else:
        require("peft", extra="train")
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(ckpt.path))
        if merge:
            model = model.merge_and_unload()
    model.eval()
    return LoadedModel(
        model=model,
        tokenizer=lm.tokenizer,
        spec=f"{lm.spec}+{ckpt.path}",
        source=str(ckpt.path),
        revision=lm.revision,
        blocks_path=lm.blocks_path if merge else None,
    )


def export_merged(checkpoint: str | os.PathLike[str], out: str | os.PathLike[str], lm: Any = None) -> Path:
    """Merge a checkpoint's adapter into its base model and save it as safetensors + tokenizer.

    The result is a plain Hugging Face directory that `emscope.models.load_model` reads.
    """
    organism = load_organism(checkpoint, lm=lm, merge=True)
    out = Path(out)
    organism.model.save_pretrained(out, safe_serialization=True)
    organism.tokenizer.save_pretrained(out)
    return out
