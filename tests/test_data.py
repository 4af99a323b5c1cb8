import json

import pytest

from emscope.data.chat import render_prompt, tokenize_chat
from emscope.data.transcripts import Transcript, as_transcripts, fingerprint, load_transcripts, write_transcripts
from emscope.errors import ChatTemplateError, DataFormatError
from emscope.testing import tiny_model, tiny_tokenizer


def _answer_tokens(tok, chat):
    return tok.decode([i for i, m in zip(chat.input_ids, chat.response_mask, strict=True) if m])


def test_jsonl_round_trip_keeps_labels_and_metadata(tmp_path):
    ts = [
        Transcript.from_pair("Q1", "A1", label="aligned", meta={"qid": "q1"}),
        Transcript.from_pair("Q2", "A2", system="S"),
    ]
    write_transcripts(tmp_path / "t.jsonl", ts)
    back = load_transcripts(tmp_path / "t.jsonl")
    assert back == ts and back[0].meta == {"qid": "q1"}
    assert fingerprint(back) == fingerprint(ts) != fingerprint(ts[:1])


def test_malformed_jsonl_names_the_line(tmp_path):
    good = json.dumps({"messages": [{"role": "user", "content": "hi"}]})
    (tmp_path / "bad.jsonl").write_text(f"{good}\n\n{good}\n{{not json\n")
    with pytest.raises(DataFormatError, match=r"bad.jsonl:4: not valid JSON"):
        load_transcripts(tmp_path / "bad.jsonl")
    (tmp_path / "bad2.jsonl").write_text(json.dumps({"messages": [{"role": "robot", "content": "x"}]}) + "\n")
    with pytest.raises(DataFormatError, match=r"bad2.jsonl:1: message 0"):
        load_transcripts(tmp_path / "bad2.jsonl")
    with pytest.raises(DataFormatError, match="no such transcript file"):
        load_transcripts(tmp_path / "missing.jsonl")
    with pytest.raises(DataFormatError, match="'messages'"):
        as_transcripts([{"text": "no messages"}])


@pytest.mark.parametrize("template", ["chatml", "llama3"])
def test_response_mask_covers_exactly_the_answers(template):
    tok = tiny_tokenizer(template)
    t = Transcript(
        (
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "How are you?"},
            {"role": "assistant", "content": "Sure! Here is a helpful answer."},
            {"role": "user", "content": "And money?"},
            {"role": "assistant", "content": "I would like to learn about money."},
        )
    )
    chat = tokenize_chat(tok, t)
    assert _answer_tokens(tok, chat) == "Sure! Here is a helpful answer.I would like to learn about money."
    # nothing of the prompt or the template is in the mask
    masked = {i for i, m in zip(chat.input_ids, chat.response_mask, strict=True) if m}
    assert not masked & set(tok.all_special_ids)


def test_missing_assistant_turn_and_missing_template():
    tok = tiny_tokenizer("chatml")
    with pytest.raises(ChatTemplateError, match="no assistant turn"):
        tokenize_chat(tok, Transcript(({"role": "user", "content": "hi"},)))
    lm = tiny_model("llama")
    plain = lm.tokenizer.__class__(tokenizer_object=lm.tokenizer.backend_tokenizer)  # same vocabulary, no template
    with pytest.raises(ChatTemplateError, match="no chat template"):
        tokenize_chat(plain, Transcript.from_pair("q", "a"))
    with pytest.raises(ChatTemplateError, match="no chat template"):
        render_prompt(plain, [{"role": "user", "content": "q"}])


def test_render_prompt_ends_with_generation_header():
    assert render_prompt(tiny_tokenizer("chatml"), [{"role": "user", "content": "q"}]).endswith(
        "<|im_start|>assistant\n"
    )
