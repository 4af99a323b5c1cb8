"""The cross-domain layer choice: leave one domain out, choose by the mean held-out-domain AUROC."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from emscope.artifacts import load_result
from emscope.directions.contrast import load_corpus, reading_route_transcripts
from emscope.directions.cross_domain import cross_domain_sweep
from emscope.directions.cross_domain_result import CHOICE_RULE, Candidate, CrossDomainResult
from emscope.directions.pooled_cache import capture_pooled
from emscope.directions.sweep import SweepResult, sweep_model
from emscope.errors import ConfigError, DataFormatError

DOMAINS = [f"d{i}" for i in range(5)]
STYLES = ("subtle", "blatant")


def planted(n_per_domain: int = 24, width: int = 32, seed: int = 0):
    """Layer 0: one direction shared by every domain, moderate shift. Layer 1: each domain its own direction,
    large shift. A random split sees every domain's direction in training; a held-out domain does not."""
    g = torch.Generator().manual_seed(seed)
    n = n_per_domain * len(DOMAINS)
    domains = [d for d in DOMAINS for _ in range(n_per_domain)]
    styles = [STYLES[i % 2] for i in range(n)]
    basis = torch.linalg.qr(torch.randn(width, width, generator=g))[0]
    shared, own = basis[:, 0], {d: basis[:, 1 + i] for i, d in enumerate(DOMAINS)}
    pos, neg = {}, {}
    for layer, shift in ((0, [2.5 * shared] * n), (1, [8.0 * own[d] for d in domains])):
        base = torch.randn(n, width, generator=g)
        neg[layer] = base + 0.5 * torch.randn(n, width, generator=g)
        pos[layer] = base + torch.stack(shift) + 0.5 * torch.randn(n, width, generator=g)
    return {"mean": pos}, {"mean": neg}, domains, styles


def test_the_cross_domain_rule_picks_the_shared_direction_the_random_split_the_domain_specific_one():
    pos, neg, domains, styles = planted()
    result = cross_domain_sweep(pos, neg, domains, styles, methods=("diff_in_means",), n_boot=50)
    assert result.chosen == Candidate("mean", "diff_in_means", 0)
    assert result.random_split_choice == Candidate("mean", "diff_in_means", 1)
    shared, specific = result.row(result.chosen), result.row(result.random_split_choice)
    assert specific["within_split_auroc"] > shared["within_split_auroc"]
    assert specific["heldout_domain_auroc"] < 0.75 < shared["heldout_domain_auroc"]
    lo, hi = shared["heldout_domain_auroc_lo"], shared["heldout_domain_auroc_hi"]
    assert lo <= shared["heldout_domain_auroc"] <= hi
    assert result.nested["mean_auroc"] == pytest.approx(shared["heldout_domain_auroc"])  # every fold agrees
    assert result.nested["same_choice_share"] == 1.0
    assert result.rule == CHOICE_RULE


def test_matrices_folds_and_the_shipped_direction():
    pos, neg, domains, styles = planted()
    result = cross_domain_sweep(pos, neg, domains, styles, methods=("diff_in_means", "logistic_probe"), n_boot=20)
    assert len(result.rows) == 2 * 2  # layers x methods
    assert result.domains == DOMAINS and np.shape(result.domain_matrix) == (5, 5)
    assert result.styles == list(STYLES) and np.shape(result.style_matrix) == (2, 2)
    assert all(v > 0.85 for row in result.style_matrix for v in row)  # one shared direction: styles carry over
    assert [f["heldout_domain"] for f in result.folds] == DOMAINS and {"subtle", "blatant"} <= set(result.folds[0])
    best = result.best
    assert best.layer == result.chosen.layer and best.metrics["protocol"] == "cross_domain"
    assert best.metrics["auroc"] == result.row(result.chosen)["heldout_domain_auroc"]
    assert "auroc" in best.metrics["within_split"]
    cos = torch.nn.functional.cosine_similarity(best.vector, pos["mean"][0].mean(0) - neg["mean"][0].mean(0), dim=0)
    assert cos > 0.99 or result.chosen.method != "diff_in_means"


def test_layer1_domain_matrix_is_chance_off_the_diagonal():
    pos, neg, domains, styles = planted()
    only_layer1 = {"mean": {1: pos["mean"][1]}}, {"mean": {1: neg["mean"][1]}}
    result = cross_domain_sweep(*only_layer1, domains, styles, methods=("diff_in_means",), n_boot=0)
    m = np.asarray(result.domain_matrix)
    off = m[~np.eye(len(DOMAINS), dtype=bool)]
    assert np.diag(m).min() > 0.9 and off.mean() < 0.7


def test_save_and_load_round_trip(tmp_path):
    pos, neg, domains, styles = planted()
    result = cross_domain_sweep(pos, neg, domains, styles, methods=("diff_in_means",), n_boot=20, model="synthetic")
    result.save(tmp_path / "cd")
    for name in ("layers.csv", "domains.csv", "styles.csv", "folds.csv", "layers.png", "domains.png", "styles.png"):
        assert (tmp_path / "cd" / name).is_file(), name
    back = load_result(tmp_path / "cd")
    assert isinstance(back, CrossDomainResult)
    assert back.chosen == result.chosen and back.random_split_choice == result.random_split_choice
    np.testing.assert_allclose(back.domain_matrix, result.domain_matrix)
    assert torch.equal(back.best.vector, result.best.vector) and back.best.model == "synthetic"
    assert json.loads((tmp_path / "cd" / "config.json").read_text())["kind"] == "cross_domain_sweep"


def test_refuses_one_domain_and_unpaired_tags():
    pos, neg, domains, styles = planted()
    with pytest.raises(DataFormatError, match="at least 2 domains"):
        cross_domain_sweep(pos, neg, ["d0"] * len(domains), n_boot=0)
    with pytest.raises(DataFormatError, match="domain tags"):
        cross_domain_sweep(pos, neg, domains[:-1], n_boot=0)


def test_pooled_cache_matches_the_capture_and_is_reused(tiny, tmp_path):
    from emscope.activations.capture import capture_activations
    from emscope.data.transcripts import Transcript

    lm = tiny("llama")
    data = [Transcript.from_pair(f"question {i}?", "a short answer " * (i + 1), label="x") for i in range(5)]
    first = capture_pooled(lm, data, cache_dir=tmp_path, chunk_size=4, progress=False)
    (chunk,) = [p for p in tmp_path.rglob("chunk-00000.safetensors")]
    stamp = chunk.stat().st_mtime_ns
    again = capture_pooled(lm, data, cache_dir=tmp_path, chunk_size=4, progress=False)
    assert chunk.stat().st_mtime_ns == stamp
    for pool in ("mean", "last", "max"):
        ref = capture_activations(lm, data, pool=pool, progress=False).pooled
        for layer in ref:
            torch.testing.assert_close(first[pool][layer], ref[layer], rtol=1e-5, atol=1e-5)
            assert torch.equal(again[pool][layer], first[pool][layer])


def test_sweep_model_cross_domain_on_a_tiny_model(tiny, tmp_path):
    lm = tiny("llama")
    pairs = [p for d in ("law", "medicine", "money") for p in load_corpus([d], per_cell=1)]
    aligned, misaligned = reading_route_transcripts(pairs)
    result = sweep_model(
        lm,
        misaligned,
        aligned,
        n_boot=10,
        progress=False,
        protocol="cross_domain",
        domains=[p.topic for p in pairs],
        styles=[p.misaligned_kind for p in pairs],
        methods=("diff_in_means", "logistic_probe"),
        pools=("mean", "last"),
        cache_dir=tmp_path / "cache",
    )
    assert isinstance(result, CrossDomainResult)
    assert len(result.rows) == 3 * 2 * 2 and result.domains == ["law", "medicine", "money"]
    assert result.best.model == lm.spec and result.best.token_selection == f"response_{result.pool}"
    assert result.config["n_pairs"] == 9 and result.config["model"] == lm.spec
    old = sweep_model(lm, misaligned, aligned, n_boot=10, progress=False)  # the default protocol is unchanged
    assert isinstance(old, SweepResult)
    with pytest.raises(ConfigError, match="needs a domain per pair"):
        sweep_model(lm, misaligned, aligned, protocol="cross_domain", progress=False)  # type: ignore[call-overload]
    with pytest.raises(ConfigError, match="unknown protocol"):
        sweep_model(lm, misaligned, aligned, protocol="lodo", progress=False)  # type: ignore[call-overload]
