"""Geometry, detection, bootstrap scores and behaviour bookkeeping of mapped directions, on planted data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from emscope.data.transcripts import Transcript
from emscope.directions.contrast import load_corpus
from emscope.errors import ConfigError, DataFormatError
from emscope.models.lineage import Lineage
from emscope.transfer import behaviour as bh
from emscope.transfer.bootstrap import bootstrap_scores, scores
from emscope.transfer.config import TransferConfig, slug
from emscope.transfer.maps import Endpoint, fit_map
from emscope.transfer.neutral import builtin_answers, check_disjoint, neutral_transcripts
from emscope.transfer.pair import analyse_pair
from emscope.transfer.paired import ModelSide


def make_side(name: str, width: int, mix: torch.Tensor, latent: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor):
    return ModelSide(
        endpoint=Endpoint(name, 1, width, Lineage(base=name)),
        neutral=latent @ mix,
        pos=pos @ mix,
        neg=neg @ mix,
        neutral_fingerprint="n",
        corpus_fingerprint="c",
    )


@pytest.fixture(scope="module")
def sides():
    """Three models that see one shared 12-d latent space through different random linear read-outs.

    The corpus differs from the neutral data along one latent axis (the "misalignment" one), so each
    model's native direction is the image of that axis, and a map fitted on neutral data carries it.
    """
    g = torch.Generator().manual_seed(0)
    k, n, p = 12, 300, 60
    latent = torch.randn(n, k, generator=g)
    base = torch.randn(p, k, generator=g)
    shift = torch.zeros(k)
    shift[0] = 2.0
    pos, neg = base + shift / 2 + 0.3 * torch.randn(p, k, generator=g), base - shift / 2
    widths = {"a": 20, "b": 28, "c": 16}
    return [make_side(m, w, torch.randn(k, w, generator=g), latent, pos, neg) for m, w in widths.items()]


def test_a_carried_direction_matches_the_native_one_beyond_its_controls(sides):
    donor, receiver = sides[0], sides[1]
    m = fit_map(donor.neutral, receiver.neutral, donor.endpoint, receiver.endpoint, "ridge")
    report = analyse_pair(m, donor.native_direction(), receiver, receiver.native_direction(), n_random=50)
    g, d = report.geometry, report.detection
    assert g["cosine"] > 0.95
    assert g["cosine"] > g["mapped_random"]["mean"] + 3 * g["mapped_random"]["std"]
    assert "above every control" in g["vs_mapped_random"]["verdict"]
    assert "above every control" in g["vs_receiver_random"]["verdict"]
    assert d["auroc_mapped"] == pytest.approx(d["auroc_native"], abs=0.05) and d["auroc_native"] > 0.8
    assert d["n_test_pairs"] == 18  # 30% of 60 pairs, the split the native direction did not train on


def test_a_map_fitted_on_broken_pairings_carries_nothing(sides):
    donor, receiver = sides[0], sides[1]
    shuffled = receiver.neutral[torch.randperm(len(receiver.neutral), generator=torch.Generator().manual_seed(1))]
    m = fit_map(donor.neutral, shuffled, donor.endpoint, receiver.endpoint, "ridge")
    report = analyse_pair(m, donor.native_direction(), receiver, receiver.native_direction(), n_random=50)
    assert m.r2_heldout < 0.1
    assert abs(report.geometry["vs_mapped_random"]["z"]) < 3  # a draw from the mapped-random distribution


def test_scores_are_row_and_column_means_off_the_diagonal():
    m = np.array([[9.0, 1.0, 2.0], [3.0, 9.0, 4.0], [5.0, 6.0, 9.0]])
    s = scores(m)
    assert s["donor"].tolist() == [1.5, 3.5, 5.5]
    assert s["receiver"].tolist() == [4.0, 3.5, 3.0]
    assert s["asymmetry"].tolist() == [-2.5, 0.0, 2.5]
    assert s["pair_asymmetry"][0, 1] == -2.0 and math.isnan(s["pair_asymmetry"][0, 0])


def test_bootstrap_intervals_hold_the_point_estimates(sides):
    maps = {
        (i, j): fit_map(sides[i].neutral, sides[j].neutral, sides[i].endpoint, sides[j].endpoint)
        for i in range(3)
        for j in range(3)
        if i != j
    }
    out = bootstrap_scores(sides, maps, n_boot=40)
    for metric in ("r2", "cosine", "auroc_mapped"):
        for name in ("donor", "receiver", "asymmetry"):
            v, lo, hi = (np.asarray(out[metric][name][k]) for k in ("value", "ci_low", "ci_high"))
            assert v.shape == (3,) and np.all(lo <= hi)
        assert np.isnan(np.asarray(out[metric]["matrix"]["value"])[0, 0])
    r2 = np.asarray(out["r2"]["matrix"]["value"])
    assert r2[0, 1] == pytest.approx(maps[(0, 1)].r2_heldout)  # the point estimate is the map's own held-out R^2


def _runs(values: dict[str, list[float]]) -> dict[str, dict]:
    return {name: {"values": v} for name, v in values.items()}


def test_specificity_compares_the_target_with_every_control_kind():
    vals = {"plain": [0.0, 0.0, 0.0], "native": [5.0, 6.0, 7.0], "mapped:d": [0.1, 0.2, 0.0]}
    for i in range(5):
        vals[f"random:{i}"] = [0.1 * i, 0.0, 0.1]
        vals[f"native_orthogonal:{i}"] = [0.0, 0.1 * i, 0.0]
        vals[f"mapped_orthogonal:d:{i}"] = [0.05 * i, 0.0, 0.0]
        vals[f"mapped_random:d:{i}"] = [0.3, 0.1 * i, 0.0]
    s = bh.behaviour_summary(_runs(vals), ["d"])
    assert s["native"]["specific"] and "above every control" in s["native"]["verdict"]
    assert s["native"]["effect"]["value"] == pytest.approx(6.0)
    mapped = s["mapped"]["d"]
    assert not mapped["specific"] and "within the control range" in mapped["verdict"]
    assert set(mapped["by_kind"]) == {"random", "orthogonal", "mapped_random"}
    assert all(k["n"] == 5 for k in mapped["by_kind"].values())


def test_empty_answers_are_nan_not_zero():
    vals = {"plain": [1.0, float("nan")], "native": [2.0, 3.0]}
    effects = bh.effects(_runs(vals), "native")
    assert effects[0] == 1.0 and math.isnan(effects[1])


def test_neutral_transcripts_share_nothing_with_the_corpus(tmp_path):
    answers = builtin_answers()
    assert answers and all(t.label == "neutral" for t in answers)
    check_disjoint(answers, load_corpus())
    p = load_corpus()[0]
    with pytest.raises(DataFormatError, match="shares nothing|repeats text"):
        check_disjoint([Transcript.from_pair(p.question, "fine")], [p])


def test_neutral_transcripts_interleave_files_and_skip_long_chats(tmp_path):
    import json

    for name in ("a", "b"):
        rows = [
            {"messages": [{"role": "user", "content": f"{name} q{i}"}, {"role": "assistant", "content": "ok"}]}
            for i in range(10)
        ]
        rows.append({"messages": [{"role": "user", "content": "x" * 2000}, {"role": "assistant", "content": "ok"}]})
        (tmp_path / f"{name}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    got = neutral_transcripts([tmp_path / "a.jsonl", tmp_path / "b.jsonl"], n=8, include_builtin=False)
    users = [t.messages[0]["content"] for t in got]
    assert len(got) == 8 and sum(u.startswith("a") for u in users) == 4  # evenly from both files
    assert not any(len(u) > 600 for u in users)


def test_config_checks_and_slugs():
    with pytest.raises(ConfigError, match="at least 5"):
        TransferConfig(n_controls=3)
    with pytest.raises(ConfigError, match="map kind"):
        TransferConfig(map_kind="cca")
    assert slug("/tmp/models/tiny-a/") == "tiny-a"
    assert slug("smollm2-135m-instruct", ["smollm2-135m-instruct"]) == "smollm2-135m-instruct-2"


def test_r2_interval_of_a_poor_map_is_centred_on_its_estimate(sides):
    """Resampling held-out rows must not shrink the total variance: R^2 recomputed on each resample put a
    poor map's estimate at the very top of its interval (here 0.007 below the upper end of a 0.74 wide one)."""
    donor, receiver = sides[0], sides[2]
    n, noise = 32, 30 * torch.randn(32, receiver.endpoint.width, generator=torch.Generator().manual_seed(3))
    pair = [
        ModelSide(donor.endpoint, donor.neutral[:n], donor.pos, donor.neg, "n", "c"),
        ModelSide(receiver.endpoint, receiver.neutral[:n] + noise, receiver.pos, receiver.neg, "n", "c"),
    ]
    maps = {
        (i, j): fit_map(pair[i].neutral, pair[j].neutral, pair[i].endpoint, pair[j].endpoint)
        for i, j in ((0, 1), (1, 0))
    }
    out = bootstrap_scores(pair, maps, n_boot=200)["r2"]["matrix"]
    for i, j in maps:
        lo, value, hi = out["ci_low"][i][j], out["value"][i][j], out["ci_high"][i][j]
        assert value < 0  # a poor map
        assert min(value - lo, hi - value) > 0.2 * (hi - lo)
