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
    specificity_verdict,
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


def test_specificity_verdict():
    controls = [-0.1, 0.05, 0.2]
    assert specificity_verdict(0.5, 0.3, 0.7, controls) == "specific"  # CI excludes 0, above every control
    assert specificity_verdict(-0.5, -0.7, -0.3, controls) == "specific"  # below every control
    assert specificity_verdict(0.15, 0.05, 0.25, controls) == "real but not specific"  # a control moved it as far
    assert specificity_verdict(0.2, 0.1, 0.3, controls) == "real but not specific"  # a tie with the range's end
    assert specificity_verdict(0.5, -0.1, 1.1, controls) == "none"  # the CI includes 0, whatever the controls
    assert specificity_verdict(0.0, 0.0, 0.0, controls) == "none"
    assert specificity_verdict(None, None, None, controls) == "undefined"
    assert specificity_verdict(0.5, 0.3, 0.7, [float("nan")]) == "undefined"  # nothing to compare with


def test_dose_response_effects_carry_an_interval_over_prompts(tiny, tmp_path):
    import numpy as np

    from emscope.stats import paired_mean_difference_interval

    lm = tiny("llama")
    d = Direction(vector=torch.randn(lm.width), layer=1, model=lm.spec)
    prompts = ["hello there", "how are you", "what is soup", "tell me more", "why"]
    ids = [lm.tokenizer(p, return_tensors="pt").input_ids for p in prompts]

    def per_prompt(m):  # per prompt: mean projection of the last layer's output onto the direction
        seen = []
        h = m.blocks[-1].register_forward_hook(
            lambda _m, _a, out: seen.append(out[0] if isinstance(out, tuple) else out)
        )
        with torch.no_grad():
            for x in ids:
                m.model(x)
        h.remove()
        return [float((out @ d.unit).mean()) for out in seen]

    res = dose_response(lm, d, [0.0, 8.0], per_prompt, n_controls=2, progress=False)
    assert len(res.baseline_values) == 5 and res.baseline == pytest.approx(np.mean(res.baseline_values))
    assert res.values["target"][1] == pytest.approx(np.mean(res.prompt_values["target"][1]))
    (lo0, hi0), (lo, hi) = res.effect_intervals("target")
    assert lo0 == hi0 == pytest.approx(0.0, abs=1e-6)  # alpha 0: every prompt's effect is 0
    expected = paired_mean_difference_interval(res.baseline_values, res.prompt_values["target"][1])
    assert (lo, hi) == expected and 0 < lo <= res.effects("target")[1] <= hi
    assert res.verdicts == ["none", "specific"]
    res.save(tmp_path / "dr")
    again = DoseResponse.load(tmp_path / "dr")
    assert again.effect_intervals("target") == res.effect_intervals("target") and again.verdicts == res.verdicts
    header, *rows = (tmp_path / "dr" / "dose_response.csv").read_text().splitlines()
    assert header == "alpha,direction,kind,value,effect,effect_ci_low,effect_ci_high,n_prompts"
    assert rows[1].startswith("8.0,target,target,") and rows[1].endswith(",5")
    assert plot_dose_response(res, tmp_path / "dr" / "plot.png").stat().st_size > 1000
    # a scalar measure, or a result saved before intervals existed: no interval, verdict undefined where it matters
    (tmp_path / "dr" / "config.json").write_text(
        (tmp_path / "dr" / "config.json").read_text().replace('"prompt_values"', '"old_prompt_values"')
    )
    assert DoseResponse.load(tmp_path / "dr").effect_intervals("target") == [(None, None)] * 2


def test_paired_mean_difference_interval_by_hand():
    from emscope.stats import paired_mean_difference_interval

    # every prompt moves by exactly 2: every resample's difference is 2
    assert paired_mean_difference_interval([0.0, 1.0, 5.0], [2.0, 3.0, 7.0]) == pytest.approx((2.0, 2.0))
    assert paired_mean_difference_interval([1.0], [2.0]) == (None, None)
    lo, hi = paired_mean_difference_interval([0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, float("nan")], n_boot=3000)
    # no draw of prompt 2 (P = (3/4)^4 = 32%) gives 0; draws of only prompts 2 and 3 (NaN after), with prompt 2
    # at least once (P = (1/2)^4 - (1/4)^4 = 5.9%), give 1: both beyond 2.5%, so the interval is exactly [0, 1]
    assert (lo, hi) == (0.0, 1.0)
