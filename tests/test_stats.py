"""The one AUROC, bootstrap, logistic probe and projection of emscope, against hand and reference computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from emscope.directions.detect import project
from emscope.directions.direction import Direction
from emscope.directions.extract import PROBE_C, extract_direction, logistic_probe
from emscope.directions.separation import separation_metrics
from emscope.errors import DataFormatError, WidthMismatchError
from emscope.evaluation.judges.agreement import auroc as judge_auroc
from emscope.evaluation.judges.probe import fit_probe_weights, probe_scores, select_layer
from emscope.stats import (
    LogisticProbe,
    auroc,
    auroc_batched,
    bootstrap_mean,
    cluster_bootstrap,
    clustered_mean,
    fit_logistic_probe,
    paired_difference,
    percentile_interval,
    resample,
)


def planted(n: int = 120, d: int = 16, shift: float = 2.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two Gaussian classes, apart by `shift` along feature 0 only."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2 * n, d))
    y = np.r_[np.ones(n), np.zeros(n)].astype(int)
    x[:n, 0] += shift
    return x, y


# --- AUROC -------------------------------------------------------------------------------------------------------


def test_auroc_by_hand_with_ties():
    # pairs (pos, neg): 3>2, 3>1, 2=2 (1/2), 2>1, 2=2 (1/2), 2>1 -> 5 of 6
    assert auroc([3.0, 2.0, 2.0], [2.0, 1.0]) == pytest.approx(5 / 6, abs=1e-15)
    assert auroc([1.0, 1.0], [1.0]) == 0.5  # all tied: chance
    assert auroc([0.0], [1.0, 2.0]) == 0.0


def test_auroc_matches_sklearn_and_the_pairwise_count_on_batches():
    rng = np.random.default_rng(0)
    pos, neg = rng.integers(0, 5, (50, 30)).astype(float), rng.integers(0, 4, (50, 25)).astype(float)
    pairwise = (pos[:, :, None] > neg[:, None, :]).mean((1, 2)) + 0.5 * (pos[:, :, None] == neg[:, None, :]).mean(
        (1, 2)
    )
    np.testing.assert_allclose(auroc_batched(pos, neg), pairwise, rtol=0, atol=1e-12)
    y = np.r_[np.ones(30), np.zeros(25)]
    assert auroc(pos[0], neg[0]) == pytest.approx(roc_auc_score(y, np.r_[pos[0], neg[0]]), abs=1e-12)


def test_auroc_degenerate_input_raises_one_policy():
    with pytest.raises(DataFormatError, match="at least one score of each class, got 0 positive"):
        auroc([], [1.0, 2.0])
    with pytest.raises(DataFormatError, match="NaN"):
        auroc([1.0, float("nan")], [0.0])
    # the judge report says "not measurable" (None) rather than raising, for labels of one kind only
    assert judge_auroc([80.0, None, 10.0], [True, True, True]) is None
    assert judge_auroc([80.0, None, 10.0, 20.0], [True, False, False, True]) == 1.0


def test_separation_metrics_numbers_unchanged():
    """AUROC and its bootstrap interval equal the former sklearn + pairwise-count computation on the same draws."""
    rng = np.random.default_rng(4)
    tp, tn = rng.normal(0.7, 1, 40).round(1), rng.normal(0, 1, 35).round(1)  # rounded: ties
    m = separation_metrics(tp[:20], tn[:20], tp[20:], tn[20:], n_boot=300, seed=7)
    ref_rng = np.random.default_rng(7)
    bp = tp[20:][ref_rng.integers(0, 20, (300, 20))]
    bn = tn[20:][ref_rng.integers(0, 15, (300, 15))]
    diff = bp[:, :, None] - bn[:, None, :]
    boot = (diff > 0).mean((1, 2)) + 0.5 * (diff == 0).mean((1, 2))
    assert m["auroc"] == pytest.approx(roc_auc_score(np.r_[np.ones(20), np.zeros(15)], np.r_[tp[20:], tn[20:]]))
    np.testing.assert_allclose(m["auroc_ci"], np.percentile(boot, [2.5, 97.5]), atol=1e-12)


# --- bootstrap ---------------------------------------------------------------------------------------------------


def test_bootstrap_mean_matches_the_reference_and_handles_empty():
    v = np.array([1.0, np.nan, 0.0, 1.0, 1.0, 0.0, 1.0])
    out = bootstrap_mean(v, n_boot=500, seed=3)
    kept = v[~np.isnan(v)]
    means = kept[np.random.default_rng(3).integers(0, len(kept), size=(500, len(kept)))].mean(1)
    assert out["value"] == pytest.approx(4 / 6) and out["n"] == 6
    assert [out["ci_low"], out["ci_high"]] == pytest.approx(np.percentile(means, [2.5, 97.5]).tolist())
    assert bootstrap_mean(np.array([np.nan])) == {"value": None, "ci_low": None, "ci_high": None, "n": 0}
    assert percentile_interval(np.arange(101.0)) == (2.5, 97.5)
    assert percentile_interval(np.arange(101.0), level=0.9) == (5.0, 95.0)
    assert resample(np.arange(4.0), 3, np.random.default_rng(0)).shape == (3, 4)


# --- clustered and paired intervals -----------------------------------------------------------------------------


def _rows(values_by_question, start=0):
    """Judgment-like rows: question q, paraphrase 0, sample i, field "x" = the i-th value of question q."""
    return [
        {"question_id": q, "paraphrase_index": 0, "sample_index": start + i, "x": v}
        for q, vs in values_by_question.items()
        for i, v in enumerate(vs)
    ]


def test_cluster_bootstrap_draws_whole_questions():
    # 3 questions of 4 identical answers, means 0, 1/2, 1: a resample of 3 questions has mean k/6, k = 0..6,
    # and the extremes (all of q0, all of q2) have probability 1/27 each > 2.5%: the interval is exactly [0, 1]
    values = np.array([0.0] * 4 + [0.5] * 4 + [1.0] * 4)
    clusters = ["a"] * 4 + ["b"] * 4 + ["c"] * 4
    boot = cluster_bootstrap(values, clusters, n_boot=4000, seed=1)
    assert set(np.round(boot * 6, 9)) == set(range(7))
    assert abs((np.round(boot * 6) == 0).mean() - 1 / 27) < 0.015  # P(all three draws are q0)
    c = clustered_mean(values, clusters, n_boot=4000, seed=1)
    assert (c["value"], c["ci_low"], c["ci_high"], c["n"], c["n_clusters"]) == (0.5, 0.0, 1.0, 12, 3)
    plain = bootstrap_mean(values, n_boot=4000, seed=1)  # answers as if independent: much narrower
    assert 0.0 < plain["ci_low"] < 0.5 < plain["ci_high"] < 1.0
    # unequal sizes: the pooled mean weighs answers, and each resample is a ratio of sums
    boot = cluster_bootstrap(np.array([1.0, 1.0, 1.0, 0.0]), ["a", "a", "a", "b"], n_boot=200, seed=0)
    assert set(np.round(boot, 9)) <= {0.0, 0.75, 1.0}  # bb, ab/ba (3 of 4), aa
    with pytest.raises(DataFormatError, match="cluster labels"):
        cluster_bootstrap(np.ones(3), ["a"], n_boot=10)
    assert clustered_mean([np.nan], ["a"])["value"] is None


def test_paired_difference_by_hand():
    a = _rows({"q0": [0, 0, 0, 0], "q1": [0, 0, 0, 0], "q2": [0, 0, 0, 0]})
    b = _rows({"q0": [0, 0, 0, 0], "q1": [1, 1, 0, 0], "q2": [1, 1, 1, 1]})
    d = paired_difference(a, b, "x", n_boot=4000, seed=1)
    assert (d.value, d.mean_a, d.mean_b, d.n_pairs, d.n_clusters) == (0.5, 0.0, 0.5, 12, 3)
    assert (d.ci_low, d.ci_high) == (0.0, 1.0) and not d.excludes_zero  # resamples of 3 questions, as above
    per_answer = paired_difference(a, b, "x", cluster="answer", n_boot=4000, seed=1)
    assert per_answer.value == d.value and d.ci_low < per_answer.ci_low < per_answer.ci_high < d.ci_high
    assert per_answer.excludes_zero  # 12 "independent" answers would (wrongly) call it real
    # b minus a: swapping the sides flips the sign and the interval
    flipped = paired_difference(b, a, lambda r: r["x"], n_boot=4000, seed=1)
    assert (flipped.value, flipped.ci_low, flipped.ci_high) == (-0.5, -1.0, 0.0)


def test_paired_difference_drops_unscored_pairs_and_counts_unmatched_rows():
    a = _rows({"q0": [1.0, None, 0.0], "q1": [0.0, 1.0]})
    b = _rows({"q0": [1.0, 1.0, float("nan")], "q1": [1.0, 1.0]}) + _rows({"q1": [0.0]}, start=5)
    d = paired_difference(a, b, "x", n_boot=500)
    # pairs left: q0 s0 (1, 1), q1 s0 (0, 1), q1 s1 (1, 1); q0 s1 and s2 are unscored on one side
    assert (d.n_matched, d.n_pairs, d.n_clusters, d.n_unmatched_a, d.n_unmatched_b) == (5, 3, 2, 0, 1)
    assert d.mean_a == pytest.approx(2 / 3) and d.mean_b == 1.0 and d.value == pytest.approx(1 / 3)
    one = paired_difference(a, b, "x", keys=("question_id", "sample_index"), cluster="question_id")
    assert one.value is not None and one.ci_low is not None
    alone = paired_difference(_rows({"q0": [0, 1]}), _rows({"q0": [1, 1]}), "x")
    assert alone.value == 0.5 and alone.ci_low is None and alone.ci_high is None and not alone.excludes_zero
    assert clustered_mean([1.0, 0.0], ["q", "q"])["ci_low"] is None  # one question: no interval over questions
    nothing = paired_difference(a, b, lambda r: None)
    assert nothing.value is None and nothing.n_pairs == 0 and not nothing.excludes_zero


def test_paired_difference_refuses_rows_it_cannot_pair():
    a = _rows({"q0": [1, 0]})
    with pytest.raises(DataFormatError, match="no answer of a .* matches"):
        paired_difference(a, _rows({"q9": [1, 0]}), "x")
    with pytest.raises(DataFormatError, match="row 0 of b lacks 'paraphrase_index'"):
        paired_difference(a, [{"question_id": "q0", "sample_index": 0, "x": 1}], "x")
    with pytest.raises(DataFormatError, match="two rows for"):
        paired_difference(a, a + a[:1], "x")
    with pytest.raises(DataFormatError, match="needs the field 'domain'"):
        paired_difference(a, a, "x", cluster="domain")


# --- logistic probe ----------------------------------------------------------------------------------------------


def _old_judge_probe(x: np.ndarray, y: np.ndarray, c: float) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The judge probe as it was written before it moved to emscope.stats (reference)."""
    mean, scale = x.mean(0), x.std(0) + 1e-6
    clf = LogisticRegression(C=c, max_iter=2000).fit((x - mean) / scale, y)
    w = {"mean": mean, "scale": scale, "coef": clf.coef_[0], "intercept": clf.intercept_}
    return w, 100.0 / (1.0 + np.exp(-(((x - mean) / scale) @ w["coef"] + w["intercept"][0])))


def test_logistic_probe_separates_planted_data_held_out():
    x, y = planted(n=150, shift=2.5)
    train = np.r_[0:100, 150:250]
    test = np.setdiff1d(np.arange(300), train)
    probe = fit_logistic_probe(x[train], y[train], c=1.0)
    p = probe.probability(x[test])
    assert auroc(p[y[test] == 1], p[y[test] == 0]) > 0.9
    assert int(np.argmax(np.abs(probe.weight))) == 0  # the planted feature
    # `weight` is the decision normal in raw feature space: logit = x @ weight + constant
    offset = probe.logit(x) - x @ probe.weight
    np.testing.assert_allclose(offset, offset[0], atol=1e-9)


def test_judge_probe_matches_its_former_outputs():
    x, y = planted(n=40, d=24, shift=1.0, seed=5)
    old_w, old_scores = _old_judge_probe(x, y, c=0.1)
    w = fit_probe_weights(x, y)
    for key in ("mean", "scale", "coef", "intercept"):
        np.testing.assert_allclose(w[key], old_w[key], rtol=0, atol=1e-12)
    np.testing.assert_allclose(probe_scores(w, x), old_scores, rtol=0, atol=1e-9)
    assert LogisticProbe.from_arrays(w).to_arrays()["intercept"].shape == (1,)


def test_judge_layer_selection_uses_the_shared_auroc():
    x, y = planted(n=30, d=8, shift=3.0, seed=2)
    noise = np.random.default_rng(9).normal(size=x.shape)
    layer, cv = select_layer(np.stack([noise, x], axis=1), y, layers=[3, 7])
    assert layer == 7 and cv[7] > 0.9 and cv[7] > cv[3]


def test_probe_needs_two_classes():
    with pytest.raises(DataFormatError, match="two classes"):
        fit_logistic_probe(np.zeros((4, 2)), np.ones(4), c=1.0)


def test_direction_method_is_the_shared_probe():
    x, y = planted(n=60, d=12, shift=2.0, seed=1)
    pos, neg = torch.from_numpy(x[y == 1]).float(), torch.from_numpy(x[y == 0]).float()
    v = logistic_probe(pos, neg).double()
    labels = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    ref = fit_logistic_probe(torch.cat([pos, neg]).double().numpy(), labels, PROBE_C)
    ref_unit = torch.from_numpy(ref.weight / np.linalg.norm(ref.weight))
    assert torch.allclose(v / v.norm(), ref_unit, atol=1e-6)
    shift = float((pos.double().mean(0) - neg.double().mean(0)) @ ref_unit)
    assert float(v.norm()) == pytest.approx(abs(shift), rel=1e-5)  # scaled to the projected mean shift


def test_direction_probe_does_not_depend_on_feature_units():
    """Rescaling single activation dimensions (outlier dims are ~100x the rest) leaves the probe's ranking unchanged.

    The former direction probe (L2 logistic regression on raw activations) failed this: its penalty weighed
    each dimension by its units, so the direction it found moved with them.
    """
    x, y = planted(n=40, d=30, shift=1.5, seed=3)
    units = np.ones(x.shape[1])
    units[1:4] = 300.0  # three noise dimensions in much larger units
    pos, neg = torch.from_numpy(x[y == 1]), torch.from_numpy(x[y == 0])
    plain = project(torch.cat([pos, neg]), logistic_probe(pos, neg))
    scaled_x = torch.from_numpy(x * units)
    sp, sn = scaled_x[y == 1], scaled_x[y == 0]
    scaled = project(torch.cat([sp, sn]), logistic_probe(sp, sn))
    assert torch.equal(plain.argsort(), scaled.argsort())


def test_extract_direction_logistic_probe_reports_held_out_separation():
    x, y = planted(n=100, d=16, shift=3.0, seed=6)
    d = extract_direction(
        torch.from_numpy(x[y == 1]).float(), torch.from_numpy(x[y == 0]).float(), 3, method="logistic_probe", n_boot=0
    )
    assert d.metrics["auroc"] > 0.95


# --- projection --------------------------------------------------------------------------------------------------


def test_projection_by_hand():
    acts = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, -2.0]])
    assert project(acts, torch.tensor([0.0, 2.0])).tolist() == [4.0, 0.0, -2.0]  # unit [0, 1]: length ignored
    np.testing.assert_allclose(project(acts, torch.tensor([30.0, 40.0])), [5.0, 0.6, -1.6], rtol=1e-6)  # [.6, .8]
    d = Direction(vector=torch.tensor([0.0, 2.0]), layer=0, model="m")
    assert project(acts, -d).tolist() == [-4.0, -0.0, 2.0]  # the sign is the direction's
    assert project(acts.to(torch.bfloat16), d).dtype == torch.float32
    with pytest.raises(WidthMismatchError, match="width 2 but the direction has width 3"):
        project(acts, torch.ones(3))
