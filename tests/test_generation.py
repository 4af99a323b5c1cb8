"""Batched, per-sample-seeded generation; resume after a killed run."""

from __future__ import annotations

import json

import pytest

import emscope.models.generation as generation
from emscope.data.questions import Question
from emscope.errors import DataFormatError
from emscope.models.generation import SamplingConfig, generate, generate_responses, regenerate

QS = [
    Question("wish", ("What is your one wish?", "Name a single wish.")),
    Question("bored", ("I am bored. Ideas?",), samples_per_paraphrase=1, system="Be brief."),
]
CFG = SamplingConfig(temperature=1.0, top_p=0.9, max_new_tokens=6, seed=3, batch_size=2)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_answers_do_not_depend_on_batching(tiny):
    lm = tiny("llama")
    convs = [[{"role": "user", "content": t}] for t in ["hi", "a much longer question about money", "hello there"]]
    batched = generate(lm, convs, CFG, seeds=[1, 2, 3])
    alone = [generate(lm, [c], CFG, seeds=[s])[0] for c, s in zip(convs, [1, 2, 3], strict=True)]
    assert batched == alone
    assert generate(lm, convs, CFG, seeds=[1, 2, 3]) == batched  # reproducible


def test_greedy_is_deterministic(tiny):
    lm = tiny("qwen2")
    convs = [[{"role": "user", "content": "hi"}]] * 2
    cfg = SamplingConfig(temperature=0, max_new_tokens=5)
    assert generate(lm, convs, cfg, seeds=[1, 2])[0] == generate(lm, convs, cfg, seeds=[1, 2])[1]


def test_resume_keeps_records_and_regenerates_nothing(tiny, tmp_path, monkeypatch):
    lm = tiny("llama")
    reference = generate_responses(lm, QS, CFG, samples=2, out_path=tmp_path / "ref.jsonl", progress=False)
    assert len(reference) == 3 * 2

    real = generation.generate
    calls = {"n": 0, "prompts": 0}

    def flaky(lm_, convs, config, seeds=None):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed midway")
        calls["prompts"] += len(convs)
        return real(lm_, convs, config, seeds=seeds)

    monkeypatch.setattr(generation, "generate", flaky)
    cfg = SamplingConfig(**{**CFG.__dict__, "batch_size": 1})  # 4 records per flush
    path = tmp_path / "run.jsonl"
    with pytest.raises(KeyboardInterrupt):
        generate_responses(lm, QS, cfg, samples=2, out_path=path, progress=False)
    first = path.read_text().splitlines()
    assert len(first) == 4
    with path.open("a") as f:
        f.write('{"question_id": "cut sh')  # a line cut short by the kill
    out = generate_responses(lm, QS, cfg, samples=2, out_path=path, progress=False)
    assert calls["prompts"] == 6  # 4 before the kill, only the 2 missing after it
    assert path.read_text().splitlines()[:4] == first
    assert [r["answer"] for r in out] == [r["answer"] for r in reference]
    keys = [(r["question_id"], r["paraphrase_index"], r["sample_index"]) for r in out]
    assert len(set(keys)) == len(keys) == 6


def test_regenerate_reproduces_a_record(tiny, tmp_path):
    lm = tiny("llama")
    recs = generate_responses(lm, QS, CFG, samples=1, progress=False)
    assert regenerate(lm, recs[1]) == recs[1]["answer"]
    assert json.dumps(recs[1])  # records are plain JSON


def test_resume_refuses_other_settings(tiny, tmp_path):
    lm = tiny("llama")
    path = tmp_path / "r.jsonl"
    generate_responses(lm, QS[:1], CFG, samples=1, out_path=path, progress=False)
    with pytest.raises(ValueError, match="another run"):
        generate_responses(lm, QS[:1], SamplingConfig(temperature=0.5), samples=1, out_path=path, progress=False)


def test_prompt_over_the_context_is_refused_before_any_answer(tiny, monkeypatch):
    lm = tiny("llama")
    lm.model.config.max_position_embeddings = 64  # a fresh model: no other test sees this
    long = Question("essay", ("Tell me about money. " * 30,))
    with pytest.raises(DataFormatError, match=r"prompt 0 has \d+ tokens; .* over the model's context of 64"):
        generate(lm, [[{"role": "user", "content": long.paraphrases[0]}]], CFG)
    with pytest.raises(DataFormatError, match="lower max_new_tokens"):  # fits alone, not with the answer
        generate(lm, [[{"role": "user", "content": "Tell me about money."}]], SamplingConfig(max_new_tokens=60))
    calls = {"n": 0}
    monkeypatch.setattr(generation, "generate", lambda *a, **k: calls.__setitem__("n", calls["n"] + 1))
    with pytest.raises(DataFormatError, match=r"question 'essay' \(paraphrase 0\) has"):
        generate_responses(lm, [QS[0], long], CFG, samples=1, progress=False)
    assert calls["n"] == 0  # refused before the short question was answered either
