"""Weight orthogonalisation: a copy of a model that cannot write along a direction.

Every module that writes into the residual stream (the embeddings, and in every block the
attention-output and MLP-output projections, biases included) is replaced by its
composition with the projection ``I - u u^T``. The stream then never carries a component
along ``u``: the copy computes what runtime ablation (`emscope.interventions.ablate.ablate` with its
default sites at all layers) computes, with no hooks and no runtime cost, and it can be
saved and served like any Hugging Face model.

Tied input/output embeddings are untied first (the output layer keeps the original
weights), since the unembedding reads the stream and must not change.
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from emscope.artifacts import atomic_write_json, describe, share_like_ordinary_files
from emscope.directions.direction import Direction
from emscope.errors import NotSupportedError
from emscope.interventions.handle import DirectionLike, unit_vector
from emscope.models.lineage import Compatibility
from emscope.models.loading import LoadedModel
from emscope.models.writers import block_writers, embedding_writers, writer_layout

log = logging.getLogger(__name__)
PROVENANCE_FILE = "emscope_orthogonalization.json"


def _project_rows(weight: torch.Tensor, u: torch.Tensor) -> None:
    """In place: each row w (a vector in the stream) becomes w - (w . u) u.  Weight [*, D]."""
    w = weight.double()
    weight.copy_(w - (w @ u).unsqueeze(-1) * u)


def _project_columns(weight: torch.Tensor, u: torch.Tensor) -> None:
    """In place: each column (a vector in the stream) loses its u component.  Weight [D, *]."""
    w = weight.double()
    weight.copy_(w - u.unsqueeze(-1) * (u @ w).unsqueeze(0))


def orthogonalize_module(module: nn.Module, u: torch.Tensor) -> None:
    """Make `module` (Linear, GPT-2 Conv1D or Embedding whose output is the stream) write nothing along u."""
    if isinstance(module, nn.Embedding):
        _project_rows(module.weight.data, u)
        return
    if isinstance(module, nn.Linear):
        _project_columns(module.weight.data, u)  # [out=D, in]
    elif type(module).__name__ == "Conv1D" and isinstance(module.weight, torch.Tensor):
        _project_rows(module.weight.data, u)  # [in, out=D]
    else:
        raise NotSupportedError(
            f"cannot orthogonalise a {type(module).__name__}: emscope handles nn.Linear, Conv1D and nn.Embedding writers"
        )
    bias = getattr(module, "bias", None)
    if isinstance(bias, torch.Tensor):
        _project_rows(bias.data, u)


def _untie_output_embeddings(model: Any) -> None:
    out, inp = model.get_output_embeddings(), model.get_input_embeddings()
    if out is not None and inp is not None and out.weight.data_ptr() == inp.weight.data_ptr():
        out.weight = nn.Parameter(inp.weight.detach().clone())
        log.info("untied the output embedding from the input embedding before orthogonalising")
    for config in {id(c): c for c in (model.config, model.config.get_text_config())}.values():
        if getattr(config, "tie_word_embeddings", False):
            config.tie_word_embeddings = False


def _drop_emscope_hooks(model: nn.Module) -> None:
    """Take every emscope hook off `model` (a fresh copy): an intervention active on the original
    would otherwise be copied with it, out of reach of its handle."""
    dropped = 0
    for module in model.modules():
        for hooks in (module._forward_hooks, module._forward_pre_hooks):
            for key in [k for k, fn in hooks.items() if getattr(fn, "__module__", "").startswith("emscope.")]:
                del hooks[key]
                module._forward_hooks_with_kwargs.pop(key, None)
                module._forward_hooks_always_called.pop(key, None)
                module._forward_pre_hooks_with_kwargs.pop(key, None)
                dropped += 1
    if dropped:
        log.info("the copy leaves behind %d hooks of interventions active on the original", dropped)


def orthogonalize_weights(
    lm: LoadedModel,
    direction: DirectionLike,
    *,
    writer_paths: tuple[str, str] | None = None,
    compatibility: Compatibility = "same_base",
) -> LoadedModel:
    """A copy of `lm` whose embeddings, attention outputs and MLP outputs write nothing along `direction`.

    `lm` is not modified; interventions active on it are not copied. Raises
    `NotSupportedError` for families that normalise a sub-layer's output after its
    projection (Gemma 2/3): use runtime `ablate` there.
    """
    unit, _ = unit_vector(lm, direction, compatibility=compatibility)
    u = unit.detach().double().cpu()
    layout = writer_layout(lm, writer_paths)
    if not layout.orthogonalizable:
        raise NotSupportedError(
            f"weights of {type(lm.model).__name__} cannot be orthogonalised exactly: {layout.note}. "
            "Fix: use runtime ablation (emscope.interventions.ablate.ablate), which handles this family"
        )
    model = copy.deepcopy(lm.model)
    _drop_emscope_hooks(model)
    new = LoadedModel(
        model=model,
        tokenizer=lm.tokenizer,
        spec=lm.spec,
        source=f"{lm.source} (orthogonalized)",
        revision=lm.revision,
        blocks_path=lm.blocks_path,
        _lineage=lm.lineage,  # a copy of lm's weights with one direction removed: the same base
    )
    _untie_output_embeddings(model)
    with torch.no_grad():
        for _name, emb in embedding_writers(new):
            orthogonalize_module(emb, u.to(emb.weight.device))
        for layer in range(new.n_layers):
            for module in block_writers(new, layer, layout):
                orthogonalize_module(module, u.to(next(module.parameters()).device))
    return new


def save_orthogonalized(
    lm: LoadedModel,
    direction: DirectionLike,
    out_dir: str | os.PathLike[str],
    *,
    writer_paths: tuple[str, str] | None = None,
    compatibility: Compatibility = "same_base",
) -> Path:
    """Orthogonalise a copy of `lm` and save it (safetensors, tokenizer, provenance) as a model directory.

    The directory loads with ``emscope.models.loading.load_model(out_dir)`` or ``from_pretrained``.
    """
    new = orthogonalize_weights(lm, direction, writer_paths=writer_paths, compatibility=compatibility)
    out = Path(out_dir)
    new.model.save_pretrained(out)
    new.tokenizer.save_pretrained(out)
    share_like_ordinary_files(out, "*.safetensors")  # safetensors writes them 0600
    info = describe("orthogonalized_model", lm.provenance())
    if isinstance(direction, Direction):
        info["direction"] = {k: v for k, v in direction.fields().items() if k not in ("metrics", "meta")}
    atomic_write_json(out / PROVENANCE_FILE, info)
    log.info("saved the orthogonalised model to %s", out)
    return out
