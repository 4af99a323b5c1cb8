"""Device, dtype and seed helpers."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emscope.errors import ConfigError, lookup

RESOURCES = Path(__file__).resolve().parent / "resources"


def cache_root() -> Path:
    """Where converted models and judgments are cached: ``$EMSCOPE_CACHE``, default ``~/.cache/emscope``."""
    return Path(os.environ.get("EMSCOPE_CACHE", Path.home() / ".cache" / "emscope"))


DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """A torch dtype from its name (``float32``/``fp32``, ``bfloat16``/``bf16``, ``float16``/``fp16``)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    return lookup(DTYPES, str(dtype).lower(), "dtype")


DEVICE_TYPES = ("auto", "cpu", "cuda", "mps")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """A torch device that exists here; 'auto' picks cuda, then mps, then cpu.

    An unknown name, or a GPU that is not visible, raises `ConfigError` naming the choices.
    """
    if isinstance(device, torch.device):
        dev = device
    elif str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    else:
        lookup(DEVICE_TYPES, str(device).split(":")[0], "device")
        try:
            dev = torch.device(device)
        except RuntimeError:
            raise ConfigError(f"cannot read device {device!r}; use cpu, cuda, cuda:N, mps or auto") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {str(device)!r} was asked for but no CUDA GPU is visible; use device cpu or auto"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {str(device)!r}: only {torch.cuda.device_count()} CUDA GPU(s) are visible; "
                f"use cuda:0..cuda:{torch.cuda.device_count() - 1}"
            )
    if dev.type == "mps" and not _mps_available():
        raise ConfigError(f"device {str(device)!r} was asked for but MPS is not available; use device cpu or auto")
    return dev


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps and mps.is_available())


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextmanager
def reading_mode(model: Any) -> Iterator[None]:
    """Eval mode, no gradients and a forked RNG while a training model is read (a hook, a monitor), so that
    reading it cannot change the training run; the model's train/eval mode is restored afterwards."""
    was_training = model.training
    device = next(model.parameters()).device
    model.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            yield
    finally:
        model.train(was_training)
