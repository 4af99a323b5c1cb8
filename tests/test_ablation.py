"""Ablation: no component along the direction anywhere in the stream; hooks always removed."""

from __future__ import annotations

import pytest
import torch

from emscope.activations.sites import SITES
from emscope.directions.direction import Direction
from emscope.errors import ConfigError, LayerIndexError, ModelMismatchError, WidthMismatchError
from emscope.interventions.ablate import ablate

FAMILIES = ["llama", "qwen2", "gemma2", "gpt2"]


def _direction(lm, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return Direction(vector=torch.randn(lm.width, generator=gen) * 3, layer=1, model=lm.spec)


def _hooks(module):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())


def _stream(lm, ids):
    """Every residual-stream state: each block's input and output, recorded after any intervention."""
    store: list[tuple[str, torch.Tensor]] = []

    def grab(name):
        return lambda _m, args, kwargs, out=None: store.append((name, _hidden(args, kwargs, out)))

    handles = []
    for i, b in enumerate(lm.blocks):
        handles.append(b.register_forward_pre_hook(grab(f"input {i}"), with_kwargs=True))
        handles.append(b.register_forward_hook(lambda _m, _a, out, i=i: store.append((f"output {i}", _first(out)))))
    try:
        with torch.no_grad():
            logits = lm.model(ids).logits
    finally:
        for h in handles:
            h.remove()
    return store, logits


def _first(out):
    return out[0] if isinstance(out, tuple) else out


def _hidden(args, kwargs, _out):
    return args[0] if args else kwargs["hidden_states"]


@pytest.mark.parametrize("family", FAMILIES)
def test_no_component_anywhere_in_the_stream(tiny, family):
    lm = tiny(family)
    ids = lm.tokenizer("hello there, how can I help you today", return_tensors="pt").input_ids
    plain, plain_logits = _stream(lm, ids)
    # a direction the stream really carries: the mean block-1 output
    d = Direction(vector=dict(plain)["output 1"][0].mean(0), layer=1, model=lm.spec)
    assert max(float((h @ d.unit).abs().max()) for _, h in plain) > 0.1
    with ablate(lm, d):
        ablated, logits = _stream(lm, ids)
    assert len(ablated) == 2 * lm.n_layers
    for name, h in ablated:
        assert float((h @ d.unit).abs().max()) < 1e-4, name
    assert not torch.allclose(logits, plain_logits)
    assert _hooks(lm.model) == 0


def test_block_output_site_only(tiny):
    lm = tiny("llama")
    d = _direction(lm)
    ids = lm.tokenizer("hello there", return_tensors="pt").input_ids
    for sites, layers in ((["resid_post"], [1]), (["resid_post.1"], None), (["block_output"], [1])):  # alias
        with ablate(lm, d, layers=layers, sites=sites):
            stream, _ = _stream(lm, ids)
        named = dict(stream)
        assert float((named["output 1"] @ d.unit).abs().max()) < 1e-4
        assert float((named["output 0"] @ d.unit).abs().max()) > 1e-3  # other layers untouched
        assert _hooks(lm.model) == 0


def test_removed_after_exception_and_by_handle(tiny):
    lm = tiny("qwen2")
    d = _direction(lm)
    with pytest.raises(ValueError, match="inside"):
        with ablate(lm, d, sites=list(SITES)):
            raise ValueError("inside")
    assert _hooks(lm.model) == 0
    handle = ablate(lm, d)
    assert _hooks(lm.model) == 2 * lm.n_layers + 1  # one input hook (block 0): later inputs are clean already
    handle.remove()
    assert _hooks(lm.model) == 0


def test_errors(tiny):
    lm = tiny("llama")
    with pytest.raises(WidthMismatchError):
        ablate(lm, torch.randn(lm.width + 1))
    with pytest.raises(LayerIndexError, match="out of range"):
        ablate(lm, torch.randn(lm.width), layers=[5])
    with pytest.raises(ConfigError, match="resid_pre"):
        ablate(lm, torch.randn(lm.width), sites=["nowhere"])
    with pytest.raises(ConfigError, match="did you mean 'mlp_out'"):
        ablate(lm, torch.randn(lm.width), sites=["mlp_ot"])
    with pytest.raises(ConfigError, match="one or the other"):
        ablate(lm, torch.randn(lm.width), layers=[0], sites=["resid_post.1"])
    with pytest.raises(ModelMismatchError, match="compatibility='any'"):
        ablate(lm, Direction(vector=torch.randn(lm.width), layer=0, model="another-model"))
    ablate(lm, Direction(vector=torch.randn(lm.width), layer=0, model="another-model"), compatibility="any").remove()
    assert _hooks(lm.model) == 0
