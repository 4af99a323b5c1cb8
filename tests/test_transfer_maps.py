"""Activation maps: planted maps are recovered, broken pairings are not, and maps refuse what does not fit them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emscope.artifacts import load_result, read_config
from emscope.directions.direction import Direction
from emscope.errors import ArtifactError, ConfigError, LayerIndexError, ModelMismatchError, WidthMismatchError
from emscope.models.lineage import Lineage
from emscope.transfer.mapped import map_direction, mapped_random_directions
from emscope.transfer.maps import MAP_KINDS, ActivationMap, Endpoint, fit_map

SRC = Endpoint("donor", 3, 24, Lineage(base="donor"))
TGT = Endpoint("receiver", 5, 32, Lineage(base="receiver"))


def planted(n: int = 400, seed: int = 0, noise: float = 0.01) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, SRC.width, generator=g) * 3 + 1
    w = torch.randn(SRC.width, TGT.width, generator=g) / SRC.width**0.5
    y = x @ w + torch.randn(TGT.width, generator=g) + noise * torch.randn(n, TGT.width, generator=g)
    return x, y, w


@pytest.mark.parametrize("kind", ["ridge", "least_squares"])
def test_a_planted_linear_map_is_recovered(kind):
    x, y, w = planted()
    m = fit_map(x, y, SRC, TGT, kind)
    assert m.r2_heldout > 0.99
    assert torch.allclose(m.matrix, w, atol=0.02)
    assert len(m.test_rows) == 100 and m.n_train == 300  # 25% held out, never fitted on


@pytest.mark.parametrize("kind", sorted(MAP_KINDS))
def test_shuffled_pairings_give_r2_near_zero(kind):
    x, y, _ = planted(seed=1)
    shuffled = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(0))]
    m = fit_map(x, shuffled, SRC, TGT, kind)
    assert m.r2_heldout < 0.1  # nothing carries over: near zero, or negative for the unregularised kinds
    if kind == "ridge":
        assert abs(m.r2_heldout) < 0.1


def test_procrustes_recovers_a_planted_rotation():
    g = torch.Generator().manual_seed(2)
    d = 16
    x = torch.randn(300, d, generator=g) * torch.linspace(0.5, 3, d)  # distinct variances, as activations have
    rotation, _ = torch.linalg.qr(torch.randn(d, d, generator=g))
    y = 2.0 * x @ rotation + 0.5
    src, tgt = Endpoint("a", 0, d, Lineage(base="a")), Endpoint("b", 0, d, Lineage(base="b"))
    m = fit_map(x, y, src, tgt, "procrustes")
    assert torch.allclose(m.matrix, 2.0 * rotation, atol=1e-4)
    assert m.meta["common_dim"] == d and m.meta["scale"] == pytest.approx(2.0, rel=1e-5)
    assert m.r2_heldout > 0.999


def test_procrustes_between_widths_goes_through_a_common_dimension():
    x, y, _ = planted()
    m = fit_map(x, y, SRC, TGT, "procrustes")
    assert m.meta["common_dim"] == min(SRC.width, TGT.width)
    assert tuple(m.matrix.shape) == (SRC.width, TGT.width)


def test_ridge_alpha_is_recorded_and_scale_free():
    x, y, _ = planted(noise=0.5)
    a = fit_map(x, y, SRC, TGT, "ridge")
    b = fit_map(x * 100, y, SRC, TGT, "ridge")  # same data in other units: same relative alpha, same R^2
    assert a.alpha is not None and a.meta["alpha_relative"] == b.meta["alpha_relative"]
    assert a.r2_heldout == pytest.approx(b.r2_heldout, abs=1e-6)


def test_width_mismatches_are_refused():
    x, y, _ = planted()
    with pytest.raises(WidthMismatchError, match="width"):
        fit_map(x[:, :10], y, SRC, TGT)
    with pytest.raises(ConfigError, match="map kind"):
        fit_map(x, y, SRC, TGT, "cca")
    m = fit_map(x, y, SRC, TGT)
    with pytest.raises(WidthMismatchError, match="width 7"):
        map_direction(m, Direction(torch.randn(7), layer=3, model="donor", lineage=Lineage(base="donor")))
    with pytest.raises(WidthMismatchError):
        m.apply(torch.randn(2, TGT.width))


def test_lineage_and_layer_mismatches_are_refused():
    x, y, _ = planted()
    m = fit_map(x, y, SRC, TGT)
    other = Direction(torch.randn(SRC.width), layer=3, model="other", lineage=Lineage(base="other"))
    with pytest.raises(ModelMismatchError, match="compatibility='any'"):
        map_direction(m, other)
    assert map_direction(m, other, compatibility="any").model == "receiver"  # on purpose, it is allowed
    with pytest.raises(LayerIndexError, match="layer 4"):
        map_direction(m, Direction(torch.randn(SRC.width), layer=4, model="donor", lineage=SRC.lineage))


def test_map_direction_is_the_linear_part_and_records_its_source():
    x, y, _ = planted()
    m = fit_map(x, y, SRC, TGT)
    donor = Direction(torch.randn(SRC.width), layer=3, model="donor", lineage=SRC.lineage, method="probe")
    mapped = map_direction(m, donor)
    assert torch.allclose(mapped.vector, donor.vector @ m.matrix)  # the intercept cancels for a difference
    assert mapped.model == "receiver" and mapped.layer == 5 and mapped.lineage == TGT.lineage
    assert mapped.method == "mapped_ridge:probe"
    assert mapped.meta["source_model"] == "donor" and mapped.meta["source_layer"] == 3
    controls = mapped_random_directions(m, donor, n=5, seed=1)
    assert len(controls) == 5 and all(c.meta["control"] == "mapped_random" for c in controls)
    assert all(c.width == TGT.width for c in controls)


@pytest.mark.parametrize("kind", sorted(MAP_KINDS))
def test_save_and_load_round_trip(kind, tmp_path):
    x, y, _ = planted()
    m = fit_map(x, y, SRC, TGT, kind, dataset_fingerprint="abc")
    m.save(tmp_path / "map")
    assert read_config(tmp_path / "map")["kind"] == f"activation_map_{kind}"
    back = load_result(tmp_path / "map")
    assert isinstance(back, ActivationMap) and back.kind == kind
    assert torch.equal(back.matrix, m.matrix) and torch.equal(back.intercept, m.intercept)
    assert back.source == SRC and back.target == TGT
    assert back.r2_heldout == m.r2_heldout and back.test_rows == m.test_rows and back.alpha == m.alpha


def test_load_refuses_another_kind(tmp_path):
    Direction(torch.randn(4), layer=0, model="m").save(tmp_path / "d")
    with pytest.raises(ArtifactError, match="activation map"):
        ActivationMap.load(tmp_path / "d")


def test_too_few_pairs_is_a_clear_error():
    x, y, _ = planted(n=3)
    with pytest.raises(ValueError, match="at least 4"):
        fit_map(x, y, SRC, TGT)


def test_r2_is_sklearns_variance_weighted():
    from sklearn.metrics import r2_score

    from emscope.transfer.maps import r2

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(20, 3)), rng.normal(size=(20, 3))
    assert r2(a, b) == pytest.approx(r2_score(a, b, multioutput="variance_weighted"))
