"""Adapter presets: a registry of functions that build a PEFT ``LoraConfig`` for a model.

- ``rank1``: rank-1 LoRA on the MLP down-projection of chosen layers (default: 9 layers
  spread over the middle half of the model, the shape of the convergent-representations
  organism, which used 9 such adapters).
- ``lora``: rank-32 LoRA on every linear layer of the chosen blocks (default: all blocks).
- ``custom``: a user-given PEFT ``LoraConfig`` as a JSON file of its keyword arguments.
- ``full``: no adapter; every parameter is trained (where memory permits).

Target modules are always written out as explicit module names (the down-projection from
the family table `emscope.models.families`, else a probe of the block), so the saved
adapter config says exactly which layers were adapted.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emscope.errors import ArchitectureError, DataFormatError, NotSupportedError, lookup, require
from emscope.models.architecture import block_names, resolve_layers
from emscope.models.writers import down_projection, is_linear


@dataclass(frozen=True)
class AdapterOptions:
    """What the user may override in any preset (None = the preset's default)."""

    layers: Any = None  # a layer spec (see `emscope.models.architecture.resolve_layers`)
    rank: int | None = None
    alpha: float | None = None
    dropout: float = 0.0
    peft_config: str | None = None  # JSON file of LoraConfig kwargs, for the `custom` preset


@dataclass(frozen=True)
class Preset:
    name: str
    build: Callable[[Any, AdapterOptions], Any]  # (LoadedModel, options) -> LoraConfig | None
    default_lr: float
    description: str


def block_prefixes(lm: Any) -> list[str]:
    """Dotted module name of each decoder block, e.g. ``model.layers.3``."""
    return block_names(lm.model, lm.blocks)


def down_proj_name(lm: Any, layer: int) -> str:
    """Full module name of the MLP down-projection of block `layer` (from `emscope.models.families`)."""
    try:
        return f"{block_prefixes(lm)[layer]}.{down_projection(lm, layer)}"
    except ArchitectureError as e:
        raise ArchitectureError(f"{e}. Fix: use --preset custom with a PEFT config naming target_modules") from None


def linear_names(lm: Any, layers: list[int]) -> list[str]:
    """Full names of every linear module inside the given blocks."""
    prefixes = block_prefixes(lm)
    return [f"{prefixes[i]}.{n}" for i in layers for n, m in lm.blocks[i].named_modules() if n and is_linear(m)]


def default_rank1_layers(n_layers: int, count: int = 9) -> list[int]:
    """`count` layers evenly spread over the middle half of the model (all layers if fewer)."""
    if n_layers <= count:
        return list(range(n_layers))
    lo, hi = n_layers // 4, (3 * n_layers) // 4
    if hi - lo + 1 < count:
        lo, hi = 0, n_layers - 1
    step = (hi - lo) / (count - 1)
    return sorted({lo + round(k * step) for k in range(count)})


def _lora_config(targets: list[str], rank: int, alpha: float, dropout: float) -> Any:
    require("peft", extra="train")
    from peft import LoraConfig

    return LoraConfig(
        r=rank,
        lora_alpha=alpha,  # type: ignore[arg-type]  # peft annotates int, accepts float
        lora_dropout=dropout,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
    )


def _rank1(lm: Any, opts: AdapterOptions) -> Any:
    layers = default_rank1_layers(lm.n_layers) if opts.layers is None else resolve_layers(opts.layers, lm.n_layers)
    rank = opts.rank or 1
    return _lora_config([down_proj_name(lm, i) for i in layers], rank, opts.alpha or 16.0 * rank, opts.dropout)


def _lora(lm: Any, opts: AdapterOptions) -> Any:
    layers = resolve_layers(opts.layers, lm.n_layers)
    rank = opts.rank or 32
    return _lora_config(linear_names(lm, layers), rank, opts.alpha or 2.0 * rank, opts.dropout)


def _custom(lm: Any, opts: AdapterOptions) -> Any:
    if not opts.peft_config:
        raise DataFormatError("preset 'custom' needs peft_config: a JSON file of LoraConfig keyword arguments")
    path = Path(opts.peft_config)
    try:
        kwargs = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataFormatError(f"cannot read the PEFT config {path}: {e}") from None
    require("peft", extra="train")
    from peft import LoraConfig

    kwargs.setdefault("task_type", "CAUSAL_LM")
    try:
        return LoraConfig(**kwargs)
    except TypeError as e:
        raise DataFormatError(f"{path} is not a valid LoraConfig: {e}") from None


def _full(lm: Any, opts: AdapterOptions) -> None:
    if opts.layers is not None:
        raise NotSupportedError("preset 'full' trains every parameter; it takes no layers")
    return None


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "rank1", _rank1, 1e-3, "rank-1 LoRA on the MLP down-projection of chosen layers (default: 9 middle layers)"
        ),
        Preset(
            "lora", _lora, 2e-4, "rank-32 LoRA (alpha 64) on every linear layer of the chosen blocks (default: all)"
        ),
        Preset("custom", _custom, 2e-4, "a PEFT LoraConfig given as a JSON file of keyword arguments"),
        Preset("full", _full, 1e-5, "full fine-tuning of every parameter (no adapter)"),
    )
}


def get_preset(name: str) -> Preset:
    return lookup(PRESETS, name, "adapter preset")


def build_adapter_config(lm: Any, preset: str, options: AdapterOptions | None = None) -> Any:
    """The PEFT ``LoraConfig`` of `preset` for `lm` (None for full fine-tuning)."""
    return get_preset(preset).build(lm, options or AdapterOptions())
