"""A thin hook layer over the model's own decoder blocks.

Every hook is removable (`RemovableHandle.remove()`); `emscope.activations.sites.site_hooks` attaches
them by site name and removes them in `finally`, so an exception in the body never leaves a model modified.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

# A block hook receives the block's output hidden states [batch, seq, width] and returns
# a replacement tensor, or None to leave the output unchanged.
BlockHook = Callable[[torch.Tensor], torch.Tensor | None]


def block_hidden(output: object) -> torch.Tensor:
    """The hidden-state tensor of a decoder block's output (a tensor, or a tuple led by one)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, tuple | list) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"unexpected decoder block output of type {type(output).__name__}")


def _replace_hidden(output: object, hidden: torch.Tensor) -> object:
    if isinstance(output, torch.Tensor):
        return hidden
    assert isinstance(output, tuple | list)  # checked by block_hidden before
    return type(output)((hidden, *output[1:]))


def add_block_hook(block: nn.Module, fn: BlockHook) -> RemovableHandle:
    """Run `fn` on `block`'s output hidden states; a returned tensor replaces them."""

    def hook(_module: nn.Module, _args: object, output: object) -> object:
        new = fn(block_hidden(output))
        return None if new is None else _replace_hidden(output, new)

    return block.register_forward_hook(hook)


def add_block_pre_hook(block: nn.Module, fn: BlockHook) -> RemovableHandle:
    """Run `fn` on `block`'s input hidden states (the residual stream entering it)."""

    def hook(_module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        if args:
            new = fn(args[0])
            return None if new is None else ((new, *args[1:]), kwargs)
        new = fn(kwargs["hidden_states"])
        return None if new is None else (args, {**kwargs, "hidden_states": new})

    return block.register_forward_pre_hook(hook, with_kwargs=True)
