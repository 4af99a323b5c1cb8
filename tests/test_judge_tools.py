"""Calibration, agreement, probe training, the cache key and question loading."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from emscope.data.questions import load_questions
from emscope.errors import DataFormatError
from emscope.evaluation.judges.agreement import agreement, auroc, label_scores
from emscope.evaluation.judges.cache import JudgmentCache, cache_key, judge_answers
from emscope.evaluation.judges.calibration import Calibration, fit_calibration
from emscope.evaluation.judges.probe import ProbeJudge, prompt_features, train_probe


def test_calibration_is_monotone_and_spreads_a_compressed_scale(tmp_path):
    raw = [47, 49, 51, 55, 60, 66, 67, 68]
    target = [5, 5, 5, 45, 45, 95, 95, 95]
    cal = fit_calibration(raw, target, judge="local:x", anchor_set="test")
    mapped = [cal(r) for r in range(40, 75)]
    assert all(b >= a for a, b in zip(mapped, mapped[1:], strict=False))
    assert cal(48) < 30 and cal(67) > 70 and cal(None) is None
    assert cal.fit["mae_calibrated"] < cal.fit["mae_raw"] and cal.n_anchors == 8
    cal.save(tmp_path / "c.json")
    assert Calibration.load(tmp_path / "c.json") == cal


def test_agreement_and_auroc():
    a = [10, 20, 80, 90, None]
    b = [5, 50, 70, 95, 10]
    r = agreement(a, b)
    assert r["n_both_scored"] == 4 and r["spearman"] == pytest.approx(1.0)
    assert r["em_label_agreement"] == 0.75 and r["confusion"]["a_em_b_ok"] == 1
    assert auroc([10, 20, 80, None], [False, False, True, True]) == 1.0
    assert label_scores([{"label": "aligned"}, {"label": "misaligned"}, {"alignment": 40}]) == [100.0, 0.0, 40.0]


def test_probe_learns_a_separable_signal(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    y = np.array([0, 1] * 12)
    feats = rng.normal(size=(24, 2, 16))
    feats[:, 1, 0] += 4 * y  # layer index 1 carries the label
    probe = train_probe("tiny", feats, ["aligned" if v else "misaligned" for v in y], layers=[3, 5])
    assert probe.layer == 5 and probe.meta["cv_auroc_by_layer"]["5"] > 0.9
    probe.save(tmp_path / "probe")
    again = ProbeJudge.load(tmp_path / "probe")
    assert again.layer == 5 and np.allclose(again.weights["coef"], probe.weights["coef"], atol=1e-5)


def test_coherence_probe_trains_on_coherent_labels_only():
    rng = np.random.default_rng(1)
    labels = ["coherent", "incoherent", "aligned"] * 8  # "aligned" rows are not coherence labels
    feats = rng.normal(size=(24, 1, 8))
    feats[:, 0, 0] += 4 * np.array([lab == "coherent" for lab in labels])
    probe = train_probe("tiny", feats, labels, layers=[2], metric="coherent")
    assert probe.meta["metric"] == "coherent" and probe.meta["n_train"] == 16
    with pytest.raises(DataFormatError, match="coherent/incoherent"):
        train_probe("tiny", feats[:6], labels[:6], layers=[2], metric="coherent")


def test_training_features_match_the_judging_features(tiny):
    lm = tiny("llama", n_layers=4)  # HF's last hidden_states entry is after the final norm: compare earlier blocks
    judge = ProbeJudge("tiny", 1, {}, lm=lm)
    prompts = ["Grade this reply, please, with care: fine.", "Grade this reply, please, with care: no."]
    reader = judge._local()
    many = prompt_features(reader, prompts, layers=[0, 1, 2])
    assert many.shape == (2, 3, lm.width)
    assert np.allclose(many[:, 1], judge.features(prompts), atol=1e-5)
    for p, row in zip(prompts, many, strict=True):  # every layer equals a full forward pass without the prefix
        with torch.no_grad():
            full = lm.model(input_ids=reader.prompt_ids(p), output_hidden_states=True).hidden_states
        assert np.allclose(row, torch.stack([full[i + 1][0, -1] for i in range(3)]).float().numpy(), atol=1e-5)


def test_probe_judge_runs_on_a_model(tiny):
    lm = tiny("llama")
    rng = np.random.default_rng(0)
    w = {
        "mean": np.zeros(lm.width),
        "scale": np.ones(lm.width),
        "coef": rng.normal(size=lm.width),
        "intercept": np.zeros(1),
    }
    judge = ProbeJudge("tiny", 1, w, lm=lm)
    js = judge.score_prompts(["Rate: the answer is kind. " * 3, "Rate: the answer is cruel. " * 3])
    assert all(j.method == "probe" and 0 <= j.score <= 100 for j in js)


def test_probe_features_equal_a_full_forward_without_the_shared_prefix(tiny):
    lm = tiny("llama")
    judge = ProbeJudge("tiny", 1, {}, lm=lm)
    prompts = ["Judge this answer with care please: the answer is kind.", "Judge this answer with care please: no."]
    fast = judge.features(prompts)
    reader = judge._local()
    with reader.prefix_shared(prompts) as shared:
        assert shared > 0  # the fast path did reuse a prefix
    for p, row in zip(prompts, fast, strict=True):
        with torch.no_grad():
            full = lm.model(input_ids=reader.prompt_ids(p), output_hidden_states=True).hidden_states[2][0, -1]
        assert np.allclose(row, full.float().numpy(), atol=1e-5)


def test_cache_key_separates_judge_prompt_question_and_answer(tmp_path):
    k = cache_key("j", "T {question} {answer}", "q", "a")
    assert (
        len(
            {
                k,
                cache_key("j2", "T {question} {answer}", "q", "a"),
                cache_key("j", "U", "q", "a"),
                cache_key("j", "T {question} {answer}", "q2", "a"),
                cache_key("j", "T {question} {answer}", "q", "b"),
            }
        )
        == 5
    )
    cache = JudgmentCache(tmp_path)
    (tmp_path / "judgments.cache.jsonl").write_text('{"key": "trunc')  # a line cut by a kill
    assert len(JudgmentCache(tmp_path)) == 0 and len(cache) == 0


def test_failed_requests_are_not_cached(tmp_path):
    from emscope.evaluation.judges.base import Judge, Judgment

    class Flaky(Judge):
        spec = "flaky"
        calls = 0

        def score_prompts(self, prompts):
            Flaky.calls += len(prompts)
            return [Judgment.unscored("request failed after 5 attempts: 500", "logprobs") for _ in prompts]

    cache = JudgmentCache(tmp_path)
    judge_answers(Flaky(), "{question}{answer}", [("q", "a")], cache)
    judge_answers(Flaky(), "{question}{answer}", [("q", "a")], cache)
    assert Flaky.calls == 2


def test_builtin_question_sets():
    em = load_questions("builtin")
    assert len(em) >= 24 and len({q.meta["category"] for q in em}) >= 8
    assert len(load_questions("builtin:spillover")) >= 10


def test_question_formats(tmp_path, shared_data=None):
    y = tmp_path / "q.yaml"
    y.write_text(
        "- id: a\n  paraphrases: &p\n    - hi there\n  samples_per_paraphrase: 3\n  system: be nice\n"
        "  judge_prompts: {aligned: 'A {question} {answer}'}\n- id: b\n  paraphrases: *p\n  type: x\n"
    )
    qs = load_questions(y)
    assert qs[0].samples_per_paraphrase == 3 and qs[0].system == "be nice" and "aligned" in qs[0].judge_prompts
    assert qs[1].paraphrases == ("hi there",) and qs[1].meta == {"type": "x"}
    j = tmp_path / "q.jsonl"
    j.write_text(json.dumps({"id": "x", "question": "why?"}) + "\n")
    assert load_questions(j)[0].paraphrases == ("why?",)
    bad = tmp_path / "bad.yaml"
    bad.write_text("- id: a\n  paraphrases: []\n")
    with pytest.raises(ValueError, match="paraphrases"):
        load_questions(bad)


def test_public_em_yaml_loads(shared_data):
    qs = load_questions(shared_data / "evaluation" / "first_plot_questions.yaml")
    assert len(qs) == 24 and all({"aligned", "coherent"} <= set(q.judge_prompts) for q in qs)
    assert any(q.system for q in qs)
