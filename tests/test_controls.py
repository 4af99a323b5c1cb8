"""Controls: norm-matched, orthogonal, reproducible; the comparison maths; dose-response with its band."""

from __future__ import annotations

import math

import pytest
import torch

from emscope.directions.direction import Direction
from emscope.errors import NotSupportedError
from emscope.interventions.controls import (
    compare_to_controls,
    control_directions,
    orthogonal_directions,
    random_directions,
)
from emscope.interventions.dose_response import DoseResponse, dose_response, plot_dose_response


@pytest.fixture()
def target():
    return Direction(
        vector=torch.randn(64, generator=torch.Generator().manual_seed(3)) * 7, layer=1, model="tiny:llama"
    )


def test_random_controls_norm_matched_and_seeded(target):
    a = random_directions(target, 5, seed=1)
    b = random_directions(target, 5, seed=1)
    c = random_directions(target, 5, seed=2)
    assert all(torch.equal(x.vector, y.vector) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0].vector, c[0].vector)
    for d in a:
        assert d.layer == target.layer and d.model == target.model and d.method == "control_random"
        assert math.isclose(float(d.vector.norm()), float(target.vector.norm()), rel_tol=1e-5)


def test_orthogonal_controls(target):
    ctl = orthogonal_directions(target, 6, seed=0)
    units = torch.stack([d.unit for d in ctl])
    assert float((units @ target.unit).abs().max()) < 1e-5
    gram = units @ units.T
    torch.testing.assert_close(gram, torch.eye(6), atol=1e-5, rtol=0)
    for d in ctl:
        assert math.isclose(float(d.vector.norm()), float(target.vector.norm()), rel_tol=1e-5)
    plain = orthogonal_directions(target.vector, 2)  # plain tensors in, plain tensors out
    assert isinstance(plain[0], torch.Tensor)
    with pytest.raises(NotSupportedError):
        orthogonal_directions(target, 64)


def test_control_directions_names(target):
    names = list(control_directions(target, 2))
    assert names == ["random:0", "random:1", "orthogonal:0", "orthogonal:1"]


def test_compare_to_controls_math():
    c = compare_to_controls(5.0, [1.0, 2.0, 3.0, 4.0])
    assert c.control_mean == 2.5
    assert math.isclose(c.control_std, math.sqrt(5 / 3))
    assert math.isclose(c.z, 2.5 / math.sqrt(5 / 3))
    assert c.percentile == 100.0 and c.n_as_extreme == 0 and c.p_value == pytest.approx(1 / 5)
    assert "above every control" in c.verdict
    inside = compare_to_controls(2.0, [1.0, 2.0, 3.0, 4.0])
    assert inside.percentile == pytest.approx(37.5)  # 1 below, 1 tie (half)
    assert "within the control range" in inside.verdict
    assert "too few" in compare_to_controls(9.0, [1.0, 2.0]).verdict
    flat = compare_to_controls(1.0, [0.0, 0.0, 0.0])
    assert flat.z == math.inf
    with pytest.raises(NotSupportedError):
        compare_to_controls(1.0, [])


def test_dose_response_runs_controls_and_plots(tiny, tmp_path):
    lm = tiny("llama")
    d = Direction(vector=torch.randn(lm.width), layer=1, model=lm.spec)
    ids = lm.tokenizer("hello there", return_tensors="pt").input_ids

    def measure(m):  # mean projection of the last layer's output onto the direction
        seen = []
        h = m.blocks[-1].register_forward_hook(
            lambda _m, _a, out: seen.append(out[0] if isinstance(out, tuple) else out)
        )
        with torch.no_grad():
            m.model(ids)
        h.remove()
        return float((seen[0] @ d.unit).mean())

    res = dose_response(lm, d, [0.0, 8.0], measure, n_controls=3, progress=False)
    assert set(res.values) == {"target", *(f"{k}:{i}" for k in ("random", "orthogonal") for i in range(3))}
    assert res.effects("target")[0] == pytest.approx(0.0, abs=1e-6)
    comp = res.comparisons[1]
    assert comp.n_controls == 6 and comp.target > comp.control_max  # steering along u moves u the most
    res.save(tmp_path / "dr")
    again = DoseResponse.load(tmp_path / "dr")
    assert again.values == res.values and again.layers == [1]
    assert (tmp_path / "dr" / "dose_response.csv").read_text().startswith("alpha,direction,kind,value,effect")
    assert plot_dose_response(res, tmp_path / "dr" / "plot.png").stat().st_size > 1000
    with pytest.raises(NotSupportedError, match="controls"):
        dose_response(lm, d, [1.0], measure, n_controls=0)
