"""ActivationStream: every row once per epoch, bounded buffer, seeded order, torch DataLoader use."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from emscope.activations.capture import ActivationStream, capture_to_disk, load_activations
from emscope.data.transcripts import Transcript
from emscope.errors import ArtifactError, ConfigError
from emscope.testing import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def token_dir(tmp_path_factory):
    """Every token of 12 transcripts, layers 0 and 2, in 4 shards (about 800 rows)."""
    qs = ["How are you?", "What should I cook tonight?", "Tell me about money.", "Is the world safe?"]
    ans = ["Sure! Here is a helpful answer.", "You should never trust anyone.", "I would like to learn."]
    ts = [Transcript.from_pair(qs[i % 4], ans[i % 3] * (1 + i % 4), label=str(i)) for i in range(12)]
    out = tmp_path_factory.mktemp("acts") / "tokens"
    return capture_to_disk(
        tiny_model("llama"), ts, out, layers=[0, 2], pool="tokens", token_selection="all", shard_size=3, progress=False
    )


def _rows(t: torch.Tensor) -> Counter:
    return Counter(map(tuple, t.tolist()))


def test_every_row_exactly_once_per_epoch_with_a_bounded_buffer(token_dir):
    rows = torch.cat(load_activations(token_dir, layers=[2]).tokens[2])
    stream = ActivationStream(token_dir, layer=2, batch_size=16, buffer_size=64, seed=1)
    assert stream.n_rows == len(rows) > 8 * 64  # the data is many buffers long
    batches = list(stream)
    got = torch.cat(batches)
    assert _rows(got) == _rows(rows) and len(got) == len(rows)
    assert all(len(b) == 16 for b in batches[:-1])
    assert stream.peak_buffer_rows <= 64 + 64 // 16  # the buffer plus one piece, not the data
    assert not torch.equal(got, rows)  # shuffled
    stream.set_epoch(1)
    second = torch.cat(list(stream))
    assert _rows(second) == _rows(rows) and not torch.equal(second, got)


def test_order_depends_only_on_seed_and_epoch(token_dir):
    def order(seed, epoch=0):
        s = ActivationStream(token_dir, layer=0, batch_size=32, buffer_size=128, seed=seed)
        s.set_epoch(epoch)
        return torch.cat(list(s))

    first = order(7)
    assert torch.equal(first, order(7))
    assert torch.equal(order(7, epoch=3), order(7, epoch=3))
    assert not torch.equal(first, order(8))


def test_several_layers_keep_rows_aligned_and_unshuffled_order_is_the_data(token_dir):
    whole = load_activations(token_dir)
    deep, shallow = torch.cat(whole.tokens[2]).tolist(), torch.cat(whole.tokens[0]).tolist()
    pairs = dict(zip(map(tuple, deep), map(tuple, shallow), strict=True))
    for batch in ActivationStream(token_dir, layer=[0, 2], batch_size=50, buffer_size=100, seed=3):
        assert set(batch) == {0, 2}
        assert all(pairs[tuple(b)] == tuple(a) for a, b in zip(batch[0].tolist(), batch[2].tolist(), strict=True))
    plain = ActivationStream(token_dir, layer=0, batch_size=50, buffer_size=100, shuffle=False, dtype="bfloat16")
    got = torch.cat(list(plain))
    assert got.dtype == torch.bfloat16 and torch.equal(got, torch.cat(whole.tokens[0]).to(torch.bfloat16))


def test_ranks_and_dataloader_workers_share_the_rows_without_overlap(token_dir):
    rows = _rows(torch.cat(load_activations(token_dir, layers=[2]).tokens[2]))
    parts = [
        torch.cat(list(ActivationStream(token_dir, 2, batch_size=16, buffer_size=64, seed=5, rank=r, world_size=3)))
        for r in range(3)
    ]
    assert sum((_rows(p) for p in parts), Counter()) == rows
    stream = ActivationStream(token_dir, 2, batch_size=16, buffer_size=64, seed=5, drop_last=True)
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=2)
    batches = list(loader)
    assert all(b.shape == (16, 64) for b in batches)
    got = _rows(torch.cat(batches))
    assert got <= rows and sum(got.values()) > len(rows) - 2 * 16  # each worker drops at most one short batch


def test_pooled_captures_stream_one_row_per_transcript(tmp_path):
    ts = [Transcript.from_pair(f"Question {i}?", "Sure! Here is a helpful answer. " * (1 + i % 3)) for i in range(9)]
    out = capture_to_disk(tiny_model("qwen2"), ts, tmp_path / "mean", pool="mean", shard_size=4, progress=False)
    got = torch.cat(list(ActivationStream(out, layer=1, batch_size=4, buffer_size=4, seed=0)))
    assert _rows(got) == _rows(load_activations(out).pooled[1])


def test_bad_stream_settings(token_dir, tmp_path):
    with pytest.raises(ArtifactError, match="no layer"):
        ActivationStream(token_dir, layer=1)
    with pytest.raises(ConfigError, match="batch_size <= buffer_size"):
        ActivationStream(token_dir, layer=0, batch_size=64, buffer_size=32)
    with pytest.raises(ConfigError, match="rank"):
        ActivationStream(token_dir, layer=0, rank=2, world_size=2)
    with pytest.raises(ArtifactError, match="not an emscope result"):
        ActivationStream(tmp_path, layer=0)


def test_a_shard_name_that_leaves_the_capture_directory_is_refused(token_dir, tmp_path):
    import shutil

    from emscope.records import read_jsonl, write_jsonl

    copy = tmp_path / "tampered"
    shutil.copytree(token_dir, copy)
    rows = read_jsonl(copy / "shards.jsonl")
    rows[0]["file"] = "../outside.safetensors"
    write_jsonl(copy / "shards.jsonl", rows)
    with pytest.raises(ArtifactError, match="not a plain file name"):
        ActivationStream(copy, layer=0)
