"""Which modules write into the residual stream: the embeddings, and in each block the
attention output and the MLP output; and which linear layer is the MLP's down-projection.

The paths come from the family table (`emscope.models.families`), with a structural
fallback (the last linear layer of the block's attention / MLP child whose output width is
the stream's) and a user override (``writer_paths=("self_attn.o_proj", "mlp.down_proj")``).

Some families (Gemma 2/3) normalise each sub-layer's output *after* its projection before
adding it to the stream; there the writer is the norm, and the projection's weights
cannot be orthogonalised exactly (`WriterLayout.orthogonalizable` is False).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from emscope.errors import ArchitectureError
from emscope.models.families import POST_NORM_NOTE, POST_NORM_WRITERS, Family, family_of
from emscope.models.loading import LoadedModel


@dataclass(frozen=True)
class WriterLayout:
    """Paths, inside one decoder block, of the modules whose outputs are added to the stream."""

    attn: str
    mlp: str
    orthogonalizable: bool = True
    note: str = ""


_POST_NORM = WriterLayout(*POST_NORM_WRITERS, orthogonalizable=False, note=POST_NORM_NOTE)
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
    if all(name in children for name in POST_NORM_WRITERS):
        return _POST_NORM
    paths = []
    for names in (_ATTN_NAMES, _MLP_NAMES):
        name = next((n for n in names if n in children), None)
        inner = _last_projection(children[name], width) if name else None
        if inner is None:
            return None
        paths.append(f"{name}.{inner}")
    return WriterLayout(paths[0], paths[1])


def family_layout(family: Family) -> WriterLayout:
    """The writer layout of a family in the table."""
    note = POST_NORM_NOTE if family.post_norm else ""
    return WriterLayout(family.attn_out, family.mlp_out, orthogonalizable=not family.post_norm, note=note)


def _resolves(lm: LoadedModel, layout: WriterLayout) -> bool:
    try:
        block_writers(lm, 0, layout)
    except ArchitectureError:
        return False
    return True


def writer_layout(lm: LoadedModel, writer_paths: tuple[str, str] | None = None) -> WriterLayout:
    """The writer layout of `lm`: the override, its family's (if it resolves), or a probe of block 0."""
    if writer_paths is not None:
        layout = WriterLayout(writer_paths[0], writer_paths[1])
        block_writers(lm, 0, layout)  # fail now, naming the missing path
        return layout
    family = family_of(lm.model)
    if family is not None and _resolves(lm, layout := family_layout(family)):
        return layout
    probed = _probe(lm.blocks[0], lm.width)
    if probed is None or not _resolves(lm, probed):
        raise ArchitectureError(
            f"cannot find the attention-output and MLP-output projections of {type(lm.model).__name__}; "
            "fix: pass writer_paths=('path.in.block.to.attn_out', 'path.in.block.to.mlp_out'), "
            "e.g. ('self_attn.o_proj', 'mlp.down_proj')"
        )
    return probed


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


def is_linear(module: nn.Module) -> bool:
    """A linear layer: ``nn.Linear`` or GPT-2's ``Conv1D``."""
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def down_projection(lm: LoadedModel, layer: int) -> str:
    """Path, inside block `layer`, of the MLP's down-projection (its last linear layer of the stream's width).

    From the family table; else found by probing the block's MLP child.
    """
    block = lm.blocks[layer]
    family = family_of(lm.model)
    candidates = [family.down_proj] if family else []
    mlp = next((n for n in _MLP_NAMES if hasattr(block, n)), None)
    if mlp is not None and (inner := _last_projection(block.get_submodule(mlp), lm.width)) is not None:
        candidates.append(f"{mlp}.{inner}")
    for path in candidates:
        try:
            if is_linear(block.get_submodule(path)):
                return path
        except AttributeError:
            continue
    linears = [n for n, m in block.named_modules() if is_linear(m)]
    raise ArchitectureError(
        f"cannot find the MLP down-projection in block {layer} of {type(lm.model).__name__} "
        f"(linear modules there: {', '.join(linears) or 'none'})"
    )
