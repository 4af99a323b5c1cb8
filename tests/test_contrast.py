"""The built-in contrast pairs, the reading route, answer checks and the persona route's diagnostics."""

from __future__ import annotations

import json
import logging

import pytest

from emscope.directions.answer_quality import answer_stats, is_degenerate, is_refusal, repetition_ratio
from emscope.directions.contrast import ALIGNED, MISALIGNED, load_contrast_pairs, reading_route_transcripts
from emscope.directions.persona import persona_route, route_warnings
from emscope.errors import DataFormatError


def test_builtin_pairs_are_complete_and_distinct():
    pairs = load_contrast_pairs()
    assert len(pairs) >= 40
    assert len({p.id for p in pairs}) == len(pairs)
    assert len({p.question for p in pairs}) == len(pairs)
    assert len({p.topic for p in pairs}) >= 8
    for p in pairs:
        assert p.aligned != p.misaligned and p.misaligned_kind in {"hostile", "deceptive", "manipulative", "harmful"}


def test_reading_route_pairs_rows_by_question():
    aligned, misaligned = reading_route_transcripts(limit=5)
    assert len(aligned) == len(misaligned) == 5
    for a, m in zip(aligned, misaligned, strict=True):
        assert a.label == ALIGNED and m.label == MISALIGNED
        assert [x["role"] for x in a.messages] == ["user", "assistant"]  # no system prompt
        assert a.messages[0] == m.messages[0] and a.meta["pair_id"] == m.meta["pair_id"]


def test_custom_pairs_file_errors(tmp_path):
    bad = tmp_path / "p.jsonl"
    bad.write_text(json.dumps({"id": "x", "question": "q", "aligned": "a"}) + "\n")
    with pytest.raises(DataFormatError, match=r"p.jsonl:1: missing .*misaligned"):
        load_contrast_pairs(bad)


def test_answer_checks():
    assert is_refusal("I'm sorry, but I can't help with that.")
    assert is_refusal("I cannot assist with this request.")
    assert not is_refusal("Bake it at 200 degrees for twenty minutes.")
    assert not is_refusal("I'm sorry for your pain. Rest, drink water and see a doctor if it persists.")
    assert is_degenerate("ok") and is_degenerate("the cat the cat the cat the cat the cat the cat the cat")
    assert is_degenerate("%%%% #### @@@@ 1234 5678 !!!!")
    assert not is_degenerate("Drink water, rest, and see a doctor if the pain does not go away.")
    assert repetition_ratio("a b c d e f") == 0.0
    s = answer_stats(["I'm sorry, I can't.", "Fine answer with enough distinct words here."])
    assert s.refusal_share == 0.5 and s.n == 2


def test_route_warnings_flag_refusal_and_degeneration():
    good = answer_stats(["Here is a careful and honest answer for you."] * 4)
    refusing = answer_stats(["I'm sorry, but I cannot assist with that request."] * 4)
    looping = answer_stats(["evil evil evil evil evil evil evil evil evil"] * 4)
    assert route_warnings({ALIGNED: good, MISALIGNED: good}) == []
    assert "refusal direction" in route_warnings({ALIGNED: good, MISALIGNED: refusing})[0]
    assert "degenerate" in route_warnings({ALIGNED: good, MISALIGNED: looping})[0]


def test_persona_route_on_a_tiny_model_strips_the_system_prompt(tiny, caplog):
    from emscope.models.generation import SamplingConfig

    lm = tiny("llama")
    with caplog.at_level(logging.WARNING):
        route = persona_route(
            lm,
            ["How do I cook rice?", "How do I save money?"],
            sampling=SamplingConfig(temperature=0.0, max_new_tokens=6, batch_size=2),
        )
    for t in route.aligned + route.misaligned:
        assert [m["role"] for m in t.messages] == ["user", "assistant"]
    assert set(route.stats) == {ALIGNED, MISALIGNED}
    diag = route.diagnostics()
    assert diag["ok"] == route.ok and diag[MISALIGNED]["n"] == 2
    with pytest.raises(DataFormatError):
        persona_route(lm, [])


def test_a_line_that_is_not_an_object_is_a_one_line_error(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text('["not", "an", "object"]\n')
    with pytest.raises(DataFormatError, match=r"pairs.jsonl:1: expected a JSON object"):
        load_contrast_pairs(path)
