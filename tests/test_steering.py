"""Steering: layers before L untouched, positions with and without a KV cache, hooks always removed."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import Cache

from emscope.directions.direction import Direction
from emscope.errors import LayerIndexError, WidthMismatchError
from emscope.interventions.handle import PromptTracker
from emscope.interventions.steer import steer
from emscope.models.kv_cache import cache_kwarg, output_cache

FAMILIES = ["llama", "qwen2", "gemma2", "gpt2"]


def _direction(lm, layer=1, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return Direction(vector=torch.randn(lm.width, generator=gen), layer=layer, model=lm.spec)


def _ids(lm, text="hello there, how can I help you today"):
    return lm.tokenizer(text, return_tensors="pt").input_ids


def _layer_outputs(lm, ids):
    """Block outputs, recorded by hooks attached after any intervention (so they see its effect).

    (transformers >= 5 records `output_hidden_states` with hooks installed at the first forward
    pass, which may run before or after an intervention's hooks on the same block.)
    """
    store: dict[int, torch.Tensor] = {}
    handles = [
        b.register_forward_hook(
            lambda _m, _a, out, i=i: store.__setitem__(i, out[0] if isinstance(out, tuple) else out)
        )
        for i, b in enumerate(lm.blocks)
    ]
    try:
        with torch.no_grad():
            lm.model(ids)
    finally:
        for h in handles:
            h.remove()
    return [store[i] for i in range(lm.n_layers)]


def _hooks(module):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())


@pytest.mark.parametrize("family", FAMILIES)
def test_steering_changes_only_layers_from_L(tiny, family):
    lm = tiny(family)
    d = _direction(lm, layer=1)
    ids = _ids(lm)
    plain = _layer_outputs(lm, ids)
    with steer(lm, d, alpha=5.0):
        steered = _layer_outputs(lm, ids)
    torch.testing.assert_close(steered[0], plain[0], rtol=0, atol=0)  # layer 0 < L=1: untouched
    delta = steered[1] - plain[1]  # layer 1: exactly +5 u
    torch.testing.assert_close(delta, (5.0 * d.unit).expand_as(delta), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(steered[2], plain[2])  # and the change propagates
    assert _hooks(lm.model) == 0


def test_negative_alpha_subtracts_and_plain_tensor_needs_layers(tiny):
    lm = tiny("llama")
    d = _direction(lm, layer=0)
    ids = _ids(lm)
    plain = _layer_outputs(lm, ids)[0]
    with steer(lm, d.vector, alpha=-2.0, layers=0):
        minus = _layer_outputs(lm, ids)[0]
    torch.testing.assert_close(minus - plain, (-2.0 * d.unit).expand_as(plain), rtol=1e-5, atol=1e-5)
    with pytest.raises(LayerIndexError, match="layers="):
        steer(lm, d.vector, alpha=1.0)


def test_handle_remove_and_context_manager_on_exception(tiny):
    lm = tiny("llama")
    d = _direction(lm)
    handle = steer(lm, d, 3.0, layers="all", positions="prompt")
    assert handle.active and _hooks(lm.model) == lm.n_layers + 1  # + the prompt tracker
    handle.remove()
    handle.remove()  # idempotent
    assert _hooks(lm.model) == 0
    with pytest.raises(RuntimeError, match="boom"):
        with steer(lm, d, 3.0, layers="all"):
            raise RuntimeError("boom")
    assert _hooks(lm.model) == 0


def test_composition_nests_and_unwinds(tiny):
    lm = tiny("llama")
    d = _direction(lm, layer=1)
    ids = _ids(lm)
    plain = _layer_outputs(lm, ids)[1]
    with steer(lm, d, 2.0), steer(lm, d, 3.0):
        both = _layer_outputs(lm, ids)[1]
    torch.testing.assert_close(both - plain, (5.0 * d.unit).expand_as(plain), rtol=1e-5, atol=1e-5)
    assert _hooks(lm.model) == 0


def test_errors_name_the_fix(tiny):
    lm = tiny("llama")
    with pytest.raises(WidthMismatchError, match="width"):
        steer(lm, Direction(vector=torch.randn(32), layer=0, model=lm.spec), 1.0)
    with pytest.raises(WidthMismatchError, match="shape"):
        steer(lm, torch.randn(32), 1.0, layers=0)
    with pytest.raises(LayerIndexError, match="0..2"):
        steer(lm, Direction(vector=torch.randn(64), layer=7, model=lm.spec), 1.0)
    with pytest.raises(LayerIndexError, match="out of range"):
        steer(lm, torch.randn(64), 1.0, layers=[0, 3])
    assert _hooks(lm.model) == 0


def _record_layer(lm, layer, store):
    return lm.blocks[layer].register_forward_hook(
        lambda _m, _a, out: store.append(out[0] if isinstance(out, tuple) else out)
    )


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("positions", ["prompt", "generated"])
def test_positions_under_generate(tiny, positions, use_cache):
    """Steered positions during generate: prompt tokens only, or generated tokens only."""
    lm = tiny("llama")
    d = _direction(lm, layer=1)
    ids = _ids(lm, "hello there")
    n_prompt = ids.shape[1]
    kw = dict(max_new_tokens=4, do_sample=False, use_cache=use_cache, pad_token_id=lm.tokenizer.pad_token_id)
    seen: list[torch.Tensor] = []
    with torch.no_grad():
        with steer(lm, d, 50.0, positions=positions):
            out = lm.model.generate(ids, **kw)
        # replay the same tokens in one plain pass and compare layer 1 position by position
        handle = _record_layer(lm, 1, seen)
        lm.model(out[:, :-1])
        handle.remove()
        plain_all = seen[-1][0]
        steered_seen: list[torch.Tensor] = []
        with steer(lm, d, 50.0, positions=positions):
            handle = _record_layer(lm, 1, steered_seen)  # after the steering hook, so it sees its effect
            lm.model.generate(ids, **kw)
        handle.remove()
    # the last forward pass of generate covers the last position (cache) or all positions (no cache)
    last = steered_seen[-1][0]
    comp = (last - plain_all[-last.shape[0] :]) @ d.unit  # component added at each position of that pass
    positions_in_pass = torch.arange(plain_all.shape[0] - last.shape[0], plain_all.shape[0])
    is_prompt = positions_in_pass < n_prompt
    expected = is_prompt if positions == "prompt" else ~is_prompt
    # where steered, the component along u moved by ~50; unsteered positions can still differ through
    # attention to steered ones, but by far less than 50 along u at the steered layer itself
    moved = comp.abs() > 25
    if use_cache:
        # the prefill pass is steered or not as a whole; check it too
        first = steered_seen[0][0]
        first_comp = (first - plain_all[: first.shape[0]]) @ d.unit
        assert bool(((first_comp.abs() > 25) == (positions == "prompt")).all())
    assert torch.equal(moved, expected)
    assert _hooks(lm.model) == 0


def test_failed_registration_removes_earlier_hooks(tiny):
    from emscope.errors import ArchitectureError
    from emscope.interventions.handle import attach

    lm = tiny("llama")

    def broken():
        raise ArchitectureError("no such module")

    good = lambda: lm.blocks[0].register_forward_hook(lambda *_: None)  # noqa: E731
    with pytest.raises(ArchitectureError):
        attach([good, good, broken], "test")
    assert _hooks(lm.model) == 0


def test_prompt_positions_in_a_plain_forward_steer_everything(tiny):
    lm = tiny("llama")
    d = _direction(lm, layer=0)
    ids = _ids(lm)
    plain = _layer_outputs(lm, ids)[0]
    with steer(lm, d, 3.0, positions="prompt"):
        steered = _layer_outputs(lm, ids)[0]
    with steer(lm, d, 3.0, positions="generated"):
        untouched = _layer_outputs(lm, ids)[0]
    torch.testing.assert_close(steered - plain, (3.0 * d.unit).expand_as(plain), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(untouched, plain, rtol=0, atol=0)


# Issue 9: transformers 5.24 passes the KV cache as `cache=`, not `past_key_values=`. A tracker that read only the
# old keyword took every cached one-token pass for a new one-token prompt, so `positions="generated"` steered the
# prompt and nothing else. The stub stacks below take the cache under each name, independent of the installed
# transformers.


class _StubCache(Cache):
    """A `transformers.Cache` that only knows its length (all the tracker reads)."""

    def __init__(self, n: int) -> None:  # no super().__init__: its signature differs between releases
        self.n = n

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.n


class _NewStack(nn.Module):  # transformers >= 5.24
    def forward(self, input_ids, attention_mask=None, position_ids=None, cache=None, **kwargs):
        return input_ids


class _OldStack(nn.Module):  # transformers < 5.24
    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, **kwargs):
        return input_ids


def _call(stack, ids, cache, how):
    if how == "positional":
        return stack(ids, None, None, cache)
    return stack(ids, **{how: cache})


@pytest.mark.parametrize(
    "stack, how",
    [
        (_NewStack(), "cache"),
        (_OldStack(), "past_key_values"),
        (_NewStack(), "positional"),
        (_NewStack(), "kv"),  # a future rename: found as a Cache instance
    ],
    ids=["cache", "past_key_values", "positional", "other-name"],
)
def test_tracker_reads_the_cache_under_any_keyword(stack, how):
    tracker = PromptTracker()
    handle = tracker.attach(stack)
    try:
        _call(stack, torch.zeros(2, 5, dtype=torch.long), _StubCache(0), how)  # prefill: 5 prompt tokens
        assert tracker.prompt_len == 5
        assert tracker.positions(5, torch.device("cpu")).tolist() == [0, 1, 2, 3, 4]
        for n in (5, 6):  # decode steps: one new token at absolute position `cache length`
            _call(stack, torch.zeros(2, 1, dtype=torch.long), _StubCache(n), how)
            assert tracker.prompt_len == 5  # the old tracker reset it to 1 here and called position 0 prompt
            assert tracker.positions(1, torch.device("cpu")).tolist() == [n]
    finally:
        handle.remove()


@pytest.mark.parametrize("positions", ["prompt", "generated"])
def test_positions_in_a_hand_written_decode_loop(tiny, positions):
    """A prefill pass, then a one-token pass on its cache under the keyword this transformers takes."""
    lm = tiny("llama")
    d = _direction(lm, layer=1)
    ids = _ids(lm, "hello there")
    with torch.no_grad():
        plain_prefill = lm.model(ids, use_cache=True)
        nxt = plain_prefill.logits[:, -1:].argmax(-1)
        seen: list[torch.Tensor] = []
        with steer(lm, d, 50.0, positions=positions):
            handle = _record_layer(lm, 1, seen)
            try:
                out = lm.model(ids, use_cache=True)
                lm.model(nxt, use_cache=True, **{cache_kwarg(lm.model): output_cache(out)})
            finally:
                handle.remove()
        plain: list[torch.Tensor] = []
        handle = _record_layer(lm, 1, plain)
        lm.model(torch.cat([ids, nxt], 1))
        handle.remove()
    prefill_moved = bool((((seen[0][0] - plain[0][0, :-1]) @ d.unit).abs() > 25).all())
    step_moved = bool((((seen[1][0, -1] - plain[0][0, -1]) @ d.unit).abs() > 25).all())
    assert (prefill_moved, step_moved) == ((True, False) if positions == "prompt" else (False, True))
    assert _hooks(lm.model) == 0
