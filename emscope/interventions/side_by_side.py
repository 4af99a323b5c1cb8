"""Side-by-side answers: the plain model, the model intervened along the target, and the
same intervention along each control direction (so a change in tone is read against the
changes any direction of the same norm would make)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from functools import partial
from typing import Any

from emscope.errors import lookup
from emscope.interventions.controls import control_directions
from emscope.interventions.dose_response import INTERVENTIONS, TARGET
from emscope.interventions.handle import DirectionLike
from emscope.interventions.measures import generate_answers
from emscope.models.architecture import LayerSpec
from emscope.models.lineage import Compatibility
from emscope.models.loading import LoadedModel

PLAIN = "plain"


def answers_with_controls(
    lm: LoadedModel,
    direction: DirectionLike,
    prompts: Sequence[str],
    *,
    alpha: float = 4.0,
    layers: LayerSpec = None,
    intervention: str = "steer",
    positions: str = "all",
    n_controls: int = 2,
    control_kinds: Sequence[str] = ("random", "orthogonal"),
    seed: int = 0,
    max_new_tokens: int = 48,
    compatibility: Compatibility = "same_base",
) -> dict[str, list[str]]:
    """Greedy answers to `prompts`: ``{"plain": [...], "target": [...], "random:0": [...], ...}``.

    `intervention` is ``"steer"`` (alpha = multiple of the unit vector) or ``"ablate"``
    (alpha = projection coefficient, 1 removes the component); `positions` is passed to
    `steer`. ``n_controls=0`` skips the controls. `compatibility`: see `Direction.check_compatible`.
    """
    intervene = lookup(INTERVENTIONS, intervention, "intervention")
    directions = {TARGET: direction}
    if n_controls > 0:
        directions.update(control_directions(direction, n_controls, seed, control_kinds))
    out = {PLAIN: _answers(lm, prompts, max_new_tokens, nullcontext)}
    for name, d in directions.items():
        intervened = partial(intervene, lm, d, alpha, layers, positions, compatibility)
        out[name] = _answers(lm, prompts, max_new_tokens, intervened)
    return out


def _answers(lm: LoadedModel, prompts: Sequence[str], max_new_tokens: int, make: Callable[[], Any]) -> list[str]:
    with make():
        return generate_answers(lm, prompts, max_new_tokens)
