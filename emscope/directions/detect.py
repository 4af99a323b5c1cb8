"""Use a direction as a detector: the projection of each transcript's pooled activation on it.

Higher scores mean "more like the direction's positive class" (for EM directions:
more misaligned). The projection is on the *unit* direction, in residual-stream units, at
the direction's layer, pooled over the assistant's response tokens.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from emscope.data.transcripts import Transcript
from emscope.directions.direction import Direction
from emscope.errors import ConfigError, WidthMismatchError
from emscope.models.lineage import Compatibility

if TYPE_CHECKING:
    from emscope.models.loading import LoadedModel


def project(activations: torch.Tensor, direction: Direction | torch.Tensor) -> torch.Tensor:
    """Projection of rows of ``activations`` [..., D] on the *unit* direction -> [...], in float32.

    The one projection of emscope (scoring, measures, re-alignment, held-out metrics): the
    direction's length does not change it (the result is in residual-stream units along
    the direction) and its sign is the direction's (positive = towards its positive class).
    """
    vector = direction.vector if isinstance(direction, Direction) else direction
    if activations.shape[-1] != vector.shape[-1]:
        raise WidthMismatchError(
            f"activations have width {activations.shape[-1]} but the direction has width {vector.shape[-1]}"
        )
    unit = vector.float() / vector.float().norm().clamp_min(1e-12)
    return activations.float() @ unit.to(activations.device)


def score(
    lm: LoadedModel,
    transcripts: str | os.PathLike[str] | Sequence[Transcript | dict[str, Any]],
    direction: Direction,
    pool: str = "mean",
    batch_size: int = 8,
    progress: bool = False,
    compatibility: Compatibility = "same_base",
    max_length: int | None = None,
) -> torch.Tensor:
    """Projection [N] of each transcript's response activation (at ``direction.layer``) on the direction.

    Raises `WidthMismatchError` / `LayerIndexError` / `ModelMismatchError` when the direction was
    made for another model (see `Direction.check_compatible`, whose `compatibility` is passed on).
    `max_length` truncates each tokenised transcript.
    """
    from emscope.activations.capture import capture_activations
    from emscope.activations.sites import DEFAULT_SITE, canonical_site

    direction.check_compatible(lm, compatibility)
    if canonical_site(direction.site) != DEFAULT_SITE:  # capture reads block outputs only
        raise ConfigError(
            f"score reads activations at {DEFAULT_SITE} (block outputs), but this direction was read at "
            f"{direction.site!r}: project activations captured at that site yourself (emscope.directions.detect.project)"
        )
    acts = capture_activations(
        lm,
        transcripts,
        layers=[direction.layer],
        pool=pool,
        batch_size=batch_size,
        max_length=max_length,
        progress=progress,
    )
    return project(acts.pooled[direction.layer], direction)
