"""The options of a capture, checked once, and the part of them a capture directory records."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from emscope.activations.pooling import check_pool, check_selection
from emscope.activations.sites import DEFAULT_SITE
from emscope.errors import ConfigError
from emscope.models.architecture import LayerSpec, resolve_layers
from emscope.models.context import token_limit
from emscope.models.loading import LoadedModel
from emscope.runtime import resolve_dtype

SITE = DEFAULT_SITE  # the capture reads block outputs


@dataclass(frozen=True)
class CaptureSettings:
    """What to read (layers, token selection, pool), how to store it (dtype) and how to batch it."""

    layers: list[int]
    pool: str = "mean"
    token_selection: str = "response"
    dtype: torch.dtype = torch.float32
    batch_size: int = 8
    max_batch_tokens: int | None = None
    max_length: int | None = None

    @classmethod
    def make(
        cls,
        lm: LoadedModel,
        layers: LayerSpec,
        pool: str,
        token_selection: str,
        dtype: str | torch.dtype,
        batch_size: int,
        max_batch_tokens: int | None,
        max_length: int | None,
    ) -> CaptureSettings:
        check_pool(pool)
        check_selection(token_selection)
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if max_batch_tokens is not None and max_batch_tokens < 1:
            raise ConfigError(f"max_batch_tokens must be >= 1 (or None for no limit), got {max_batch_tokens}")
        token_limit(lm, max_length)  # refuses a max_length over the model's context
        return cls(
            resolve_layers(layers, lm.n_layers),
            pool,
            token_selection,
            resolve_dtype(dtype),
            batch_size,
            max_batch_tokens,
            max_length,
        )

    def record(self) -> dict[str, Any]:
        """The settings that change the result (batching does not), as saved in ``config.json``."""
        return {
            "layers": self.layers,
            "pool": self.pool,
            "token_selection": self.token_selection,
            "dtype": str(self.dtype).removeprefix("torch."),
            "site": SITE,
            "max_length": self.max_length,
        }
