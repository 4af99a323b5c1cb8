"""Writing fine-tuning checkpoints and exporting merged organisms (the read half is `emscope.models.organism_dir`).

The trainer state needed to resume (optimizer, scheduler, RNG, data position) is stored
without pickle: its tensors in ``trainer_state.safetensors`` and everything else in
``trainer_state.json``, whose tensor places read ``{"__tensor__": NAME}``. Loading it
reads JSON and safetensors only, so a run directory from someone else cannot run code.
A ``trainer_state.pt`` (a pickle, as older emscope wrote) is never loaded: resuming such
a run is refused with the fix.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from emscope.artifacts import atomic_save_tensors, atomic_write_bytes, share_like_ordinary_files, write_config
from emscope.errors import ArtifactError
from emscope.models.lineage import write_marker
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
            save_trainer_state(work, trainer_state)
        write_config(work, CHECKPOINT_KIND, {"step": step, **fields})
        share_like_ordinary_files(work)  # PEFT's safetensors are written 0600
        if target.exists():
            shutil.rmtree(target)
        os.replace(work, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for older in list_checkpoints(run_dir):
        if older.step < step:
            (older.path / STATE_NAME).unlink(missing_ok=True)  # first: without it the state is not read
            (older.path / STATE_TENSORS).unlink(missing_ok=True)
    return target


STATE_TENSORS = "trainer_state.safetensors"
PICKLED_STATE = "trainer_state.pt"  # what emscope wrote before; never loaded
_STATE_KIND = "trainer_state"


def save_trainer_state(directory: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Write `state` (nested dicts, lists, tuples, numbers, strings, tensors) as safetensors + JSON."""
    tensors: dict[str, torch.Tensor] = {}
    structure = _split(state, "state", tensors)
    atomic_save_tensors(Path(directory) / STATE_TENSORS, tensors)
    doc = {"kind": _STATE_KIND, "format_version": 1, "state": structure}  # key order kept (no sort_keys)
    atomic_write_bytes(Path(directory) / STATE_NAME, json.dumps(doc).encode())


def load_trainer_state(checkpoint: Checkpoint) -> dict[str, Any]:
    """The trainer state of `checkpoint`, read from JSON and safetensors only (no pickle)."""
    check_no_pickled_state(checkpoint)
    if not checkpoint.has_trainer_state:
        raise ArtifactError(f"{checkpoint.path} has no {STATE_NAME}: only the latest checkpoint can be resumed")
    try:
        obj = json.loads((checkpoint.path / STATE_NAME).read_text(encoding="utf-8"))
        tensors = load_file(str(checkpoint.path / STATE_TENSORS))
    except (OSError, ValueError, SafetensorError) as e:
        raise ArtifactError(
            f"{checkpoint.path}: cannot read the trainer state ({e}); resume from a new directory"
        ) from None
    if not isinstance(obj, dict) or obj.get("kind") != _STATE_KIND or obj.get("format_version") != 1:
        raise ArtifactError(f"{checkpoint.path / STATE_NAME} is not an emscope trainer state (format 1)")
    state = _join(obj.get("state"), tensors, checkpoint.path)
    if not isinstance(state, dict):
        raise ArtifactError(f"{checkpoint.path / STATE_NAME}: the trainer state is not a mapping")
    return state


def check_no_pickled_state(checkpoint: Checkpoint) -> None:
    """Refuse to resume from a checkpoint whose only trainer state is a pickle (loading one can run any code)."""
    if (checkpoint.path / PICKLED_STATE).is_file() and not checkpoint.has_trainer_state:
        raise ArtifactError(
            f"{checkpoint.path} holds {PICKLED_STATE}, a pickle (from an older emscope, or planted): emscope never "
            "loads pickles, since loading one can run any code in it. Resuming this run is refused: train into a "
            "new --out directory (its checkpoints' adapters still load as organisms)"
        )


def _split(obj: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    """`obj` as JSON, its tensors moved into `tensors` under their path; tuples and int keys are tagged."""
    if isinstance(obj, torch.Tensor):
        tensors[path] = obj.detach().cpu()
        return {"__tensor__": path}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: _split(v, f"{path}.{k}", tensors) for k, v in obj.items()}
        if all(isinstance(k, int) and not isinstance(k, bool) for k in obj):
            return {"__int_keys__": {str(k): _split(v, f"{path}.{k}", tensors) for k, v in obj.items()}}
        raise TypeError(f"trainer state at {path}: keys must be all strings or all integers")
    if isinstance(obj, tuple):
        return {"__tuple__": [_split(v, f"{path}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_split(v, f"{path}.{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(f"trainer state at {path}: cannot store a {type(obj).__name__} without pickle")


def _join(obj: Any, tensors: dict[str, torch.Tensor], where: Path) -> Any:
    """The inverse of `_split`."""
    if isinstance(obj, list):
        return [_join(v, tensors, where) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if set(obj) == {"__tensor__"}:
        if obj["__tensor__"] not in tensors:
            raise ArtifactError(f"{where}: the trainer state names a tensor {obj['__tensor__']!r} that is missing")
        return tensors[obj["__tensor__"]]
    if set(obj) == {"__int_keys__"} and isinstance(obj["__int_keys__"], dict):
        try:
            return {int(k): _join(v, tensors, where) for k, v in obj["__int_keys__"].items()}
        except ValueError:
            raise ArtifactError(f"{where}: the trainer state has a non-integer key under __int_keys__") from None
    if set(obj) == {"__tuple__"} and isinstance(obj["__tuple__"], list):
        return tuple(_join(v, tensors, where) for v in obj["__tuple__"])
    return {k: _join(v, tensors, where) for k, v in obj.items()}


def export_merged(
    checkpoint: str | os.PathLike[str], out: str | os.PathLike[str], lm: LoadedModel | None = None
) -> Path:
    """Merge a checkpoint's adapter into its base model and save it as safetensors + tokenizer.

    The result is a plain Hugging Face directory that `emscope.models.loading.load_model` reads;
    it keeps the organism's lineage (base + checkpoint), so its base model's directions still fit it.
    """
    organism = load_organism(checkpoint, lm=lm, merge=True)
    out = Path(out)
    organism.model.save_pretrained(out, safe_serialization=True)
    organism.tokenizer.save_pretrained(out)
    share_like_ordinary_files(out, "*.safetensors")
    write_marker(out, organism.lineage)
    return out
