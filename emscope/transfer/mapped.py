"""Carry a donor's direction into a receiver's residual stream through a fitted map, and its controls.

A direction is a difference of activations, so only the linear part of the map acts on it (the
intercept cancels): ``mapped = direction.vector @ map.matrix``. The result is a `Direction` of the
receiver (its model, layer and lineage), recording the map and the donor direction it came from.

The control for a mapped direction is a *mapped-random* one: a random donor direction of the same
norm pushed through the same map. A map concentrates everything it carries in the receiver's
high-variance subspace, so a mapped direction can look aligned with, or steer like, any other
direction there; only a mapped direction that beats the mapped-random ones carries something of
the donor's direction itself.
"""

from __future__ import annotations

from dataclasses import replace

from emscope.directions.direction import Direction
from emscope.errors import LayerIndexError
from emscope.interventions.controls import random_directions
from emscope.models.lineage import Compatibility
from emscope.transfer.maps import ActivationMap


def map_direction(
    activation_map: ActivationMap, direction: Direction, compatibility: Compatibility = "same_base"
) -> Direction:
    """The receiver `Direction` of `direction` (a donor direction at the map's source layer).

    Raises `WidthMismatchError` / `ModelMismatchError` / `LayerIndexError` when the direction is not
    of the map's source model and layer (`compatibility` as in `Direction.check_compatible`).
    """
    src = activation_map.source
    src.check(direction.model, direction.width, direction.model_lineage, compatibility, "the direction")
    if direction.layer != src.layer:
        raise LayerIndexError(
            f"the direction is for layer {direction.layer} but the map reads {src.describe()}; "
            f"fit a map at layer {direction.layer} (emscope transfer --source ... --direction DIR does)"
        )
    tgt = activation_map.target
    vector = activation_map.apply_linear(direction.vector)
    return Direction(
        vector=vector,
        layer=tgt.layer,
        model=tgt.model,
        method=f"mapped_{activation_map.kind}:{direction.method}",
        site=direction.site,
        token_selection=direction.token_selection,
        normalisation="mapped",
        model_revision=tgt.revision,
        n_per_class=dict(direction.n_per_class),
        dataset_fingerprint=direction.dataset_fingerprint,
        metrics={},
        meta={
            "source_model": src.model,
            "source_layer": src.layer,
            "source_lineage": src.lineage.to_dict(),
            "source_method": direction.method,
            "source_norm": float(direction.vector.float().norm()),
            "map_kind": activation_map.kind,
            "map_r2_heldout": activation_map.r2_heldout,
            "map_fingerprint": activation_map.dataset_fingerprint,
            **({"control": direction.meta["control"]} if "control" in direction.meta else {}),
        },
        lineage=tgt.lineage,
    )


def mapped_random_directions(
    activation_map: ActivationMap, donor_direction: Direction, n: int = 5, seed: int = 0
) -> list[Direction]:
    """`n` random donor directions of the donor direction's norm, pushed through the same map."""
    out = []
    for i, d in enumerate(random_directions(donor_direction, n, seed)):
        assert isinstance(d, Direction)  # random_directions keeps the Direction type
        mapped = map_direction(activation_map, d)
        meta = {**mapped.meta, "control": "mapped_random", "seed": seed, "index": i}
        out.append(replace(mapped, method=f"control_mapped_random:{activation_map.kind}", meta=meta))
    return out
