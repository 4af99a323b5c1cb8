"""`Activations`: what a capture returns in memory, and what `load_activations` reads back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from emscope.activations.pooling import TOKENS
from emscope.errors import DataFormatError

KIND = "activations"  # the kind recorded in a capture directory's config.json


@dataclass
class Activations:
    """Captured activations: `pooled[layer]` is [N, D], or (pool="tokens") `tokens[layer][i]` is [n_i, D].

    `meta` holds the model's provenance and the capture settings (``token_selection``,
    ``dtype``, ``max_length``, ``n_truncated``: how many transcripts were cut to ``max_length``).
    """

    layers: list[int]
    pool: str
    labels: list[str | None]
    pooled: dict[int, torch.Tensor] = field(default_factory=dict)
    tokens: dict[int, list[torch.Tensor]] = field(default_factory=dict)
    fingerprint: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    def select(self, label: str) -> dict[int, torch.Tensor]:
        """Pooled activations of the transcripts with `label`, per layer."""
        idx = torch.tensor([i for i, lab in enumerate(self.labels) if lab == label], dtype=torch.long)
        if not len(idx):
            raise DataFormatError(
                f"no transcripts labelled {label!r}; labels present: {sorted(set(map(str, self.labels)))}"
            )
        if self.pool == TOKENS:
            raise DataFormatError("select() needs pooled activations; capture with pool='mean', 'last' or 'max'")
        return {layer: t[idx] for layer, t in self.pooled.items()}
