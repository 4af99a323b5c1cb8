"""The machinery shared by every runtime intervention: a removable handle, direction checks,
and which token positions a hook acts on.

Every intervention (`emscope.interventions.steer.steer`, `emscope.interventions.ablate.ablate`) returns an
`Intervention`: call ``.remove()`` when done, or use it as a context manager, whose exit
removes every hook it added even when the body raised. Interventions compose by nesting
(``with steer(...), ablate(...):``); hooks on the same module run in the order attached.
Nothing is global: the hooks and their small state live in the handle.

Positions (``positions=``), for steering with or without Hugging Face ``generate``:

* ``"all"``: every position of every forward pass.
* ``"prompt"`` / ``"generated"``: positions before / from the end of the prompt. The prompt
  length is read from the forward passes themselves (a pre-hook on the decoder stack,
  ``model.base_model``, so direct calls to the stack are followed too):
  - with a KV cache (``generate``'s default; found whatever its keyword, ``cache`` from
    transformers 5.24, ``past_key_values`` before), the first pass of a sequence has an empty
    cache and carries the whole prompt (its length is the prompt length); later passes
    carry one new token each, at absolute position ``cache length``, i.e. generated;
  - without a cache (``use_cache=False``), every pass re-feeds the whole sequence. A pass
    that is exactly one token longer than the previous one (same batch size) is read as
    the continuation of that sequence; any other pass starts a new prompt. So in a plain
    ``model(ids)`` call everything is prompt, and ``"generated"`` acts on nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from emscope.directions.direction import Direction
from emscope.errors import DataFormatError, WidthMismatchError, lookup
from emscope.models.kv_cache import cache_length, find_cache
from emscope.models.lineage import Compatibility
from emscope.models.loading import LoadedModel

log = logging.getLogger(__name__)

DirectionLike = Direction | torch.Tensor
# (absolute positions [T], prompt length) -> bool mask [T] of the positions to act on
PositionSelector = Callable[[torch.Tensor, int], torch.Tensor]

POSITIONS: dict[str, PositionSelector | None] = {
    "all": None,  # no mask: the cheap path
    "prompt": lambda pos, prompt_len: pos < prompt_len,
    "generated": lambda pos, prompt_len: pos >= prompt_len,
}


class Intervention:
    """Hooks on a model that `remove()` takes off again; also a context manager."""

    def __init__(self, handles: Iterable[RemovableHandle], description: str) -> None:
        self._handles = list(handles)
        self.description = description

    @property
    def active(self) -> bool:
        return bool(self._handles)

    def remove(self) -> None:
        """Remove every hook (idempotent)."""
        while self._handles:
            self._handles.pop().remove()

    def __enter__(self) -> Intervention:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def __repr__(self) -> str:
        state = "active" if self.active else "removed"
        return f"Intervention({self.description}, {state})"


def attach(registrations: Iterable[Callable[[], RemovableHandle]], description: str) -> Intervention:
    """Run each registration; if one fails, remove those already made before re-raising."""
    handles: list[RemovableHandle] = []
    try:
        for register in registrations:
            handles.append(register())
    except BaseException:
        for h in reversed(handles):
            h.remove()
        raise
    log.debug("attached %d hooks: %s", len(handles), description)
    return Intervention(handles, description)


def unit_vector(
    lm: LoadedModel, direction: DirectionLike, *, compatibility: Compatibility = "same_base"
) -> tuple[torch.Tensor, int | None]:
    """The unit vector on the model's device and dtype, and the direction's layer (None for a tensor)."""
    if isinstance(direction, Direction):
        direction.check_compatible(lm, compatibility)
        vector, layer = direction.vector, direction.layer
    elif isinstance(direction, torch.Tensor):
        vector, layer = direction, None
        if vector.ndim != 1 or vector.shape[0] != lm.width:
            raise WidthMismatchError(
                f"direction tensor has shape {tuple(vector.shape)} but {lm.spec!r} needs a vector of shape ({lm.width},)"
            )
    else:
        raise TypeError(f"direction must be an emscope Direction or a 1-D tensor, got {type(direction).__name__}")
    vector = vector.detach().float()
    norm = vector.norm()
    if not torch.isfinite(norm) or norm < 1e-12:
        raise DataFormatError(f"direction has norm {float(norm)}: it must be finite and non-zero")
    return (vector / norm).to(device=lm.device, dtype=lm.dtype), layer


class PromptTracker:
    """Follows the forward passes of one model to tell prompt positions from generated ones."""

    def __init__(self) -> None:
        self.prompt_len: int | None = None
        self.offset = 0  # absolute position of the first token of the current pass
        self._last_end: int | None = None
        self._last_batch: int | None = None

    def observe(self, _module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        x = kwargs.get("input_ids")
        if x is None:
            x = args[0] if args and isinstance(args[0], torch.Tensor) else kwargs.get("inputs_embeds")
        if x is None:
            return
        batch, length = int(x.shape[0]), int(x.shape[1])
        cache = find_cache(args, kwargs)  # under either transformers name (`cache`, `past_key_values`)
        if cache is not None:
            self.offset = cache_length(cache)
            if self.offset == 0:
                self.prompt_len = length
        else:
            self.offset = 0
            continuing = self._last_batch == batch and self._last_end is not None and length == self._last_end + 1
            if not continuing:
                self.prompt_len = length
        self._last_end, self._last_batch = self.offset + length, batch

    def positions(self, length: int, device: torch.device) -> torch.Tensor:
        return torch.arange(self.offset, self.offset + length, device=device)

    def attach(self, model: nn.Module) -> RemovableHandle:
        return model.register_forward_pre_hook(self.observe, with_kwargs=True)


def position_selector(positions: str) -> PositionSelector | None:
    return lookup(POSITIONS, positions, "positions")


def masked(
    op: Callable[[torch.Tensor], torch.Tensor], selector: PositionSelector | None, tracker: PromptTracker | None
) -> Callable[[torch.Tensor], torch.Tensor | None]:
    """A block hook applying `op` to the positions `selector` picks (all when None)."""
    if selector is None or tracker is None:
        return op

    def hook(hidden: torch.Tensor) -> torch.Tensor | None:
        prompt_len = tracker.prompt_len if tracker.prompt_len is not None else hidden.shape[1]
        mask = selector(tracker.positions(hidden.shape[1], hidden.device), prompt_len)
        if not bool(mask.any()):
            return None
        new = op(hidden)
        return new if bool(mask.all()) else torch.where(mask.unsqueeze(-1), new, hidden)

    return hook
