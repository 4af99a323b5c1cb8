"""Conformance: every supported family (a tiny random model of each) passes the same checks.

Blocks and writers resolve (from the family table, and the structural probe agrees), every
site hooks and means what `emscope.activations.sites` says, every intervention leaves the
model's hooks exactly as it found them (after a normal exit, an exception in the body, a
failed registration), and weight orthogonalisation equals runtime ablation.
"""

from __future__ import annotations

from functools import cache

import pytest
import torch

from emscope.activations import sites as sites_module
from emscope.activations.sites import SITES, Site, hook_site, parse_site, resolve_sites, site_hooks, site_module
from emscope.directions.direction import Direction
from emscope.errors import ArchitectureError, ConfigError, LayerIndexError, NotSupportedError
from emscope.interventions.ablate import ablate
from emscope.interventions.orthogonalize import orthogonalize_weights
from emscope.interventions.steer import steer
from emscope.models import families
from emscope.models.architecture import decoder_blocks
from emscope.models.families import FAMILIES, family_of
from emscope.models.writers import block_writers, down_projection, family_layout, is_linear, writer_layout
from emscope.testing import FAMILIES as TINY_FAMILIES
from emscope.testing import tiny_model

ALL = sorted(FAMILIES)
N_LAYERS = 3
TEXT = "hello there, how can I help you today"


@cache
def _model(family: str):
    return tiny_model(family, n_layers=N_LAYERS)


def _ids(lm):
    return lm.tokenizer(TEXT, return_tensors="pt").input_ids


def _direction(lm, layer=1, seed=0, site="resid_post"):
    gen = torch.Generator().manual_seed(seed)
    return Direction(vector=torch.randn(lm.width, generator=gen) * 3, layer=layer, model=lm.spec, site=site)


def _hook_counts(model) -> dict[str, tuple[int, int]]:
    """(forward hooks, forward pre-hooks) of every module that has any."""
    counts = {name: (len(m._forward_hooks), len(m._forward_pre_hooks)) for name, m in model.named_modules()}
    return {name: c for name, c in counts.items() if c != (0, 0)}


def _record(lm, wanted: list[Site], ids, **kwargs) -> tuple[dict[Site, torch.Tensor], object]:
    """The hidden states at `wanted`, hooked after any intervention already attached (so they see it)."""
    store: dict[Site, torch.Tensor] = {}

    def grab(site):
        def fn(hidden):
            store[site] = hidden.detach().clone()

        return fn

    with site_hooks(lm, {s: grab(s) for s in wanted}), torch.no_grad():
        out = lm.model(ids, **kwargs)
    return store, out


def test_every_family_in_the_table_has_a_tiny_model():
    assert set(FAMILIES) == set(TINY_FAMILIES)


@pytest.mark.parametrize("family", ALL)
def test_blocks_and_writers_resolve_from_the_table_and_the_probe_agrees(family, monkeypatch):
    lm = _model(family)
    assert family_of(lm.model) is FAMILIES[family]
    fam = FAMILIES[family]
    by_table = next(lm.model.get_submodule(p) for p in fam.blocks if hasattr(lm.model, p.split(".")[0]))
    assert lm.blocks is by_table and len(lm.blocks) == N_LAYERS
    layout = writer_layout(lm)
    assert layout == family_layout(fam) and layout.orthogonalizable is not fam.post_norm
    for layer in range(N_LAYERS):
        attn, mlp = block_writers(lm, layer, layout)
        assert attn is not mlp
    down = down_projection(lm, 0)
    assert down == fam.down_proj and is_linear(lm.blocks[0].get_submodule(down))

    monkeypatch.setattr(families, "FAMILIES", {})  # an unknown model: the structural probe alone
    assert family_of(lm.model) is None
    assert decoder_blocks(lm.model) is lm.blocks
    probed = writer_layout(lm)
    assert (probed.attn, probed.mlp, probed.orthogonalizable) == (layout.attn, layout.mlp, layout.orthogonalizable)
    assert down_projection(lm, 0) == down


@pytest.mark.parametrize("family", ALL)
def test_every_site_hooks_and_means_what_it_says(family):
    lm = _model(family)
    ids = _ids(lm)
    every = resolve_sites(SITES, None, N_LAYERS)
    assert len(every) == len(SITES) * N_LAYERS
    store, out = _record(lm, every, ids, output_hidden_states=True)
    assert set(store) == set(every)
    for site, hidden in store.items():
        assert hidden.shape == (1, ids.shape[1], lm.width), site
    hs = out.hidden_states
    torch.testing.assert_close(store[Site("resid_pre", 0)], hs[0])  # block 0's input: the embedding output
    for i in range(N_LAYERS):
        pre, post = store[Site("resid_pre", i)], store[Site("resid_post", i)]
        writes = store[Site("attn_out", i)] + store[Site("mlp_out", i)]
        torch.testing.assert_close(post, pre + writes, atol=1e-5, rtol=1e-5)  # the writers are the right modules
        if i + 1 < N_LAYERS:
            torch.testing.assert_close(store[Site("resid_pre", i + 1)], post)
            torch.testing.assert_close(post, hs[i + 1])  # layer i = hidden_states[i + 1] (the last one is normed)
        assert not torch.allclose(post, pre)


def test_site_names_parse_with_aliases_layers_and_did_you_mean():
    assert parse_site("resid_post.12") == Site("resid_post", 12)
    assert parse_site("mlp_out.-1") == Site("mlp_out", -1)
    assert parse_site("block_output") == Site("resid_post")  # the old name, still in saved directions
    assert parse_site("blocks.3.hook_attn_out") == Site("attn_out", 3)  # TransformerLens
    assert str(Site("resid_pre", 2)) == "resid_pre.2"
    with pytest.raises(ConfigError, match="did you mean 'resid_post'"):
        parse_site("resid_pots.1")
    with pytest.raises(ConfigError, match="resid_pre, attn_out, mlp_out, resid_post"):
        parse_site("blocks.3.hook_resid_mid")
    assert resolve_sites(["mlp_out.-1", "resid_pre"], None, 3)[-1] == Site("mlp_out", 2)
    with pytest.raises(LayerIndexError, match="out of range"):
        resolve_sites(["resid_post.3"], None, 3)
    with pytest.raises(ConfigError, match="one or the other"):
        resolve_sites(["resid_post.1"], [2], 3)


def test_an_unknown_model_names_the_overrides(monkeypatch):
    lm = tiny_model("llama", n_layers=2)
    monkeypatch.setattr(families, "FAMILIES", {})
    monkeypatch.setattr(lm.model.config, "num_hidden_layers", 5)  # no ModuleList of 5: the probe fails
    with pytest.raises(ArchitectureError, match=r"model type llama.*blocks_path="):
        decoder_blocks(lm.model)
    lm = tiny_model("llama", n_layers=2)
    with pytest.raises(ArchitectureError, match="writer_paths"):
        writer_layout(lm, ("self_attn.nope", "mlp.down_proj"))
    assert site_module(lm, Site("attn_out", -1)) is lm.blocks[1].self_attn.o_proj


def _cases(lm):
    """(name, a function returning a fresh intervention, run generate?) for every intervention on `lm`."""
    d = _direction(lm)
    cases = [
        (
            f"steer positions={p} site={s}",
            lambda p=p, s=s: steer(lm, d, alpha=3.0, positions=p, site=s),
            s == "resid_post",
        )
        for p in ("all", "prompt", "generated")
        for s in SITES
    ]
    cases += [(f"ablate sites={s}", lambda s=s: ablate(lm, d, sites=[s]), False) for s in SITES]
    cases += [
        ("ablate default", lambda: ablate(lm, d), True),
        ("ablate all", lambda: ablate(lm, d, sites=list(SITES)), False),
    ]
    return cases


@pytest.mark.parametrize("family", ALL)
def test_every_intervention_leaves_zero_hooks_behind(family, monkeypatch):
    lm = _model(family)
    ids = _ids(lm)
    with torch.no_grad():
        lm.model(ids)  # transformers may install its own hooks at the first forward: count after it
    before = _hook_counts(lm.model)
    for name, make, generate in _cases(lm):
        with make() as handle, torch.no_grad():
            assert handle.active and _hook_counts(lm.model) != before, name
            if generate:  # a prefill then cached one-token passes (the position tracker's two paths)
                lm.model.generate(ids, max_new_tokens=2, do_sample=False, pad_token_id=lm.tokenizer.pad_token_id)
            else:
                lm.model(ids)
        assert _hook_counts(lm.model) == before, f"{name}: after a normal exit"
        with pytest.raises(RuntimeError, match="inside"), make():
            raise RuntimeError("inside")
        assert _hook_counts(lm.model) == before, f"{name}: after an exception in the body"
        handle = make()
        handle.remove()
        handle.remove()  # idempotent
        assert _hook_counts(lm.model) == before, f"{name}: after remove()"

    calls = {"n": 0}
    real = sites_module.add_block_hook

    def failing(module, fn):  # the third registration fails: the first two must come off again
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("registration failed")
        return real(module, fn)

    monkeypatch.setattr(sites_module, "add_block_hook", failing)
    with pytest.raises(RuntimeError, match="registration failed"):
        ablate(lm, _direction(lm), sites=["attn_out", "mlp_out"])
    assert calls["n"] == 3
    assert _hook_counts(lm.model) == before, "after a registration failed half-way"


@pytest.mark.parametrize("family", ALL)
def test_orthogonalize_copies_and_equals_runtime_ablation(family):
    lm = _model(family)
    d = _direction(lm)
    ids = _ids(lm)
    with torch.no_grad():
        before_logits = lm.model(ids).logits
    before_hooks = _hook_counts(lm.model)
    if FAMILIES[family].post_norm:
        with pytest.raises(NotSupportedError, match="runtime ablation"):
            orthogonalize_weights(lm, d)
        return
    with ablate(lm, d), torch.no_grad():
        ablated = lm.model(ids).logits
    ortho = orthogonalize_weights(lm, d)
    assert ortho.model is not lm.model
    with torch.no_grad():
        torch.testing.assert_close(ortho.model(ids).logits, ablated, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(lm.model(ids).logits, before_logits, atol=0, rtol=0)  # the original is untouched
    assert not torch.allclose(ablated, before_logits, atol=1e-3)
    assert _hook_counts(lm.model) == before_hooks
    assert _hook_counts(ortho.model) == before_hooks  # only transformers' own hooks, copied with the model
    with steer(lm, _direction(lm, seed=1), alpha=4.0):  # an intervention active on the original is not copied
        ortho = orthogonalize_weights(lm, d)
    assert _hook_counts(ortho.model) == before_hooks
    with torch.no_grad():
        torch.testing.assert_close(ortho.model(ids).logits, ablated, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family", ALL)
@pytest.mark.parametrize("site", list(SITES))
def test_steer_adds_at_the_directions_site(family, site):
    lm = _model(family)
    ids = _ids(lm)
    d = _direction(lm, layer=1, site=site)
    where = Site(site, 1)
    plain, _ = _record(lm, [where, Site("resid_post", 0)], ids)
    with steer(lm, d, alpha=2.5):  # no site=: the direction's own
        steered, _ = _record(lm, [where, Site("resid_post", 0)], ids)
    delta = steered[where] - plain[where]
    torch.testing.assert_close(delta, (2.5 * d.unit).expand_as(delta), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(steered[Site("resid_post", 0)], plain[Site("resid_post", 0)], atol=0, rtol=0)


def test_steer_site_argument_overrides_and_names_one_place():
    lm = _model("llama")
    ids = _ids(lm)
    d = _direction(lm, layer=1, site="block_output")  # an old saved direction: the alias of resid_post
    target, elsewhere = Site("resid_pre", 2), Site("mlp_out", 0)
    plain, _ = _record(lm, [target, elsewhere], ids)
    for kwargs in ({}, {"site": "resid_pre.2"}, {"site": "resid_pre", "layers": 2}):  # three names of one place
        with steer(lm, d, alpha=1.5, **kwargs):
            got, _ = _record(lm, [target, elsewhere], ids)
        delta = got[target] - plain[target]
        torch.testing.assert_close(delta, (1.5 * d.unit).expand_as(delta), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got[elsewhere], plain[elsewhere], atol=0, rtol=0)
    before = _hook_counts(lm.model)
    with pytest.raises(ConfigError, match="one or the other"):
        steer(lm, d, alpha=1.0, site="mlp_out.0", layers=1)
    with pytest.raises(ConfigError, match="did you mean 'mlp_out'"):
        steer(lm, d, alpha=1.0, site="mlp_outt")
    assert _hook_counts(lm.model) == before


def test_hook_site_without_a_layer_is_a_clear_error():
    lm = _model("llama")
    with pytest.raises(LayerIndexError, match="resid_post.0"):
        hook_site(lm, "resid_post", lambda h: None)


def test_score_honours_the_directions_site():
    from emscope.directions.detect import score

    lm = _model("llama")
    talk = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there"}]}]
    with pytest.raises(ConfigError, match="'mlp_out'"):
        score(lm, talk, _direction(lm, site="mlp_out"))
    old = score(lm, talk, _direction(lm, site="block_output"))  # the old name of resid_post
    torch.testing.assert_close(old, score(lm, talk, _direction(lm)))
