"""Activation steering: add ``alpha * unit direction`` to the residual stream at chosen layers.

    with steer(lm, direction, alpha=4.0):            # at direction.layer, all positions
        out = lm.model.generate(ids, max_new_tokens=64)

    handle = steer(lm, direction, alpha=-4.0, layers=[6, 8], positions="generated")
    ...
    handle.remove()

Layer ``L`` means the output of decoder block ``L`` (see `emscope.models.architecture`), so layers
before ``L`` are untouched. The vector is added at the direction's ``site`` (``resid_post``, the
block output, for every extracted direction), or at ``site=`` (a name of
`emscope.activations.sites`, e.g. ``"mlp_out"``, or one place such as ``"resid_pre.3"``). See `emscope.interventions.handle` for how ``positions`` behaves with
and without a KV cache.
"""

from __future__ import annotations

from functools import partial

from emscope.activations.sites import DEFAULT_SITE, Site, describe, hook_site, parse_site, resolve_sites, writers_for
from emscope.directions.direction import Direction
from emscope.errors import LayerIndexError
from emscope.interventions.handle import (
    DirectionLike,
    Intervention,
    PromptTracker,
    attach,
    masked,
    position_selector,
    unit_vector,
)
from emscope.interventions.operators import bind, get_operator
from emscope.models.architecture import LayerSpec
from emscope.models.lineage import Compatibility
from emscope.models.loading import LoadedModel


def steer(
    lm: LoadedModel,
    direction: DirectionLike,
    alpha: float,
    layers: LayerSpec = None,
    positions: str = "all",
    *,
    operator: str = "add",
    site: str | Site | None = None,
    compatibility: Compatibility = "same_base",
) -> Intervention:
    """Add ``alpha * unit(direction)`` at `site` of each block in `layers` (default: the direction's site and layer).

    `alpha` is in residual-stream units (the vector is normalised first); a negative alpha
    subtracts. `positions` is ``"all"``, ``"prompt"`` or ``"generated"``. `operator` names
    an entry of `emscope.interventions.operators.OPERATORS` (``"add"``; ``"set"`` clamps the component to
    alpha). `site` (default: the direction's, ``resid_post`` for a tensor) is where the vector
    is added. Returns an `Intervention`: ``.remove()`` it, or use it in a ``with`` block.
    """
    unit, own_layer = unit_vector(lm, direction, compatibility=compatibility)
    if site is None:
        site = direction.site if isinstance(direction, Direction) else DEFAULT_SITE
    where = parse_site(site)
    if layers is None and where.layer is None:
        if own_layer is None:
            raise LayerIndexError("a plain tensor carries no layer: pass layers= (e.g. layers=12)")
        layers = own_layer
    places = resolve_sites([where], layers, lm.n_layers)
    op = bind(get_operator(operator), unit, float(alpha))
    selector = position_selector(positions)
    tracker = PromptTracker() if selector is not None else None
    fn = masked(op, selector, tracker)
    # on the decoder stack (``base_model``), so that calls to it alone (as `emscope.activations.capture` makes) are followed too
    body = getattr(lm.model, "base_model", lm.model)
    registrations = [partial(tracker.attach, body)] if tracker is not None else []
    layout = writers_for(lm, places)
    registrations += [partial(hook_site, lm, place, fn, layout) for place in places]
    return attach(
        registrations, f"steer {operator} alpha={alpha:g} {describe(places, lm.n_layers)} positions={positions}"
    )
