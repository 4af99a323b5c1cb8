"""Use a direction as a detector: the projection of each transcript's pooled activation on it.

Higher scores mean "more like the direction's positive class" (for EM directions:
more misaligned). The projection is on the *unit* direction, in residual-stream units, at
the direction's layer, pooled over the assistant's response tokens.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from emscope.data.transcripts import Transcript
from emscope.directions.direction import Direction
from emscope.errors import WidthMismatchError
from emscope.models.loading import LoadedModel


def project(activations: torch.Tensor, direction: Direction | torch.Tensor) -> torch.Tensor:
    """Projection of rows of ``activations`` [N, D] on the unit direction -> [N]."""
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
    allow_other_model: bool = False,
) -> torch.Tensor:
    """Projection [N] of each transcript's response activation (at ``direction.layer``) on the direction.

    Raises `WidthMismatchError` / `LayerIndexError` when the direction was made for another
    model (see `Direction.check_compatible`).
    """
    from emscope.activations.capture import capture_activations

    direction.check_compatible(lm, allow_other_model=allow_other_model)
    acts = capture_activations(
        lm, transcripts, layers=[direction.layer], pool=pool, batch_size=batch_size, progress=progress
    )
    return project(acts.pooled[direction.layer], direction)
