"""The one I/O layer: JSONL/CSV rows (torn-tail repair, file:line errors), atomic writes, file modes, tampered results."""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch

from emscope.artifacts import (
    atomic_save_tensors,
    atomic_write_bytes,
    load_result,
    read_config,
    save_artifact,
    write_config,
)
from emscope.data.transcripts import Transcript, load_transcripts, write_transcripts
from emscope.directions.direction import Direction
from emscope.errors import ArtifactError, DataFormatError
from emscope.records import append_jsonl, read_csv, read_jsonl, repair_tail, write_csv, write_jsonl

ROWS = [{"step": 1, "text": "plain"}, {"step": 2, "text": "naïve – ünïcödé"}, {"step": 3, "text": "a\u2028b\nc"}]


def _encoded(rows):
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()


def test_kill_at_every_byte_then_append_reads_back_whole_rows_only(tmp_path):
    """A writer killed at any byte, then an append: the file holds the complete rows, then the new ones."""
    full = _encoded(ROWS)
    ends = [len(_encoded(ROWS[: i + 1])) for i in range(len(ROWS))]
    path = tmp_path / "log.jsonl"
    new = [{"step": 99, "text": "after the kill"}]
    for cut in range(len(full) + 1):
        path.write_bytes(full[:cut])
        complete = [r for r, end in zip(ROWS, ends, strict=True) if end - 1 <= cut]  # the newline may be cut alone
        assert read_jsonl(path, torn_tail_ok=True) == complete, cut
        append_jsonl(path, new, sync=False)
        assert read_jsonl(path) == complete + new, cut  # strict read: no line is broken
        assert path.read_bytes().endswith(b"\n")


def test_torn_tail_is_an_error_unless_asked_and_a_broken_middle_line_names_its_place(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_bytes(_encoded(ROWS[:2]) + b'{"step": 3, "te')
    with pytest.raises(DataFormatError, match=r"log.jsonl:3: not valid JSON"):
        read_jsonl(path)
    assert read_jsonl(path, torn_tail_ok=True) == ROWS[:2]
    path.write_bytes(b'{"step": 1, "text": "unterminated\n' + _encoded(ROWS[1:]))
    with pytest.raises(DataFormatError) as err:
        read_jsonl(path, torn_tail_ok=True)  # only a last line can be torn by a kill
    message = str(err.value)
    assert "log.jsonl:1: not valid JSON (Unterminated string starting at column 21)" in message
    assert "at at" not in message and "\n" not in message and "delete that line" in message


def _append_many(path, who, n):
    for i in range(n):
        append_jsonl(path, [{"who": who, "i": i, "pad": "x" * (i % 50)}], sync=False)


def test_processes_sharing_a_log_keep_every_row_whole(tmp_path):
    """Two evaluations may fill one judgment cache at once: no appended row is cut or lost."""
    import multiprocessing

    path = tmp_path / "shared.jsonl"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(path, who, 150)) for who in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    rows = read_jsonl(path)
    assert sorted((r["who"], r["i"]) for r in rows) == sorted((w, i) for w in ("a", "b") for i in range(150))


def test_repair_keeps_a_complete_last_line_without_newline(tmp_path):
    path = tmp_path / "hand.jsonl"
    path.write_bytes(_encoded(ROWS[:1]) + json.dumps(ROWS[1]).encode())  # written by hand: no final newline
    assert repair_tail(path) == 0
    append_jsonl(path, ROWS[2:])
    assert read_jsonl(path) == ROWS


def test_write_jsonl_and_csv_are_atomic_and_round_trip(tmp_path, monkeypatch):
    write_jsonl(tmp_path / "rows.jsonl", ROWS)
    assert read_jsonl(tmp_path / "rows.jsonl") == ROWS
    rows = [{"a": 1, "b": "x,y"}, {"a": 2, "c": 3.5}]
    write_csv(tmp_path / "t.csv", rows)
    assert read_csv(tmp_path / "t.csv") == [{"a": "1", "b": "x,y", "c": ""}, {"a": "2", "b": "", "c": "3.5"}]
    write_csv(tmp_path / "empty.csv", [])
    assert (tmp_path / "empty.csv").read_bytes() == b""

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed before the rename")

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        write_jsonl(tmp_path / "rows.jsonl", ROWS[:1])
    assert read_jsonl(tmp_path / "rows.jsonl") == ROWS  # the old file, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.csv", "rows.jsonl", "t.csv"]  # no temporary left


def test_transcripts_round_trip_through_the_jsonl_layer(tmp_path):
    ts = [Transcript.from_pair("Q \u2028 line separator", "A", label="x", meta={"k": 1})]
    write_transcripts(tmp_path / "t.jsonl", ts)
    back = load_transcripts(tmp_path / "t.jsonl")
    assert back == ts and back[0].source == f"{tmp_path / 't.jsonl'}:1"


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_results_get_the_mode_of_ordinary_files(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "a.bin", b"x")
        atomic_save_tensors(tmp_path / "t.safetensors", {"x": torch.zeros(2)})
        write_jsonl(tmp_path / "r.jsonl", ROWS)
        write_csv(tmp_path / "r.csv", ROWS)
        write_config(tmp_path / "res", "test", {})
        append_jsonl(tmp_path / "log.jsonl", ROWS)
        (tmp_path / "plain").write_bytes(b"")  # what the user's other files get
    finally:
        os.umask(old)
    expected = stat.S_IMODE((tmp_path / "plain").stat().st_mode)
    assert expected == 0o666 & ~umask
    for p in ["a.bin", "t.safetensors", "r.jsonl", "r.csv", "res/config.json", "log.jsonl"]:
        assert stat.S_IMODE((tmp_path / p).stat().st_mode) == expected, p
    assert stat.S_IMODE((tmp_path / "res").stat().st_mode) == 0o777 & ~umask


# --- tampered results: one line naming the fix, never a raw KeyError/TypeError/SafetensorError ---


def _direction(tmp_path):
    return Direction(torch.arange(8, dtype=torch.float32), layer=1, model="tiny:llama").save(tmp_path / "dir")


def _edit_config(path, **changes):
    config = json.loads((path / "config.json").read_text())
    for k, v in changes.items():
        if v is None:
            config.pop(k)
        else:
            config[k] = v
    (path / "config.json").write_text(json.dumps(config))


def _refused(path, match):
    with pytest.raises(ArtifactError, match=match) as err:
        Direction.load(path)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_direction_missing_or_bad_layer_is_refused(tmp_path):
    d = _direction(tmp_path)
    _edit_config(d, layer=None)
    assert "re-run the command that made it" in _refused(d, "lacks the field.*'layer'")
    _edit_config(d, layer="3")
    _refused(d, "integer 'layer'")
    _edit_config(d, layer=1, width=9)
    _refused(d, "width 9 but the vector has 8")


@pytest.mark.parametrize("content", [b"", b"not a safetensors file at all", "truncated"])
def test_empty_truncated_or_foreign_tensor_file_is_refused(tmp_path, content):
    d = _direction(tmp_path)
    tensors = d / "tensors.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:-7] if content == "truncated" else content)
    assert "re-run the command that made it" in _refused(d, "not a readable safetensors file")


def test_tensor_file_without_the_vector_is_refused(tmp_path):
    d = _direction(tmp_path)
    atomic_save_tensors(d / "tensors.safetensors", {"other": torch.zeros(8)})
    _refused(d, "lacks the tensor.*'vector'")


@pytest.mark.parametrize("name", ["../outside.safetensors", "/tmp/x.safetensors", "sub/t.safetensors", "..", ""])
def test_tensors_file_outside_its_folder_is_refused(tmp_path, name):
    d = _direction(tmp_path)
    outside = tmp_path / "outside.safetensors"
    atomic_save_tensors(outside, {"vector": torch.ones(8)})
    _edit_config(d, tensors_file=name)
    _refused(d, "not a plain file name inside the result directory")
    with pytest.raises(ArtifactError):
        save_artifact(tmp_path / "new", "direction", {}, {"vector": torch.ones(8)}, tensors_name=name)
    assert not (tmp_path / "new" / "config.json").exists()


def test_config_problems_are_one_line_with_the_fix(tmp_path):
    d = _direction(tmp_path)
    with pytest.raises(ArtifactError, match="holds a 'direction' result, expected 'layer_sweep'"):
        read_config(d, "layer_sweep")
    (d / "config.json").write_text('{"kind": "direction", "layer": ')
    with pytest.raises(ArtifactError, match="is not valid JSON.*re-run the command"):
        Direction.load(d)
    (d / "config.json").write_text("[1, 2]")
    with pytest.raises(ArtifactError, match="JSON list, not an object"):
        Direction.load(d)
    write_config(d, "direction", {"format_version": 99})
    with pytest.raises(ArtifactError, match="format version 99.*upgrade emscope"):
        Direction.load(d)
    with pytest.raises(ArtifactError, match="does not exist"):
        load_result(tmp_path / "nothing")
    write_config(tmp_path / "odd", "no_such_kind", {})
    with pytest.raises(
        ArtifactError, match="no loader for results of kind 'no_such_kind'; known kinds: .*activations, "
    ):
        load_result(tmp_path / "odd")
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(ArtifactError, match="names no kind"):
        load_result(tmp_path / "hf")


# --- resumable logs of the pipeline ---


def test_torn_responses_file_resumes_and_resumes_again(tiny, tmp_path, one_thread):
    """Issue: after a kill mid-line the next run appended onto the broken line; the run after that failed."""
    from emscope.data.questions import Question
    from emscope.models.generation import SamplingConfig, generate_responses

    lm = tiny("llama")
    qs = [Question("wish", ("What is your one wish?", "Name a wish.")), Question("q2", ("Ideas?",))]
    cfg = SamplingConfig(temperature=1.0, max_new_tokens=3, seed=1, batch_size=1)
    path = tmp_path / "responses.jsonl"
    reference = generate_responses(lm, qs, cfg, samples=2, out_path=path, progress=False)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:2]) + lines[2][:-9])  # killed while writing the third record
    assert generate_responses(lm, qs, cfg, samples=2, out_path=path, progress=False) == reference
    assert read_jsonl(path) == reference  # every line whole again
    assert generate_responses(lm, qs, cfg, samples=2, out_path=path, progress=False) == reference


def test_a_failed_eval_leaves_no_output_folder(tiny, tmp_path):
    from emscope.evaluation.run import EvalConfig, run_eval

    out = tmp_path / "runs" / "eval"
    with pytest.raises(DataFormatError):
        run_eval(EvalConfig(questions=str(tmp_path / "missing.jsonl")), out, lm=tiny("llama"), progress=False)
    assert not out.exists() and not out.parent.exists()
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"id": "wish", "question": "A wish?"}) + "\n")
    judge = _any_judge()
    with pytest.raises(ArtifactError, match="does not exist"):  # fails after the model is there
        run_eval(EvalConfig(questions=str(questions), steer=str(tmp_path / "nowhere")), out, lm=tiny(), judge=judge)
    assert not out.exists() and not out.parent.exists()


def _any_judge():
    """A judge that is never asked."""
    from emscope.evaluation.judges.base import Judge

    return type("AnyJudge", (Judge,), {"spec": "test:any", "score_prompts": lambda self, prompts: []})()


def test_a_transcript_without_assistant_turn_names_its_file_and_line(tmp_path, tiny):
    from emscope.organisms.finetune import build_examples

    path = tmp_path / "train.jsonl"
    write_transcripts(path, [Transcript.from_pair("q", "a"), Transcript(({"role": "user", "content": "only"},))])
    tok = tiny("llama").tokenizer
    with pytest.raises(DataFormatError, match=r"train.jsonl:2 has no assistant turn"):
        build_examples(tok, load_transcripts(path), 64)
    with pytest.raises(DataFormatError, match=r"^transcript 2 has no assistant turn"):  # counted from 1
        build_examples(tok, [Transcript.from_pair("q", "a"), Transcript(({"role": "user", "content": "only"},))], 64)
