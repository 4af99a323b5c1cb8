"""`Direction`: a vector in a model's residual stream, with the provenance to use it safely.

A direction is a value: it can be scaled, negated, saved and loaded. Applying it to a
model checks the width, so that a direction from a 576-wide model is never silently
applied to an 896-wide one, and the model's lineage (`emscope.models.lineage`): by default
a direction fits every model that shares its base, e.g. a base model's direction fits its
fine-tunes, while an unrelated model of the same width is refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from emscope.artifacts import DAMAGED, load_artifact, save_artifact
from emscope.errors import ArtifactError, LayerIndexError, ModelMismatchError, WidthMismatchError, lookup
from emscope.models.lineage import COMPATIBILITY, Compatibility, Lineage, lineage_of_spec

KIND = "direction"
DIRECTION_FORMAT = 2  # 2: records the model's lineage; 1 (no "direction_format" key): the model spec alone
LAYER_CONVENTION = "resid_post: layer i = output of decoder block i = HF hidden_states[i+1] (pre final norm)"


@dataclass(frozen=True)
class Direction:
    """A residual-stream direction at one layer (block output, see `emscope.models.architecture`)."""

    vector: torch.Tensor  # [width], float32; not necessarily unit norm (see `normalisation`)
    layer: int
    model: str  # model spec it was extracted from
    method: str = "diff_in_means"
    site: str = "resid_post"  # where it was read and is steered (emscope.activations.sites; old "block_output" = this)
    token_selection: str = "response_mean"  # how activations were pooled at extraction
    operation: str = "steer_or_ablate"
    normalisation: str = "none"  # "none" (raw mean difference) or "unit"
    model_revision: str | None = None
    n_per_class: dict[str, int] = field(default_factory=dict)
    dataset_fingerprint: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)  # held-out metrics at extraction
    meta: dict[str, Any] = field(default_factory=dict)
    lineage: Lineage | None = None  # the model's base and fine-tune; None (older files): derived from `model`

    def __post_init__(self) -> None:
        if isinstance(self.lineage, dict):  # as read back from config.json
            object.__setattr__(self, "lineage", Lineage.from_dict(self.lineage))

    @property
    def model_lineage(self) -> Lineage:
        """The lineage recorded at extraction, or the best guess from the model spec for older directions."""
        return self.lineage if self.lineage is not None else lineage_of_spec(self.model)

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

    def check_compatible(self, lm: Any, compatibility: Compatibility = "same_base") -> None:
        """Raise if this direction cannot be applied to `lm` (a `LoadedModel`).

        `compatibility`: ``"same_base"`` (default) accepts any model sharing this direction's
        base model (the base itself, its fine-tunes, their checkpoints); ``"same_model"`` only
        the very weights it was extracted from; ``"any"`` every model of the same width.
        """
        lookup(COMPATIBILITY, compatibility, "compatibility")
        if self.width != lm.width:
            raise WidthMismatchError(
                f"direction from {self.model!r} has width {self.width} but {lm.spec!r} has width {lm.width}; "
                f"extract a direction on this model instead (emscope direction --model {lm.spec} ...)"
            )
        if not 0 <= self.layer < lm.n_layers:
            raise LayerIndexError(
                f"direction is for layer {self.layer}, but {lm.spec!r} has layers 0..{lm.n_layers - 1}"
            )
        if compatibility == "any" or (self.lineage is None and self.model == lm.spec):
            return
        mine = self.model_lineage
        theirs = lm.lineage if hasattr(lm, "lineage") else Lineage(base=lm.spec)
        if mine.fits(theirs, compatibility):
            return
        fix = "same_base" if mine.same_base(theirs) else "any"
        raise ModelMismatchError(
            f"direction from {self.model!r} [{mine.describe()}] does not fit {lm.spec!r} [{theirs.describe()}] "
            f"under compatibility={compatibility!r}: "
            f"{'another fine-tune of its base' if fix == 'same_base' else 'another base model'}, same width "
            f"{lm.width}; fix: use a direction extracted on this model, or pass compatibility={fix!r} "
            f"(CLI: --compatibility {fix}) to apply it across models on purpose"
        )

    def fields(self) -> dict[str, Any]:
        """Everything but the vector, as plain JSON values (what ``config.json`` records)."""
        fields = {k: v for k, v in self.__dict__.items() if k != "vector"}
        fields["lineage"] = self.lineage.to_dict() if self.lineage is not None else None
        return fields

    def save(self, directory: str | os.PathLike[str]) -> Path:
        fields = self.fields()
        fields.update(width=self.width, layer_convention=LAYER_CONVENTION, direction_format=DIRECTION_FORMAT)
        return save_artifact(directory, KIND, fields, {"vector": self.vector.float()})

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> Direction:
        config, tensors = load_artifact(directory, KIND, required=("layer", "model"), tensors=("vector",))
        vector, layer = tensors["vector"], config["layer"]
        if not isinstance(layer, int) or isinstance(layer, bool) or vector.ndim != 1:
            raise ArtifactError(
                f"{directory}: a direction needs an integer 'layer' and a 1-D 'vector', found layer {layer!r} and a "
                f"vector of shape {list(vector.shape)}; {DAMAGED}"
            )
        if config.get("width", vector.shape[0]) != vector.shape[0]:
            raise ArtifactError(
                f"{directory}: config.json says width {config['width']} but the vector has {vector.shape[0]}; {DAMAGED}"
            )
        if config.get("direction_format", 1) > DIRECTION_FORMAT:
            raise ArtifactError(
                f"{directory} holds a direction of format {config['direction_format']} (emscope "
                f"{config.get('emscope_version')}); this emscope reads up to {DIRECTION_FORMAT}: upgrade emscope"
            )
        names = set(cls.__dataclass_fields__) - {"vector"}
        return cls(vector=vector, **{k: v for k, v in config.items() if k in names})


def direction_provenance(lm: Any, **meta: Any) -> dict[str, Any]:
    """The keywords of `layer_sweep` (and so of each `Direction`) that name the model read: spec, revision,
    lineage, and width, depth and source in `meta` (plus any extra `meta`)."""
    return {
        "model": lm.spec,
        "model_revision": lm.revision,
        "lineage": lm.lineage,
        "meta": {"model_width": lm.width, "model_n_layers": lm.n_layers, "model_source": lm.source, **meta},
    }
