"""Directional ablation: project a direction out of the residual stream.

    with ablate(lm, direction):          # every layer, the standard sites
        out = lm.model.generate(ids, max_new_tokens=64)

By default the component along the direction is removed wherever something enters the
stream: at each block's input (``resid_pre``; for block 0 that is the embedding output) and
from each block's attention and MLP outputs (``attn_out``, ``mlp_out``) before they are
added. (The input hook of block L is skipped when block L-1 is ablated with coefficient 1:
its output is already clean.) The stream then carries no component along the direction
anywhere, including between the attention and MLP of a block, and the result equals the
weight-orthogonalised model (`emscope.interventions.orthogonalize.orthogonalize_weights`) up
to float rounding. This is the ablation of Arditi et al. (2024), "Refusal in language models
is mediated by a single direction". ``sites=("resid_post",)`` gives the cheaper
block-output-only variant. Site names are those of `emscope.activations.sites`; the
direction's own ``site`` (where it was read) does not matter here, since every site lives in
the same residual-stream space.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from emscope.activations.sites import Site, describe, hook_site, resolve_sites, writers_for
from emscope.interventions.handle import DirectionLike, Intervention, attach, unit_vector
from emscope.interventions.operators import bind, get_operator
from emscope.models.architecture import LayerSpec
from emscope.models.lineage import Compatibility
from emscope.models.loading import LoadedModel

DEFAULT_SITES = ("resid_pre", "attn_out", "mlp_out")


def ablate(
    lm: LoadedModel,
    direction: DirectionLike,
    layers: LayerSpec = None,
    sites: Sequence[str | Site] = DEFAULT_SITES,
    *,
    coefficient: float = 1.0,
    writer_paths: tuple[str, str] | None = None,
    compatibility: Compatibility = "same_base",
) -> Intervention:
    """Project `direction` out of the residual stream at `sites` of every block in `layers` (None: all).

    `sites` are names from `emscope.activations.sites.SITES` (``resid_pre``, ``attn_out``,
    ``mlp_out``, ``resid_post``), bare or with their own layer (``"resid_post.3"``, then
    without `layers`). `coefficient` scales the projection (1 removes the component, 2
    reflects it). `writer_paths` overrides where the attention and MLP outputs are found
    (see `emscope.models.writers`). Returns an `Intervention`: ``.remove()`` it, or use it in
    a ``with`` block.
    """
    places = resolve_sites(sites, layers, lm.n_layers)
    unit, _ = unit_vector(lm, direction, compatibility=compatibility)
    layout = writers_for(lm, places, writer_paths)
    fn = bind(get_operator("project_out"), unit, float(coefficient))
    chosen = set(places)
    registrations = [
        partial(hook_site, lm, place, fn, layout) for place in places if not _redundant(place, chosen, coefficient)
    ]
    return attach(registrations, f"ablate {describe(places, lm.n_layers)}")


def _redundant(place: Site, chosen: set[Site], coefficient: float) -> bool:
    """Block L's input is block L-1's output: when that output is already clean (coefficient 1, and
    either it is projected or the input of L-1 and both its writes are), a hook on it only costs time."""
    if place.name != "resid_pre" or coefficient != 1.0 or not place.layer:
        return False
    before = place.layer - 1
    clean_writes = {Site(name, before) for name in ("resid_pre", "attn_out", "mlp_out")} <= chosen
    return clean_writes or Site("resid_post", before) in chosen
