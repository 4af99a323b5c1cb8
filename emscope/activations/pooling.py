"""Which tokens of a transcript are read (`token_selection`) and how they are reduced (`pool`).

Two independent choices, both registries:

- token selection: ``"response"`` (the assistant's content tokens, no template markup) or
  ``"all"`` (every token of the rendered transcript, system and user turns and markup included:
  what an SAE trains on);
- pool: ``"mean"``, ``"last"``, ``"max"`` over the selected tokens (one row per transcript), or
  ``"tokens"`` (keep every selected token: one row per token).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from emscope.data.chat import TokenizedChat
from emscope.errors import lookup

# hidden [B, T, D], mask [B, T] (bool, selected tokens) -> pooled [B, D]
Pooler = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# a tokenized transcript -> the mask of its selected tokens
Selection = Callable[[TokenizedChat], list[bool]]


def _mean(h: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    w = m.to(h.dtype).unsqueeze(-1)
    return (h * w).sum(1) / w.sum(1).clamp_min(1)


def _last(h: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    positions = torch.arange(m.shape[1], device=m.device).expand_as(m)
    last = torch.where(m, positions, -1).amax(1)
    return h[torch.arange(h.shape[0], device=h.device), last]


def _max(h: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return h.masked_fill(~m.unsqueeze(-1), float("-inf")).amax(1)


POOLERS: dict[str, Pooler] = {"mean": _mean, "last": _last, "max": _max}
TOKENS = "tokens"  # keep every selected token instead of pooling
POOL_CHOICES = (*POOLERS, TOKENS)

SELECTIONS: dict[str, Selection] = {
    "response": lambda chat: list(chat.response_mask),
    "all": lambda chat: [True] * len(chat),
}


def check_pool(pool: str) -> None:
    lookup(POOL_CHOICES, pool, "pool")


def check_selection(token_selection: str) -> None:
    lookup(SELECTIONS, token_selection, "token_selection")
