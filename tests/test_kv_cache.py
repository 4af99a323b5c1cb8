"""The KV cache under either transformers name (`cache` from 5.24, `past_key_values` before; issue 9)."""

from __future__ import annotations

import functools

import torch
from torch import nn

from emscope.models.kv_cache import cache_kwarg, cache_length, find_cache, output_cache


class _New(nn.Module):
    def forward(self, input_ids, cache=None, **kwargs):
        return input_ids


class _Old(nn.Module):
    def forward(self, input_ids, past_key_values=None, **kwargs):
        return input_ids


def _renaming(forward):
    """Like transformers' `deprecate_kwarg("past_key_values", new_name="cache")`: a functools.wraps wrapper."""

    @functools.wraps(forward)
    def wrapped(self, *args, **kwargs):
        if "past_key_values" in kwargs:
            kwargs["cache"] = kwargs.pop("past_key_values")
        return forward(self, *args, **kwargs)

    return wrapped


class _Wrapped(nn.Module):
    @_renaming
    def forward(self, input_ids, cache=None, **kwargs):
        return input_ids


def test_cache_kwarg_follows_the_forward_signature(tiny):
    assert cache_kwarg(_New()) == "cache"
    assert cache_kwarg(_Old()) == "past_key_values"
    assert cache_kwarg(_Wrapped()) == "cache"  # through the deprecation wrapper, to the real signature
    lm = tiny("llama")
    assert cache_kwarg(lm.model) in {"cache", "past_key_values"}
    out = lm.model(torch.tensor([[3, 4, 5]]), use_cache=True)
    cache = output_cache(out)
    assert cache_length(cache) == 3  # the installed transformers returns it under the name cache_kwarg gives
    nxt = lm.model(torch.tensor([[6]]), use_cache=True, **{cache_kwarg(lm.model): cache})
    assert cache_length(output_cache(nxt)) == 4  # and took it back under that name (not ignored in **kwargs)


def test_output_cache_reads_either_field():
    c = object()
    assert output_cache({"cache": c}) is c
    assert output_cache({"past_key_values": c}) is c
    assert output_cache({"logits": 1}) is None
    assert output_cache(type("Out", (), {"past_key_values": c})()) is c


def test_find_cache_and_legacy_tuples():
    legacy = ((torch.zeros(1, 2, 7, 4), torch.zeros(1, 2, 7, 4)),)
    assert find_cache((), {"past_key_values": legacy}) is legacy
    assert cache_length(legacy) == 7
    assert find_cache((torch.zeros(1, 3),), {"input_ids": None, "use_cache": True}) is None
    assert cache_length(None) == 0
