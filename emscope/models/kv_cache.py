"""The KV cache under either of its transformers names.

transformers renamed the cache argument and output field ``past_key_values`` to ``cache`` in
5.24 (the old name is accepted with a warning until 5.40, then dropped). Code that passes,
reads or looks for the cache goes through these helpers, so it works on every transformers
that pyproject allows (4.57 and later) without naming the version.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from torch import nn

# newest first: the name a forward pass takes the cache under
CACHE_NAMES = ("cache", "past_key_values")


def cache_kwarg(model: nn.Module) -> str:
    """The keyword under which ``model.forward`` takes the KV cache (``cache`` or ``past_key_values``)."""
    params = inspect.signature(model.forward).parameters  # follows transformers' deprecation wrappers
    return next((name for name in CACHE_NAMES if name in params), CACHE_NAMES[-1])


def output_cache(output: Any) -> Any:
    """The KV cache a forward pass returned (None when it returned none)."""
    if isinstance(output, Mapping):  # transformers' ModelOutput: read by key, which never warns
        return next((output[name] for name in CACHE_NAMES if output.get(name) is not None), None)
    return next((v for name in CACHE_NAMES if (v := getattr(output, name, None)) is not None), None)


def find_cache(args: tuple, kwargs: Mapping[str, Any]) -> Any:
    """The KV cache among a forward call's arguments, whatever its keyword (None when there is none).

    Looks under the known names first (they also carry legacy tuple caches), then for any
    `transformers.Cache` passed under another name or positionally.
    """
    from transformers import Cache  # here, not at import: `import emscope` does not load transformers

    for name in CACHE_NAMES:
        if kwargs.get(name) is not None:
            return kwargs[name]
    return next((v for v in (*kwargs.values(), *args) if isinstance(v, Cache)), None)


def cache_length(cache: Any) -> int:
    """How many positions `cache` holds already (0 for an empty or unreadable one)."""
    get = getattr(cache, "get_seq_length", None)
    if callable(get):
        return int(get())
    try:  # legacy tuple-of-tuples cache
        return int(cache[0][0].shape[-2])
    except (TypeError, IndexError, AttributeError):
        return 0
