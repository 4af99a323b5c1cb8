"""`Direction`: a vector in a model's residual stream, with the provenance to use it safely.

A direction is a value: it can be scaled, negated, saved and loaded. Loading it onto a
model checks the width (and, unless told otherwise, the model name) so that a direction
from a 576-wide model is never silently applied to an 896-wide one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from emscope.artifacts import load_artifact, save_artifact
from emscope.errors import LayerIndexError, WidthMismatchError

KIND = "direction"
LAYER_CONVENTION = "block_output: layer i = output of decoder block i = HF hidden_states[i+1] (pre final norm)"


@dataclass(frozen=True)
class Direction:
    """A residual-stream direction at one layer (block output, see `emscope.models.architecture`)."""

    vector: torch.Tensor  # [width], float32; not necessarily unit norm (see `normalisation`)
    layer: int
    model: str  # model spec it was extracted from
    method: str = "diff_in_means"
    site: str = "block_output"
    token_selection: str = "response_mean"  # how activations were pooled at extraction
    operation: str = "steer_or_ablate"
    normalisation: str = "none"  # "none" (raw mean difference) or "unit"
    model_revision: str | None = None
    n_per_class: dict[str, int] = field(default_factory=dict)
    dataset_fingerprint: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)  # held-out metrics at extraction
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def width(self) -> int:
        return int(self.vector.shape[-1])

    @property
    def unit(self) -> torch.Tensor:
        """The unit-norm vector (float32)."""
        v = self.vector.float()
        return v / v.norm().clamp_min(1e-12)

    def scaled(self, factor: float) -> Direction:
        return replace(self, vector=self.vector * factor)

    def __neg__(self) -> Direction:
        return self.scaled(-1.0)

    def check_compatible(self, lm: Any, allow_other_model: bool = False) -> None:
        """Raise if this direction cannot be applied to `lm` (a `LoadedModel`)."""
        if self.width != lm.width:
            raise WidthMismatchError(
                f"direction from {self.model!r} has width {self.width} but {lm.spec!r} has width {lm.width}; "
                "extract a direction on this model, or map it across models first (emscope.transfer)"
            )
        if not 0 <= self.layer < lm.n_layers:
            raise LayerIndexError(
                f"direction is for layer {self.layer}, but {lm.spec!r} has layers 0..{lm.n_layers - 1}"
            )
        if not allow_other_model and self.model != lm.spec:
            raise WidthMismatchError(
                f"direction was extracted from {self.model!r}, not {lm.spec!r} (same width {lm.width}); "
                "pass allow_other_model=True to apply it across models on purpose"
            )

    def save(self, directory: str | os.PathLike[str]) -> Path:
        fields = {k: v for k, v in self.__dict__.items() if k != "vector"}
        fields.update(width=self.width, layer_convention=LAYER_CONVENTION)
        return save_artifact(directory, KIND, fields, {"vector": self.vector.float()})

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> Direction:
        config, tensors = load_artifact(directory, KIND)
        names = set(cls.__dataclass_fields__) - {"vector"}
        return cls(vector=tensors["vector"], **{k: v for k, v in config.items() if k in names})
