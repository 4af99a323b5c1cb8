"""Direction extraction methods, the held-out split and the Direction artifact."""

from __future__ import annotations

import pytest
import torch

from emscope.directions.direction import Direction
from emscope.directions.extract import METHODS, NORMALISATION, extract_direction, get_method, train_test_split
from emscope.errors import ConfigError, DataFormatError, LayerIndexError, ModelMismatchError, WidthMismatchError


def planted(n: int = 1500, width: int = 32, shift: float = 2.0, seed: int = 0):
    """Paired pos/neg sets: shared per-pair content plus noise, pos shifted by `shift` along a unit vector."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(width, generator=g)
    v = v / v.norm()
    base = torch.randn(n, width, generator=g)
    pos = base + 0.5 * torch.randn(n, width, generator=g) + shift * v
    neg = base + 0.5 * torch.randn(n, width, generator=g)
    return pos, neg, v


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_recovers_a_planted_direction(method):
    pos, neg, v = planted()
    d = METHODS[method](pos, neg)
    assert d.shape == v.shape
    assert torch.nn.functional.cosine_similarity(d, v, dim=0) > 0.99  # sign too: points from neg to pos
    assert abs(float(d.norm()) - 2.0) < 0.2  # every method is scaled to the class-mean shift


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_has_a_normalisation_entry(method):
    assert method in NORMALISATION


def test_diff_in_means_matches_reference():
    pos, neg, _ = planted(n=50)
    assert torch.allclose(METHODS["diff_in_means"](pos, neg), pos.mean(0) - neg.mean(0), atol=1e-5)


def test_pca_needs_paired_rows():
    pos, neg, _ = planted(n=20)
    with pytest.raises(DataFormatError, match="paired"):
        METHODS["pca_of_paired_differences"](pos, neg[:10])


@pytest.mark.parametrize("method", sorted(METHODS))
def test_width_mismatch_between_pos_and_neg(method):
    with pytest.raises(WidthMismatchError, match="width 8 but neg have width 9"):
        METHODS[method](torch.randn(5, 8), torch.randn(5, 9))


def test_empty_and_misshapen_sets_are_refused():
    with pytest.raises(DataFormatError, match="0 rows"):
        extract_direction(torch.empty(0, 8), torch.randn(5, 8), layer=0)
    with pytest.raises(DataFormatError, match=r"\[N, D\]"):
        extract_direction(torch.randn(8), torch.randn(5, 8), layer=0)
    with pytest.raises(LayerIndexError, match="resolve_layers"):
        extract_direction(torch.randn(5, 8), torch.randn(5, 8), layer=-1)
    with pytest.raises(ConfigError, match="unknown direction method 'mean_of_vibes'; choose from diff_in_means"):
        get_method("mean_of_vibes")


def test_split_keeps_pairs_together_and_is_seeded():
    s = train_test_split(20, 20, test_frac=0.25, seed=3)
    assert torch.equal(s.pos_test, s.neg_test) and len(s.pos_test) == 5
    assert set(s.pos_train.tolist()).isdisjoint(s.pos_test.tolist())
    assert torch.equal(train_test_split(20, 20, 0.25, 3).pos_test, s.pos_test)
    unpaired = train_test_split(20, 10, 0.3, 0)
    assert len(unpaired.pos_test) == 6 and len(unpaired.neg_test) == 3
    with pytest.raises(DataFormatError, match="test_frac"):
        train_test_split(10, 10, 1.0)


def test_extract_direction_reports_held_out_metrics():
    pos, neg, v = planted(n=200, shift=5.0)
    d = extract_direction(pos, neg, layer=4, method="logistic_probe", model="synthetic", n_boot=200)
    assert d.layer == 4 and d.method == "logistic_probe" and d.normalisation != "none"
    assert d.n_per_class["pos"] == 200 and d.n_per_class["pos_train"] == 140
    m = d.metrics
    assert m["n_test_pos"] == 60 and m["paired_split"] is True
    assert m["auroc"] > 0.95 and m["accuracy"] > 0.9
    assert m["auroc_ci"][0] <= m["auroc"] <= m["auroc_ci"][1]


def test_direction_save_load_round_trip_keeps_every_field(tmp_path):
    pos, neg, _ = planted(n=40)
    d = extract_direction(
        pos,
        neg,
        layer=2,
        method="pca_of_paired_differences",
        model="tiny:llama",
        model_revision="rev-1",
        dataset_fingerprint="sha256:abc:n=80",
        token_selection="response_mean",
        meta={"note": "x"},
        n_boot=50,
    )
    d.save(tmp_path / "d")
    back = Direction.load(tmp_path / "d")
    assert torch.equal(back.vector, d.vector)
    for name in Direction.__dataclass_fields__:
        if name != "vector":
            assert getattr(back, name) == getattr(d, name), name


def test_loading_onto_a_model_of_another_width_or_depth_is_refused(tiny):
    lm = tiny("llama", n_layers=3, width=64)
    with pytest.raises(WidthMismatchError, match="width 32 but 'tiny:llama' has width 64"):
        Direction(torch.randn(32), layer=0, model="tiny:llama").check_compatible(lm)
    with pytest.raises(LayerIndexError, match="layers 0..2"):
        Direction(torch.randn(64), layer=3, model="tiny:llama").check_compatible(lm)
    with pytest.raises(ModelMismatchError, match="another base model.*compatibility='any'"):
        Direction(torch.randn(64), layer=0, model="other").check_compatible(lm)
