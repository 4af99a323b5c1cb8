"""Which modules write into the residual stream: the embeddings, and in each block the
attention output and the MLP output.

Support is data (`KNOWN_WRITERS`, by model class) with a structural fallback (the last
linear layer of the block's attention / MLP child whose output width is the stream's),
and a user override (``writer_paths=("self_attn.o_proj", "mlp.down_proj")``).

Some families (Gemma 2/3) normalise each sub-layer's output *after* its projection before
adding it to the stream; there the writer is the norm, and the projection's weights
cannot be orthogonalised exactly (`WriterLayout.orthogonalizable` is False).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from emscope.errors import ArchitectureError
from emscope.models.loading import LoadedModel


@dataclass(frozen=True)
class WriterLayout:
    """Paths, inside one decoder block, of the modules whose outputs are added to the stream."""

    attn: str
    mlp: str
    orthogonalizable: bool = True
    note: str = ""


_POST_NORM = WriterLayout(
    "post_attention_layernorm",
    "post_feedforward_layernorm",
    orthogonalizable=False,
    note="a norm follows each projection, so what is written depends non-linearly on the weights",
)
_LLAMA_LIKE = WriterLayout("self_attn.o_proj", "mlp.down_proj")

KNOWN_WRITERS: dict[str, WriterLayout] = {
    "LlamaForCausalLM": _LLAMA_LIKE,
    "MistralForCausalLM": _LLAMA_LIKE,
    "Qwen2ForCausalLM": _LLAMA_LIKE,
    "Qwen3ForCausalLM": _LLAMA_LIKE,
    "GemmaForCausalLM": _LLAMA_LIKE,
    "Phi3ForCausalLM": _LLAMA_LIKE,
    "Gemma2ForCausalLM": _POST_NORM,
    "Gemma3ForCausalLM": _POST_NORM,
    "GPT2LMHeadModel": WriterLayout("attn.c_proj", "mlp.c_proj"),
    "GPTNeoXForCausalLM": WriterLayout("attention.dense", "mlp.dense_4h_to_h"),
}
_ATTN_NAMES = ("self_attn", "attn", "attention", "self_attention")
_MLP_NAMES = ("mlp", "feed_forward", "ffn")


def _out_features(module: nn.Module) -> int | None:
    if isinstance(module, nn.Linear):
        return module.out_features
    weight = getattr(module, "weight", None)
    if type(module).__name__ == "Conv1D" and isinstance(weight, torch.Tensor):  # GPT-2's layer: weight [in, out]
        return int(weight.shape[1])
    return None


def _last_projection(parent: nn.Module, width: int) -> str | None:
    found = [name for name, m in parent.named_modules() if name and _out_features(m) == width]
    return found[-1] if found else None


def _probe(block: nn.Module, width: int) -> WriterLayout | None:
    children = dict(block.named_children())
    if "post_feedforward_layernorm" in children and "post_attention_layernorm" in children:
        return _POST_NORM
    paths = []
    for names in (_ATTN_NAMES, _MLP_NAMES):
        name = next((n for n in names if n in children), None)
        inner = _last_projection(children[name], width) if name else None
        if inner is None:
            return None
        paths.append(f"{name}.{inner}")
    return WriterLayout(paths[0], paths[1])


def writer_layout(lm: LoadedModel, writer_paths: tuple[str, str] | None = None) -> WriterLayout:
    """The writer layout of `lm`: the override, the known one for its class, or a probe of block 0."""
    layout: WriterLayout | None
    if writer_paths is not None:
        layout = WriterLayout(writer_paths[0], writer_paths[1])
    else:
        layout = KNOWN_WRITERS.get(type(lm.model).__name__) or _probe(lm.blocks[0], lm.width)
    if layout is None:
        raise ArchitectureError(
            f"cannot find the attention-output and MLP-output projections of {type(lm.model).__name__}; "
            "fix: pass writer_paths=('path.in.block.to.attn_out', 'path.in.block.to.mlp_out'), "
            "e.g. ('self_attn.o_proj', 'mlp.down_proj')"
        )
    block_writers(lm, 0, layout)  # fail now, naming the missing path
    return layout


def block_writers(lm: LoadedModel, layer: int, layout: WriterLayout) -> tuple[nn.Module, nn.Module]:
    """(attention writer, MLP writer) of block `layer`."""
    block = lm.blocks[layer]
    try:
        return block.get_submodule(layout.attn), block.get_submodule(layout.mlp)
    except AttributeError as e:
        raise ArchitectureError(
            f"block {layer} of {type(lm.model).__name__} has no {e}; pass writer_paths=(attn_out, mlp_out)"
        ) from None


def embedding_writers(lm: LoadedModel) -> list[tuple[str, nn.Embedding]]:
    """Every embedding outside the blocks that writes a width-sized vector (tokens, learned positions)."""
    block_ids = {id(m) for b in lm.blocks for m in b.modules()}
    found = [
        (name, m)
        for name, m in lm.model.named_modules()
        if isinstance(m, nn.Embedding) and id(m) not in block_ids and m.embedding_dim == lm.width
    ]
    if not found:
        raise ArchitectureError(f"found no width-{lm.width} embedding in {type(lm.model).__name__}")
    return found
