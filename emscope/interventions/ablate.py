"""Directional ablation: project a direction out of the residual stream.

    with ablate(lm, direction):          # every layer, the standard sites
        out = lm.model.generate(ids, max_new_tokens=64)

By default the component along the direction is removed wherever something enters the
stream: at each block's input (for block 0 that is the embedding output) and from each
block's attention output and MLP output before they are added. (The input hook of block
L is skipped when block L-1 is ablated with coefficient 1: its output is already clean.) The stream then carries
no component along the direction anywhere, including between the attention and MLP of a
block, and the result equals the weight-orthogonalised model
(`emscope.interventions.orthogonalize.orthogonalize_weights`) up to float rounding. This is the
ablation of Arditi et al. (2024), "Refusal in language models is mediated by a single
direction". ``sites=("block_output",)`` gives the cheaper block-output-only variant.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

from torch.utils.hooks import RemovableHandle

from emscope.activations.hooks import BlockHook, add_block_hook, add_block_pre_hook
from emscope.errors import NotSupportedError
from emscope.interventions.handle import DirectionLike, Intervention, attach, unit_vector
from emscope.interventions.operators import bind, get_operator
from emscope.models.architecture import LayerSpec, resolve_layers
from emscope.models.loading import LoadedModel
from emscope.models.writers import WriterLayout, block_writers, writer_layout

# (model, layer, hook, writer layout or None) -> handle
Site = Callable[[LoadedModel, int, BlockHook, WriterLayout | None], RemovableHandle]


def _block_input(lm: LoadedModel, layer: int, fn: BlockHook, _w: WriterLayout | None) -> RemovableHandle:
    return add_block_pre_hook(lm.blocks[layer], fn)


def _block_output(lm: LoadedModel, layer: int, fn: BlockHook, _w: WriterLayout | None) -> RemovableHandle:
    return add_block_hook(lm.blocks[layer], fn)


def _attn_output(lm: LoadedModel, layer: int, fn: BlockHook, w: WriterLayout | None) -> RemovableHandle:
    assert w is not None  # SITES_NEEDING_WRITERS guarantees it
    return add_block_hook(block_writers(lm, layer, w)[0], fn)


def _mlp_output(lm: LoadedModel, layer: int, fn: BlockHook, w: WriterLayout | None) -> RemovableHandle:
    assert w is not None
    return add_block_hook(block_writers(lm, layer, w)[1], fn)


SITES: dict[str, Site] = {
    "block_input": _block_input,
    "attn_output": _attn_output,
    "mlp_output": _mlp_output,
    "block_output": _block_output,
}
SITES_NEEDING_WRITERS = frozenset({"attn_output", "mlp_output"})
DEFAULT_SITES = ("block_input", "attn_output", "mlp_output")


def ablate(
    lm: LoadedModel,
    direction: DirectionLike,
    layers: LayerSpec = "all",
    sites: Sequence[str] = DEFAULT_SITES,
    *,
    coefficient: float = 1.0,
    writer_paths: tuple[str, str] | None = None,
    allow_other_model: bool = False,
) -> Intervention:
    """Project `direction` out of the residual stream at `sites` of every block in `layers`.

    `sites` are names from `SITES`. `coefficient` scales the projection (1 removes the
    component, 2 reflects it). `writer_paths` overrides where the attention and MLP outputs
    are found (see `emscope.models.writers`). Returns an `Intervention`: ``.remove()`` it, or use
    it in a ``with`` block.
    """
    unknown = [s for s in sites if s not in SITES]
    if unknown or not sites:
        raise NotSupportedError(f"unknown ablation sites {unknown or sites!r}; choose from {', '.join(SITES)}")
    unit, _ = unit_vector(lm, direction, allow_other_model=allow_other_model)
    chosen = resolve_layers(layers, lm.n_layers)
    layout = writer_layout(lm, writer_paths) if SITES_NEEDING_WRITERS.intersection(sites) else None
    fn = bind(get_operator("project_out"), unit, float(coefficient))
    registrations = [
        partial(SITES[site], lm, layer, fn, layout)
        for layer in chosen
        for site in sites
        if not _redundant(site, layer, chosen, sites, coefficient)
    ]
    return attach(registrations, f"ablate layers={_short(chosen, lm.n_layers)} sites={list(sites)}")


def _redundant(site: str, layer: int, chosen: list[int], sites: Sequence[str], coefficient: float) -> bool:
    """Block L's input is block L-1's output: when the input of L-1 and both its writes are already
    projected (coefficient 1), the input of L is clean too, so its hook would only cost time."""
    writes = {"attn_output", "mlp_output"}
    return (
        site == "block_input"
        and coefficient == 1.0
        and layer - 1 in chosen
        and (writes | {"block_input"}).issubset(sites)
    )


def _short(layers: list[int], n_layers: int) -> str:
    return "all" if layers == list(range(n_layers)) else str(layers)
