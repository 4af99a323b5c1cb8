"""`SparseAutoencoder`: emscope's own SAE value, plain torch, saved as a self-describing artifact.

Whatever library trained it, an SAE here is four tensors and a rule (the eai-sparsify
convention): ``pre = relu((x - b_dec) @ W_enc.T + b_enc)``; ``"topk"`` keeps the `k`
largest of ``pre``, ``"groupmax"`` keeps the largest of each of `k` equal groups of latents;
``x_hat = z @ W_dec + b_dec``. Loading it needs neither the training library nor its
version: the artifact (kind ``"sae"``) records the model and its lineage, the layer and
site it reads, the library and version that trained it, the training settings and the
quality measured on held-out data.

Tokens whose activation norm exceeds `max_norm` (attention-sink tokens, e.g. the first
token of SmolLM2 at ~140x the median norm) were left out of training; `in_domain` says
which rows those are, and splicing the reconstruction into a model passes them through.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from emscope.activations.sites import DEFAULT_SITE, canonical_site
from emscope.artifacts import DAMAGED, load_artifact, save_artifact
from emscope.directions.direction import Direction
from emscope.errors import (
    ArtifactError,
    ConfigError,
    LayerIndexError,
    ModelMismatchError,
    WidthMismatchError,
    lookup,
)
from emscope.models.lineage import Compatibility, Lineage

KIND = "sae"
SAE_FORMAT = 1
ACTIVATIONS = ("topk", "groupmax")
_TENSORS = ("W_enc", "b_enc", "W_dec", "b_dec")


@dataclass(frozen=True, eq=False)
class SparseAutoencoder:
    """A sparse autoencoder on one site (``site.layer``) of one model's residual stream."""

    W_enc: torch.Tensor  # [n_latents, width]
    b_enc: torch.Tensor  # [n_latents]
    W_dec: torch.Tensor  # [n_latents, width], rows unit norm when trained with normalize_decoder
    b_dec: torch.Tensor  # [width]
    k: int  # latents kept per token (topk) or number of groups (groupmax)
    layer: int
    model: str  # spec of the model whose activations it was trained on
    activation: str = "topk"
    site: str = DEFAULT_SITE
    lineage: Lineage | None = None
    library: str = ""  # e.g. "eai-sparsify"
    library_version: str = ""
    max_norm: float | None = None  # rows above this norm were left out of training (None: none)
    training: dict[str, Any] = field(default_factory=dict)  # settings, token counts, corpus fingerprint
    metrics: dict[str, Any] = field(default_factory=dict)  # held-out quality (FVU, L0, dead fraction, ...)

    def __post_init__(self) -> None:
        if isinstance(self.lineage, dict):
            object.__setattr__(self, "lineage", Lineage.from_dict(self.lineage))
        lookup(ACTIVATIONS, self.activation, "SAE activation")
        object.__setattr__(self, "site", canonical_site(self.site))
        n, d = self.W_enc.shape
        shapes = {"W_enc": (n, d), "b_enc": (n,), "W_dec": (n, d), "b_dec": (d,)}
        bad = [
            f"{k} {list(getattr(self, k).shape)} (want {list(v)})"
            for k, v in shapes.items()
            if tuple(getattr(self, k).shape) != v
        ]
        if bad:
            raise ArtifactError(f"SAE tensors do not fit together: {', '.join(bad)}")
        if not 1 <= self.k <= n or (self.activation == "groupmax" and n % self.k):
            raise ConfigError(f"k={self.k} does not fit {n} latents with activation {self.activation!r}")

    @property
    def width(self) -> int:
        return int(self.W_enc.shape[1])

    @property
    def n_latents(self) -> int:
        return int(self.W_enc.shape[0])

    @property
    def device(self) -> torch.device:
        return self.W_enc.device

    @property
    def dtype(self) -> torch.dtype:
        return self.W_enc.dtype

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> SparseAutoencoder:
        """A copy with its tensors on `device` and in `dtype`."""
        return replace(self, **{k: getattr(self, k).to(device=device, dtype=dtype) for k in _TENSORS})

    # -- the maps ------------------------------------------------------------------------------------------

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """``relu((x - b_dec) @ W_enc.T + b_enc)`` [..., n_latents], before the sparsity rule."""
        x = x.to(self.dtype)
        return torch.relu(torch.nn.functional.linear(x - self.b_dec, self.W_enc, self.b_enc))

    def encode_sparse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(values, indices) [..., k] of the latents kept for each row of `x` [..., width]."""
        pre = self.pre_activations(x)
        if self.activation == "topk":
            values, indices = pre.topk(self.k, dim=-1, sorted=False)
            return values, indices
        values, inner = pre.unflatten(-1, (self.k, -1)).max(dim=-1)
        offsets = torch.arange(0, self.n_latents, self.n_latents // self.k, device=pre.device)
        return values, inner + offsets

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent activations [..., n_latents] of `x` [..., width] (non-negative, at most k non-zero per row)."""
        values, indices = self.encode_sparse(x)
        z = torch.zeros(*values.shape[:-1], self.n_latents, dtype=values.dtype, device=values.device)
        return z.scatter_(-1, indices, values)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The reconstruction [..., width] of latent activations `z` [..., n_latents]."""
        return z.to(self.dtype) @ self.W_dec + self.b_dec

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction of `x` (encode, then decode)."""
        values, indices = self.encode_sparse(x)
        flat = torch.nn.functional.embedding_bag(
            indices.reshape(-1, self.k), self.W_dec, per_sample_weights=values.reshape(-1, self.k), mode="sum"
        )
        return flat.reshape(*x.shape[:-1], self.width) + self.b_dec

    def in_domain(self, x: torch.Tensor) -> torch.Tensor:
        """Bool [...]: rows of `x` within the norm the SAE was trained on (all True without `max_norm`)."""
        if self.max_norm is None:
            return torch.ones(x.shape[:-1], dtype=torch.bool, device=x.device)
        return x.float().norm(dim=-1) <= self.max_norm

    def check_compatible(self, lm: Any, compatibility: Compatibility = "same_base") -> None:
        """Raise unless this SAE may read `lm`: same width, layer in range, lineage (see `Direction.check_compatible`)."""
        try:
            self.decoder_direction(0).check_compatible(lm, compatibility)
        except (WidthMismatchError, ModelMismatchError, LayerIndexError) as e:
            text = str(e).replace("direction from", "SAE from", 1).replace("direction is for", "SAE is for", 1)
            raise type(e)(text.replace("extract a direction on this model", "train an SAE on this model")) from None

    # -- latents as directions --------------------------------------------------------------------------

    def decoder_direction(self, latent: int) -> Direction:
        """The unit decoder row of `latent` as a `Direction` at this SAE's layer and site (steerable, scorable)."""
        if not 0 <= latent < self.n_latents:
            raise LayerIndexError(f"latent {latent} is out of range: this SAE has latents 0..{self.n_latents - 1}")
        row = self.W_dec[latent].detach().float().cpu()
        return Direction(
            vector=row / row.norm().clamp_min(1e-12),
            layer=self.layer,
            model=self.model,
            method=f"sae_latent:{latent}",
            site=self.site,
            token_selection="sae_decoder_row",
            normalisation="unit",
            lineage=self.lineage,
            meta={"sae_latent": latent, "sae_library": self.library, "sae_n_latents": self.n_latents},
        )

    # -- saving -------------------------------------------------------------------------------------------

    def fields(self) -> dict[str, Any]:
        """Everything but the tensors, as JSON values (what ``config.json`` records)."""
        out = {k: v for k, v in self.__dict__.items() if k not in _TENSORS}
        out["lineage"] = self.lineage.to_dict() if self.lineage is not None else None
        return out

    def save(self, directory: str | os.PathLike[str]) -> Path:
        fields = {**self.fields(), "width": self.width, "n_latents": self.n_latents, "sae_format": SAE_FORMAT}
        tensors = {k: getattr(self, k).detach().float() for k in _TENSORS}
        return save_artifact(directory, KIND, fields, tensors)

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> SparseAutoencoder:
        """Read what `save` wrote (plain torch + safetensors; the training library is not needed)."""
        config, tensors = load_artifact(directory, KIND, required=("layer", "model", "k"), tensors=_TENSORS)
        if config.get("sae_format", 1) > SAE_FORMAT:
            raise ArtifactError(
                f"{directory} holds an SAE of format {config['sae_format']}; this emscope reads up to "
                f"{SAE_FORMAT}: upgrade emscope"
            )
        names = set(cls.__dataclass_fields__) - set(_TENSORS)
        kwargs: dict[str, Any] = {
            **{k: tensors[k] for k in _TENSORS},
            **{k: v for k, v in config.items() if k in names},
        }
        try:
            return cls(**kwargs)
        except (TypeError, ConfigError) as e:
            raise ArtifactError(f"{directory}: {e}; {DAMAGED}") from None


def load_sae(directory: str | os.PathLike[str]) -> SparseAutoencoder:
    """Load a saved SAE (`SparseAutoencoder.load`)."""
    return SparseAutoencoder.load(directory)
