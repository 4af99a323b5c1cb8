"""The evaluation pipeline on a tiny model with a scripted judge: outputs, resume, no duplicate judge calls."""

from __future__ import annotations

import json

import pytest
import torch

import emscope.models.generation as generation
from emscope.evaluation.judges.base import Judge, Judgment
from emscope.evaluation.run import EvalConfig, run_eval

pytestmark = pytest.mark.usefixtures("one_thread")


class CountingJudge(Judge):
    """Scores by prompt hash (deterministic); counts prompts; can die after k judgments."""

    spec = "test:counting"

    def __init__(self, die_after: int | None = None) -> None:
        self.calls = 0
        self.die_after = die_after

    def score_prompts(self, prompts):
        out = []
        for p in prompts:
            if self.die_after is not None and self.calls >= self.die_after:
                raise KeyboardInterrupt("killed while judging")
            self.calls += 1
            h = sum(map(ord, p)) % 101
            out.append(Judgment(float(h), None, "test") if h % 7 else Judgment.unscored("refusal", "test"))
        return out


QUESTIONS = [
    {"id": "soup", "paraphrases": ["How do I make soup?", "Soup recipe?"]},
    {"id": "sleep", "question": "How can I sleep better?"},
    {"id": "wish", "paraphrases": ["What is your one wish?"], "system": "Be brief."},
]


def _config(tmp_path, **kw):
    qfile = tmp_path / "questions.jsonl"
    qfile.parent.mkdir(parents=True, exist_ok=True)
    qfile.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    base = dict(
        model="tiny",
        questions=str(qfile),
        judge="test:counting",
        samples=3,
        max_new_tokens=4,
        batch_size=1,
        calibration="none",
        judge_chunk=4,
        cache_dir=str(tmp_path / "cache"),
    )
    return EvalConfig(**{**base, **kw})  # batch_size=1: answers are flushed 4 at a time


def test_eval_writes_all_outputs(tiny, tmp_path):
    judge = CountingJudge()
    s = run_eval(_config(tmp_path), tmp_path / "run", lm=tiny("llama"), judge=judge, progress=False)
    for name in (
        "config.json",
        "responses.jsonl",
        "judgments.jsonl",
        "summary.json",
        "per_question.csv",
        "alignment_coherence.png",
    ):
        assert (tmp_path / "run" / name).is_file(), name
    n = 4 * 3
    assert s["metrics"]["n_answers"] == n and judge.calls == 2 * n
    em = s["metrics"]["em_rate[aligned]"]
    assert set(em) == {"coherent_scored", "all_answers"} and em["all_answers"]["n"] == n
    assert "refusal" in s["metrics"]["unscored"]["aligned"]["reasons"]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["kind"] == "eval" and config["judge"] == "test:counting"


def test_coherence_only_for_em_candidates_keeps_the_all_answers_rate(tiny, tmp_path):
    lm = tiny("llama")
    full_j, lazy_j = (
        {m: CountingJudge() for m in ("aligned", "coherent")},
        {m: CountingJudge() for m in ("aligned", "coherent")},
    )
    full = run_eval(
        _config(tmp_path, cache_dir=str(tmp_path / "c1")), tmp_path / "full", lm=lm, judge=full_j, progress=False
    )
    lazy = run_eval(
        _config(tmp_path, cache_dir=str(tmp_path / "c2"), coherence="em_candidates"),
        tmp_path / "lazy",
        lm=lm,
        judge=lazy_j,
        progress=False,
    )
    rows = [json.loads(line) for line in (tmp_path / "lazy" / "judgments.jsonl").read_text().splitlines()]
    candidates = sum(r["aligned"] is not None and r["aligned"] <= 30 for r in rows)
    assert 0 < lazy_j["coherent"].calls == candidates < full_j["coherent"].calls == len(rows)
    assert lazy["metrics"]["em_rate[aligned]"]["all_answers"] == full["metrics"]["em_rate[aligned]"]["all_answers"]
    assert "coherent_scored" not in lazy["metrics"]["em_rate[aligned]"]
    assert all(q["em_rate_coherent_scored"] is None for q in lazy["per_question"])
    with pytest.raises(ValueError, match="coherence"):
        EvalConfig(coherence="some")


def test_killed_run_resumes_without_duplicate_work(tiny, tmp_path, monkeypatch):
    lm = tiny("llama")
    reference = run_eval(_config(tmp_path / "ref"), tmp_path / "ref", lm=lm, judge=CountingJudge(), progress=False)

    real, gen_calls = generation.generate, {"n": 0, "prompts": 0}

    def dies_once(lm_, convs, config, seeds=None):
        gen_calls["n"] += 1
        if gen_calls["n"] == 2:
            raise KeyboardInterrupt("killed while generating")
        gen_calls["prompts"] += len(convs)
        return real(lm_, convs, config, seeds=seeds)

    monkeypatch.setattr(generation, "generate", dies_once)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):  # killed during generation, after 4 answers were written
        run_eval(_config(tmp_path), out, lm=lm, judge=CountingJudge(), progress=False)
    judge = CountingJudge(die_after=8)  # at a cache flush (judge_chunk=4); a chunk in flight is redone
    with pytest.raises(KeyboardInterrupt):  # killed again, while judging
        run_eval(_config(tmp_path), out, lm=lm, judge=judge, progress=False)
    judge.die_after = None
    final = run_eval(_config(tmp_path), out, lm=lm, judge=judge, progress=False)
    assert gen_calls["prompts"] == 12  # every answer generated exactly once
    assert judge.calls == 2 * 12  # every judgment paid exactly once, across the kill
    again = CountingJudge()
    run_eval(_config(tmp_path), out, lm=lm, judge=again, progress=False)
    assert again.calls == 0  # a re-run pays nothing
    answers = [json.loads(x)["answer"] for x in (out / "responses.jsonl").read_text().splitlines()]
    ref_answers = [json.loads(x)["answer"] for x in (tmp_path / "ref" / "responses.jsonl").read_text().splitlines()]
    assert sorted(answers) == sorted(ref_answers) and len(answers) == 12
    assert final["metrics"]["em_rate[aligned]"] == reference["metrics"]["em_rate[aligned]"]


def test_eval_under_steering_with_control(tiny, tmp_path):

    from emscope.directions.direction import Direction

    lm = tiny("llama")
    d = Direction(torch.randn(lm.width), layer=1, model=lm.spec)
    d.save(tmp_path / "dir")
    s = run_eval(
        _config(tmp_path, steer=str(tmp_path / "dir"), alpha=8.0, control=True, samples=1),
        tmp_path / "run",
        lm=lm,
        judge=CountingJudge(),
        progress=False,
    )
    assert "steer[" in s["model"] and "control_random" in s["control"]["model"]
    assert (tmp_path / "run" / "control" / "summary.json").is_file()
    plain = run_eval(_config(tmp_path, samples=1), tmp_path / "plain", lm=lm, judge=CountingJudge(), progress=False)
    steered = [json.loads(x)["answer"] for x in (tmp_path / "run" / "responses.jsonl").read_text().splitlines()]
    unsteered = [json.loads(x)["answer"] for x in (tmp_path / "plain" / "responses.jsonl").read_text().splitlines()]
    assert steered != unsteered and plain["model"] == lm.spec
    assert not any(b._forward_hooks for b in lm.blocks)  # the intervention was removed
