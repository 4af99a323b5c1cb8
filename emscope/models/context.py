"""The model's context length, and the one rule for inputs longer than it.

Past its context a model does not fail: positions beyond what it was trained on give
meaningless activations and answers. So capture and generation check lengths against
`context_length` and either truncate because the user asked for it (and record how many)
or refuse with the limit named.
"""

from __future__ import annotations

from typing import Any

from emscope.errors import ConfigError
from emscope.models.families import text_config


def context_length(lm: Any) -> int | None:
    """The most positions `lm`'s model was made for (``max_position_embeddings``), or None if it does not say."""
    config = getattr(getattr(lm, "model", lm), "config", None)
    if config is None:
        return None
    text = text_config(config)
    for name in ("max_position_embeddings", "n_positions", "seq_length"):
        value = getattr(text, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def token_limit(lm: Any, max_length: int | None) -> int | None:
    """The length inputs are held to: `max_length` if given (refused when over the context), else the context."""
    context = context_length(lm)
    if max_length is None:
        return context
    if max_length < 1:
        raise ConfigError(f"max_length must be >= 1, got {max_length}")
    if context is not None and max_length > context:
        raise ConfigError(f"max_length={max_length} is over the model's context of {context} tokens: use <= {context}")
    return max_length
