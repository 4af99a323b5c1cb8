"""Self-describing result directories: ``config.json`` + safetensors (+ JSONL where useful).

Every saved result names its format version, its kind and its provenance (emscope
version, model, layers, dataset fingerprint ...), so a reader can refuse what it does not
understand instead of misreading it. Writes are atomic: a file appears whole or not at all.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from emscope.errors import ArtifactError

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"


def emscope_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("emscope")
    except PackageNotFoundError:  # running from a source tree that was not installed
        return "0+unknown"


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `path` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def atomic_save_tensors(
    path: str | os.PathLike[str], tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> None:
    """`safetensors.torch.save_file`, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=dict(metadata or {}))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_config(directory: str | os.PathLike[str], kind: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """Write ``config.json`` with format version, kind and emscope version added."""
    config = {"format_version": FORMAT_VERSION, "kind": kind, "emscope_version": emscope_version(), **fields}
    atomic_write_json(Path(directory) / CONFIG_NAME, config)
    return config


def read_config(directory: str | os.PathLike[str], kind: str | None = None) -> dict[str, Any]:
    """Read ``config.json``, checking the kind and the format version."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise ArtifactError(f"{directory} is not an emscope result directory: {CONFIG_NAME} is missing")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{path} is not valid JSON: {e}") from None
    if kind is not None and config.get("kind") != kind:
        raise ArtifactError(f"{directory} holds a {config.get('kind')!r} result, expected {kind!r}")
    if config.get("format_version", 0) > FORMAT_VERSION:
        raise ArtifactError(
            f"{directory} was written in format version {config['format_version']} by emscope "
            f"{config.get('emscope_version')}; this emscope reads up to {FORMAT_VERSION}: upgrade emscope"
        )
    return config


def save_artifact(
    directory: str | os.PathLike[str],
    kind: str,
    fields: Mapping[str, Any],
    tensors: Mapping[str, torch.Tensor],
    tensors_name: str = "tensors.safetensors",
) -> Path:
    """Save tensors plus a ``config.json`` describing them as one directory."""
    directory = Path(directory)
    atomic_save_tensors(directory / tensors_name, tensors)
    write_config(directory, kind, {**fields, "tensors_file": tensors_name})
    return directory


def load_artifact(
    directory: str | os.PathLike[str], kind: str | None = None
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Load what `save_artifact` wrote: (config, tensors)."""
    config = read_config(directory, kind)
    path = Path(directory) / config.get("tensors_file", "tensors.safetensors")
    if not path.is_file():
        raise ArtifactError(f"{path} is missing: the result directory {directory} is incomplete")
    return config, load_file(str(path))
