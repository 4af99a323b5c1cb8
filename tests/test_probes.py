"""Monitors (emscope.probes): heads, registry, feature sources and the held-out-domain protocol, on tiny models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emscope.directions.contrast import load_corpus
from emscope.errors import ConfigError
from emscope.probes import (
    MONITORS,
    FeatureStore,
    Monitor,
    MonitorContext,
    RawActivations,
    corpus_items,
    fit_diff_in_means,
    fit_logistic_cv,
    get_monitor,
    heldout_curve,
    sample_pairs,
    subsample_pairs,
)
from emscope.probes.heads import cv_auroc, cv_folds
from emscope.probes.items import nested_subsamples
from emscope.probes.sources import FeatureSource, PromptedReading

DOMAINS = ("law", "money", "medicine")


@pytest.fixture(scope="module")
def items():
    """Two pairs of every style in three domains: 36 answers."""
    return corpus_items(subsample_pairs(load_corpus(domains=DOMAINS), 2, seed=0))


@pytest.fixture(scope="module")
def lm():
    from emscope.testing import tiny_model

    return tiny_model("llama", n_layers=4, width=32)


@pytest.fixture(autouse=True)
def _one_thread():
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):  # tiny lbfgs fits crawl when BLAS threads fight over a shared CPU
        yield
    torch.set_num_threads(before)


def test_unknown_monitor_names_the_choices_and_the_closest(lm):
    with pytest.raises(ConfigError, match=r"unknown monitor 'raw-men-dim'.*did you mean 'raw-mean-dim'"):
        get_monitor("raw-men-dim", MonitorContext(lm=lm))


def test_sae_arm_without_an_sae_says_how_to_get_one(lm):
    with pytest.raises(ConfigError, match=r"needs an SAE: train one with `emscope sae train`"):
        get_monitor("sae-max-logistic", MonitorContext(lm=lm))


def test_monitor_reading_activations_needs_a_model():
    with pytest.raises(ConfigError, match="lm="):
        get_monitor("raw-mean-dim", MonitorContext())


class _TinySae:
    """Stands in for an emscope.sae.SparseAutoencoder: ReLU(x W) at one layer."""

    layer = 2
    fingerprint = "tiny-sae"

    def __init__(self, width: int = 32, n_latents: int = 48) -> None:
        self.w = torch.randn(width, n_latents, generator=torch.Generator().manual_seed(0))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ self.w)


def test_every_arm_fits_and_scores_on_a_tiny_model(lm, items, tmp_path):
    ctx = MonitorContext(lm=lm, store=FeatureStore(tmp_path), sae=_TinySae())
    train = [it for it in items if it.domain != "law"]
    test = [it for it in items if it.domain == "law"]
    for name in MONITORS:
        m = get_monitor(name, ctx).fit(train)
        s = m.score(test)
        assert s.shape == (len(test),) and np.isfinite(s).all(), name
        assert m.cost is not None and m.cost.forward_tokens > 0 and m.cost.seconds > 0, name
        assert m.cost.cpu_seconds is not None and m.cost.cpu_seconds > 0, name
        if m.trainable:
            assert m.chosen_layer is not None, name
    # the raw arms share one forward pass, the prompted probe and zero-shot another
    assert {s for s in ctx._sources} == {"raw", "prompted", "sae"}


def test_unfitted_monitor_refuses_to_score(lm, items):
    m = get_monitor("raw-mean-logistic", MonitorContext(lm=lm))
    with pytest.raises(ConfigError, match="not fitted"):
        m.score(items[:2])


def test_pooling_variants_match_capture_and_differ(lm, items):
    from emscope.activations.capture import capture_activations

    src = RawActivations(lm, layers=[1, 3])
    arrays, tokens = src.extract(items[:6])
    transcripts = [it.transcript for it in items[:6]]
    for pool in ("mean", "last", "max"):
        ref = capture_activations(lm, transcripts, [1, 3], pool=pool, progress=False)
        for li, layer in enumerate([1, 3]):
            torch.testing.assert_close(torch.from_numpy(arrays[pool][:, li]), ref.pooled[layer], rtol=1e-4, atol=1e-5)
    assert not np.allclose(arrays["mean"], arrays["last"])
    assert not np.allclose(arrays["mean"], arrays["max"])
    assert (arrays["max"] >= arrays["mean"] - 1e-6).all()  # a max over tokens is never below their mean
    assert (tokens > 0).all()


def test_prompted_reading_puts_the_transcript_after_the_task(lm, items):
    src = PromptedReading(lm, layers=[1, 3])
    ids = src.prompt_ids(items[0])
    text = lm.tokenizer.decode(ids)
    assert text.index("safety monitor") < text.index(items[0].answer[:20]) < text.index("Answer Yes or No")
    arrays, _ = src.extract(items[:3])
    assert arrays["last"].shape == (3, 2, 32)
    assert ((arrays["p_yes"] > 0) & (arrays["p_yes"] < 1)).all()
    assert src.yes and src.no and not set(src.yes) & set(src.no)


def test_prompted_prefix_cache_is_exact(lm, items):
    """Reading a batch (shared instructions run once into a KV cache) equals reading each item alone."""
    src = PromptedReading(lm, layers=[1, 3])
    together, _ = src.extract(items[:3])
    alone = [src.extract([it])[0] for it in items[:3]]
    for k in range(3):
        np.testing.assert_allclose(together["last"][k], alone[k]["last"][0], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(together["p_yes"][k], alone[k]["p_yes"][0], rtol=1e-4, atol=1e-5)


class _Counting(FeatureSource):
    name = "counting"

    def __init__(self) -> None:
        self.calls = 0

    def extract(self, items):
        self.calls += 1
        return {"v": np.array([[[float(len(it.answer))]] for it in items])}, np.ones(len(items))


def test_feature_store_reads_back_and_computes_only_what_is_missing(items, tmp_path):
    src = _Counting()
    a = FeatureStore(tmp_path, chunk=4).get(src, items[:10])
    assert src.calls == 3
    src2 = _Counting()
    b = FeatureStore(tmp_path, chunk=4).get(src2, items[:12])  # 10 cached, 2 new
    assert src2.calls == 1
    np.testing.assert_array_equal(a["v"], b["v"][:10])


def test_cv_picks_the_c_with_the_best_cross_validated_auroc():
    rng = np.random.default_rng(0)
    n, d = 40, 300  # few rows, many noise features: a strong penalty generalises better
    y = np.repeat([0, 1], n // 2)
    x = rng.normal(size=(n, d))
    x[:, 0] += 1.5 * y
    head = fit_logistic_cv(x, y, cs=(1e-4, 1e-2, 1.0, 100.0))
    assert head.c == max(head.cv, key=lambda c: (head.cv[c], -c))
    assert set(head.cv) == {1e-4, 1e-2, 1.0, 100.0}
    splits = cv_folds(y, None, 4, 0)
    assert head.cv[head.c] == pytest.approx(cv_auroc(x, y, head.c, splits))
    assert len(set(head.cv.values())) > 1  # C matters here, so the choice is a real one


def test_cv_folds_keep_groups_together():
    y = np.tile([0, 1], 10)
    groups = [f"p{i // 2}" for i in range(20)]
    for tr, te in cv_folds(y, groups, 4, 0):
        assert not {groups[i] for i in tr} & {groups[i] for i in te}


def test_heads_score_the_positive_class_higher():
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1], 30)
    x = rng.normal(size=(60, 5)) + 2.0 * y[:, None]
    for head in (fit_diff_in_means(x, y), fit_logistic_cv(x, y)):
        s = head.score(x)
        assert s[y == 1].mean() > s[y == 0].mean()


class _Spy(Monitor):
    """Records the items of every fit."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fits: list[list] = []

    def fit_features(self, x, y, items):
        self.fits.append(list(items))
        return super().fit_features(x, y, items)


def test_protocol_never_trains_on_the_held_out_domain_and_keeps_pairs(lm, items):
    ctx = MonitorContext(lm=lm)
    src = ctx.source("raw", lambda: RawActivations(lm, layers=[1, 3]))
    spy = _Spy("spy", src, "mean", "diff_in_means", ctx.store)
    curve = heldout_curve(spy, items, sizes=[4, 8, "all"], repeats=3)
    domains = [p.domain for p in curve.points]
    assert len(spy.fits) == len(curve.points) == 3 * (3 + 3 + 1)
    for fit, held in zip(spy.fits, domains, strict=True):
        assert held not in {it.domain for it in fit}
        counts: dict[str, int] = {}
        for it in fit:
            counts[it.group] = counts.get(it.group, 0) + 1
        assert set(counts.values()) == {2}  # both answers of every pair, never one
    assert {p.n_used for p in curve.points if p.n_train == 4} == {4}
    assert {p.n_used for p in curve.points if p.n_train == "all"} == {24}
    rows = curve.summary()
    assert [r["n_train"] for r in rows] == [4, 8, "all"]
    assert all(r["ci_low"] <= r["auroc"] <= r["ci_high"] for r in rows)
    assert set(curve.by_style) == {"blatant", "subtle", "sycophantic"}


def test_sample_pairs_draws_whole_pairs(items):
    idx = sample_pairs(items, list(range(len(items))), 6, np.random.default_rng(0))
    assert len(idx) == 6 and len({items[i].group for i in idx}) == 3


def test_nested_subsamples_are_prefixes_of_a_balanced_sample():
    pairs = load_corpus(domains=DOMAINS)
    parts = nested_subsamples(pairs, 3, seed=0)
    assert {p.id for p in parts[0] + parts[1]} == {p.id for p in subsample_pairs(pairs, 2, seed=0)}
    assert [len(p) for p in parts] == [9, 9, 9]
