"""Per-family facts about where things are inside a model: the one table emscope reads them from.

A family is looked up by the ``model_type`` of the model's config (or of its text config,
for multimodal wrappers such as ``Gemma3ForConditionalGeneration``). For a model whose
family is not here, `emscope.models.architecture` and `emscope.models.writers` probe the
structure instead, and the user can override both (``blocks_path=``, ``writer_paths=``).
Add a family by adding a `Family` to `FAMILIES`; `tests/test_conformance.py` then asks for
a tiny model of it (`emscope.testing.tiny_model`) and runs every check on it.

Paths inside a block are relative to the block; block paths are relative to the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

POST_NORM_NOTE = "a norm follows each projection, so what is written depends non-linearly on the weights"


@dataclass(frozen=True)
class Family:
    """Where the decoder blocks and the residual-stream writers of one model family are."""

    name: str
    model_types: tuple[str, ...]  # values of ``config.model_type`` (of the model or its text config)
    blocks: tuple[str, ...]  # dotted paths to the ModuleList of decoder blocks; the first that resolves wins
    attn_out: str  # module whose output is what the attention adds to the stream
    mlp_out: str  # module whose output is what the MLP adds to the stream
    down_proj: str  # the MLP's down-projection (a linear layer; the rank-1 LoRA target)
    post_norm: bool = False  # a norm follows each sub-layer's projection (then attn_out/mlp_out are the norms)


_LAYERS = ("model.layers",)
_LAYERS_MM = ("model.layers", "model.language_model.layers")  # text-only class, multimodal wrapper
_O, _DOWN = "self_attn.o_proj", "mlp.down_proj"
POST_NORM_WRITERS = ("post_attention_layernorm", "post_feedforward_layernorm")  # the norms after each sub-layer
_POST_ATTN, _POST_MLP = POST_NORM_WRITERS

# fmt: off
FAMILIES: dict[str, Family] = {f.name: f for f in (
    #      name        model_type(s)               decoder blocks          attn_out           mlp_out              down_proj          post_norm
    Family("llama",    ("llama",),                 _LAYERS,                _O,                _DOWN,               _DOWN),
    Family("mistral",  ("mistral",),               _LAYERS,                _O,                _DOWN,               _DOWN),
    Family("qwen2",    ("qwen2",),                 _LAYERS,                _O,                _DOWN,               _DOWN),
    Family("qwen3",    ("qwen3",),                 _LAYERS,                _O,                _DOWN,               _DOWN),
    Family("gemma",    ("gemma",),                 _LAYERS,                _O,                _DOWN,               _DOWN),
    Family("gemma2",   ("gemma2",),                _LAYERS,                _POST_ATTN,        _POST_MLP,           _DOWN,             True),
    Family("gemma3",   ("gemma3", "gemma3_text"),  _LAYERS_MM,             _POST_ATTN,        _POST_MLP,           _DOWN,             True),
    Family("phi3",     ("phi3",),                  _LAYERS,                _O,                _DOWN,               _DOWN),
    Family("gpt2",     ("gpt2",),                  ("transformer.h",),     "attn.c_proj",     "mlp.c_proj",        "mlp.c_proj"),
    Family("gpt_neox", ("gpt_neox",),              ("gpt_neox.layers",),   "attention.dense", "mlp.dense_4h_to_h", "mlp.dense_4h_to_h"),
)}
# fmt: on


def text_config(config: Any) -> Any:
    """The part of a transformers config that describes the language model (itself, unless multimodal)."""
    get_text = getattr(config, "get_text_config", None)
    return get_text() if callable(get_text) else config


def model_types(model: nn.Module) -> list[str]:
    """The ``model_type`` of the model's config and of its text config (multimodal models differ)."""
    config = getattr(model, "config", None)
    if config is None:
        return []
    configs = [config, text_config(config)]
    return list(dict.fromkeys(t for c in configs if isinstance(t := getattr(c, "model_type", None), str)))


def family_of(model: nn.Module) -> Family | None:
    """The `Family` of `model`, or None when its model type is not in `FAMILIES`."""
    for model_type in model_types(model):
        for family in FAMILIES.values():
            if model_type in family.model_types:
                return family
    return None
