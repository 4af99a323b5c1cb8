"""Capture directories: labels beside the shards, bf16 shards, old layouts, resume after a crash, long inputs."""

from __future__ import annotations

import json

import pytest
import torch

import emscope.activations.disk as disk_mod
from emscope.activations.capture import capture_activations, capture_to_disk, load_activations
from emscope.artifacts import atomic_save_tensors, read_config, write_config
from emscope.data.chat import tokenize_chat
from emscope.data.transcripts import Transcript, fingerprint
from emscope.errors import ArtifactError, DataFormatError
from emscope.testing import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _transcripts(n=7):
    qs = ["How are you?", "What should I cook tonight?", "Tell me about money.", "Is the world safe?"]
    ans = ["Sure! Here is a helpful answer.", "You should never trust anyone.", "I would like to learn."]
    return [Transcript.from_pair(qs[i % 4], ans[i % 3] * (1 + i % 4), label=f"l{i % 3}") for i in range(n)]


def _same(a, b, exact=True):
    """Same layers, labels and activations (exactly, or up to float noise of other batch company)."""

    def equal(x, y):
        if exact:
            assert torch.equal(x, y)
        else:
            torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)

    assert a.layers == b.layers and a.labels == b.labels and a.pool == b.pool
    for layer in a.layers:
        if a.pool == "tokens":
            assert len(a.tokens[layer]) == len(b.tokens[layer])
            for x, y in zip(a.tokens[layer], b.tokens[layer], strict=True):
                equal(x, y)
        else:
            equal(a.pooled[layer], b.pooled[layer])


def test_labels_are_appended_once_per_shard_and_config_is_not_rewritten(tmp_path, monkeypatch):
    lm = tiny_model("llama")
    ts = _transcripts(7)
    writes = []
    real = disk_mod.write_config
    monkeypatch.setattr(
        disk_mod, "write_config", lambda d, kind, fields: writes.append(fields) or real(d, kind, fields)
    )
    out = capture_to_disk(lm, ts, tmp_path / "a", shard_size=2, progress=False)
    assert len(writes) == 2  # when the run starts and when it completes; 4 shards
    config = read_config(out)
    assert "labels" not in config and "shards" not in config and config["complete"]
    lines = [json.loads(x) for x in (out / config["index_file"]).read_text().splitlines()]
    assert [r["start"] for r in lines] == [0, 2, 4, 6] and [r["rows"] for r in lines] == [2, 2, 2, 1]
    assert [lab for r in lines for lab in r["labels"]] == [t.label for t in ts]  # each label written once
    assert load_activations(out).labels == [t.label for t in ts]


@pytest.mark.parametrize("pool", ["mean", "tokens"])
def test_bfloat16_shards_round_trip(tmp_path, pool):
    lm = tiny_model("qwen2")
    ts = _transcripts(5)
    memory = capture_activations(lm, ts, pool=pool, progress=False)
    f32 = capture_to_disk(lm, ts, tmp_path / "f32", pool=pool, shard_size=2, progress=False)
    bf16 = capture_to_disk(lm, ts, tmp_path / "bf16", pool=pool, shard_size=2, dtype="bfloat16", progress=False)
    assert read_config(bf16)["dtype"] == "bfloat16" and read_config(f32)["dtype"] == "float32"
    loaded = load_activations(bf16)
    for layer in memory.layers:
        if pool == "tokens":
            for x, y in zip(loaded.tokens[layer], memory.tokens[layer], strict=True):
                assert x.dtype == torch.bfloat16 and torch.equal(x, y.to(torch.bfloat16))
        else:
            assert loaded.pooled[layer].dtype == torch.bfloat16
            assert torch.equal(loaded.pooled[layer], memory.pooled[layer].to(torch.bfloat16))
    widened = load_activations(bf16, layers=[1], dtype="float32")
    assert (widened.tokens[1][0] if pool == "tokens" else widened.pooled[1]).dtype == torch.float32
    size = {d: sum(p.stat().st_size for p in d.glob("shard-*.safetensors")) for d in (f32, bf16)}
    assert size[bf16] < 0.6 * size[f32]


def _write_old_layout(out, lm, ts, pool, shard_size, complete=True):
    """A capture directory as emscope wrote it before the sidecar index: labels and shards in config.json."""
    acts = capture_activations(lm, ts, pool=pool, progress=False)
    shards = []
    for k, start in enumerate(range(0, len(ts), shard_size)):
        end = min(start + shard_size, len(ts))
        if pool == "tokens":
            tensors = {f"layer.{i}": torch.cat(acts.tokens[i][start:end]) for i in acts.layers}
            tensors["lengths"] = torch.tensor([len(x) for x in acts.tokens[0][start:end]])
        else:
            tensors = {f"layer.{i}": acts.pooled[i][start:end] for i in acts.layers}
        atomic_save_tensors(out / f"shard-{k:05d}.safetensors", tensors)
        shards.append({"file": f"shard-{k:05d}.safetensors", "start": start, "end": end})
    provenance = ("model", "model_source", "model_revision", "model_class", "width", "n_layers")  # as recorded then
    fields = {
        **{k: v for k, v in lm.provenance().items() if k in provenance},
        "layers": acts.layers,
        "pool": pool,
        "dtype": "float32",
        "site": "block_output",
        "token_selection": "response",
        "max_length": None,
        "dataset_fingerprint": fingerprint(ts),
        "n": len(ts),
        "shard_size": shard_size,
        "labels": [t.label for t in ts],
    }
    write_config(out, "activations", {**fields, "shards": shards if complete else shards[:1], "complete": complete})
    return acts


@pytest.mark.parametrize("pool", ["mean", "tokens"])
def test_old_layout_directories_still_load_and_resume(tmp_path, pool):
    lm = tiny_model("llama")
    ts = _transcripts(5)
    old = tmp_path / "old"
    acts = _write_old_layout(old, lm, ts, pool, shard_size=2)
    _same(load_activations(old), acts)
    before = (old / "config.json").read_bytes()
    assert capture_to_disk(lm, ts, old, pool=pool, shard_size=2, progress=False) == old
    assert (old / "config.json").read_bytes() == before  # complete and the same capture: left as it is

    unfinished = tmp_path / "unfinished"
    _write_old_layout(unfinished, lm, ts, pool, shard_size=2, complete=False)
    with pytest.raises(ArtifactError, match="unfinished"):
        load_activations(unfinished)
    capture_to_disk(lm, ts, unfinished, pool=pool, shard_size=2, progress=False)
    assert "labels" not in read_config(unfinished)
    _same(load_activations(unfinished), acts, exact=False)  # shard 1 on: batched apart from the rest


def test_crash_between_shard_and_index_line_loses_nothing(tmp_path, monkeypatch):
    lm = tiny_model("llama")
    ts = _transcripts(7)
    whole = load_activations(capture_to_disk(lm, ts, tmp_path / "whole", shard_size=2, progress=False))
    real_append = disk_mod.append_jsonl
    calls = {"appends": 0, "captures": 0}

    def torn_second_line(path, rows, **kw):
        calls["appends"] += 1
        if calls["appends"] == 2:  # the shard file is written; the process dies halfway through its line
            with open(path, "a") as f:
                f.write(json.dumps(rows[0])[:25])
            raise KeyboardInterrupt("killed")
        return real_append(path, rows, **kw)

    monkeypatch.setattr(disk_mod, "append_jsonl", torn_second_line)
    out = tmp_path / "crashed"
    with pytest.raises(KeyboardInterrupt):
        capture_to_disk(lm, ts, out, shard_size=2, progress=False)
    assert (out / "shard-00001.safetensors").is_file()
    monkeypatch.setattr(disk_mod, "append_jsonl", real_append)
    real_capture = disk_mod.run_capture

    def counted(*args, **kwargs):
        calls["captures"] += 1
        return real_capture(*args, **kwargs)

    monkeypatch.setattr(disk_mod, "run_capture", counted)
    capture_to_disk(lm, ts, out, shard_size=2, progress=False)
    assert calls["captures"] == 3  # shard 0 was listed; shards 1 (torn line), 2 and 3 are computed
    _same(load_activations(out), whole)
    assert len((out / "shards.jsonl").read_text().splitlines()) == 4


def test_long_input_refused_then_resumed_with_max_length(tmp_path, monkeypatch):
    lm = tiny_model("llama")
    ts = _transcripts(6)
    context = max(len(tokenize_chat(lm.tokenizer, t)) for t in ts)
    lm.model.config.max_position_embeddings = context
    long = Transcript.from_pair("Tell me about money.", "Sure! Here is a helpful answer. " * 40, label="long")
    data = [*ts[:4], long, *ts[4:]]
    out = tmp_path / "acts"
    with pytest.raises(DataFormatError, match=f"transcript 4 has .* context of {context}: pass max_length={context}"):
        capture_to_disk(lm, data, out, shard_size=2, progress=False)
    assert len((out / "shards.jsonl").read_text().splitlines()) == 2  # shards before the long one are kept
    calls = {"n": 0}
    real = disk_mod.run_capture

    def counted(*args, **kwargs):
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(disk_mod, "run_capture", counted)
    capture_to_disk(lm, data, out, shard_size=2, max_length=context, progress=False)
    assert calls["n"] == 2  # nothing in the first two shards was cut: they stand under max_length too
    config = read_config(out)
    assert config["max_length"] == context and config["n_truncated"] == 1 and config["complete"]
    fresh = capture_to_disk(lm, data, tmp_path / "fresh", shard_size=2, max_length=context, progress=False)
    _same(load_activations(out), load_activations(fresh))
    with pytest.raises(ArtifactError, match="differs in: max_length"):  # shard 2 was cut at `context`
        capture_to_disk(lm, data, out, shard_size=2, max_length=context - 1, progress=False)
