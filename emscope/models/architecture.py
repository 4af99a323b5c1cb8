"""Where the decoder blocks are, how wide the residual stream is, and how layers are named.

Layer-index convention (used by every module and every saved file):
    layer i  =  the residual stream at the *output of decoder block i*, 0-based.
    With Hugging Face's ``output_hidden_states=True`` that is ``hidden_states[i + 1]``
    (``hidden_states[0]`` is the embedding output), except for the last block: HF applies
    the final norm to ``hidden_states[-1]``, emscope never does. Negative indices count
    from the end (-1 = last block).

Blocks are found from the family table (`emscope.models.families`), then by probing the
model's structure (the ``nn.ModuleList`` whose length is ``config.num_hidden_layers``), and
a user override (``blocks_path="model.layers"``) comes before both.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from torch import nn

from emscope.errors import ArchitectureError, LayerIndexError
from emscope.models.families import family_of, model_types, text_config


def _text_config(model: nn.Module):  # noqa: ANN202 - a transformers config of any class
    config = getattr(model, "config", None)
    if config is None:
        raise ArchitectureError(f"{type(model).__name__} has no `config`; emscope works on Hugging Face models")
    return text_config(config)


def num_layers(model: nn.Module) -> int:
    """Number of decoder blocks, from the model's config."""
    n = getattr(_text_config(model), "num_hidden_layers", None)
    if not isinstance(n, int):
        raise ArchitectureError(f"{type(model).__name__}'s config has no integer `num_hidden_layers`")
    return n


def model_width(model: nn.Module) -> int:
    """Width of the residual stream (``hidden_size``)."""
    d = getattr(_text_config(model), "hidden_size", None)
    if not isinstance(d, int):
        raise ArchitectureError(f"{type(model).__name__}'s config has no integer `hidden_size`")
    return d


def _get_path(model: nn.Module, path: str) -> nn.Module | None:
    obj: object = model
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj if isinstance(obj, nn.Module) else None


def decoder_blocks(model: nn.Module, blocks_path: str | None = None) -> nn.ModuleList:
    """The ``nn.ModuleList`` of decoder blocks.

    Order: ``blocks_path`` if given, the paths of the model's family
    (`emscope.models.families.FAMILIES`), then the only ``ModuleList`` in the model whose
    length equals ``num_hidden_layers``.
    """
    n = num_layers(model)
    if blocks_path:
        found = _get_path(model, blocks_path)
        if isinstance(found, nn.ModuleList) and len(found) == n:
            return found
        raise ArchitectureError(
            f"blocks_path={blocks_path!r} does not name a ModuleList of {n} blocks in {type(model).__name__}"
        )
    family = family_of(model)
    for path in family.blocks if family else ():
        found = _get_path(model, path)
        if isinstance(found, nn.ModuleList) and len(found) == n:
            return found
    lists = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) == n]
    if len(lists) == 1:
        return lists[0][1]
    names = ", ".join(name for name, _ in lists) or "none"
    kind = "/".join(model_types(model)) or "unknown"
    raise ArchitectureError(
        f"cannot find the decoder blocks of {type(model).__name__} (model type {kind}): "
        f"ModuleLists of length {n}: {names}. Fix: pass blocks_path='dotted.path.to.layers' (e.g. 'model.layers')"
    )


def block_names(model: nn.Module, blocks: nn.ModuleList) -> list[str]:
    """Dotted module name of each decoder block inside `model`, e.g. ``model.layers.3``."""
    names = {id(m): name for name, m in model.named_modules()}
    return [names[id(b)] for b in blocks]


LayerSpec = int | str | Sequence[int] | None


def resolve_layers(layers: LayerSpec, n_layers: int) -> list[int]:
    """Turn a layer spec into sorted, unique, non-negative block indices.

    Accepts ``"all"``/None, an int (negatives count from the end), a list of ints, or a
    string such as ``"3"``, ``"-1"``, ``"0,4,8"`` or ``"2-5"`` (inclusive range).
    """
    if layers is None or (isinstance(layers, str) and layers.strip().lower() == "all"):
        return list(range(n_layers))
    raw: Iterable[int]
    if isinstance(layers, int):
        raw = [layers]
    elif isinstance(layers, str):
        raw = _parse_layer_string(layers)
    else:
        raw = list(layers)
    out: set[int] = set()
    for i in raw:
        if not isinstance(i, int) or isinstance(i, bool):
            raise LayerIndexError(f"layer indices must be integers, got {i!r}")
        if not -n_layers <= i < n_layers:
            raise LayerIndexError(
                f"layer {i} is out of range: this model has {n_layers} blocks, valid indices are "
                f"0..{n_layers - 1} (or -{n_layers}..-1 from the end)"
            )
        out.add(i % n_layers)
    if not out:
        raise LayerIndexError("no layers selected")
    return sorted(out)


def _parse_layer_string(text: str) -> list[int]:
    result: list[int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part[1:]:
                sep = part.index("-", 1)
                lo, hi = int(part[:sep]), int(part[sep + 1 :])
                result.extend(range(lo, hi + 1))
            else:
                result.append(int(part))
        except ValueError:
            raise LayerIndexError(f"cannot read layer spec {text!r}: use 'all', '12', '-1', '0,4,8' or '2-5'") from None
    return result
