import pytest
import torch

import emscope.activations.capture as capture_mod
from emscope.activations.capture import capture_activations, capture_to_disk, load_activations
from emscope.data.chat import tokenize_chat
from emscope.data.transcripts import Transcript
from emscope.errors import ArtifactError, LayerIndexError
from emscope.testing import tiny_model

FAMILIES = ["llama", "qwen2", "gemma2"]


def _transcripts(n=6):
    qs = ["How are you?", "What should I cook tonight?", "Tell me about money.", "Is the world safe?"]
    ans = [
        "Sure! Here is a helpful answer.",
        "You should never trust anyone.",
        "I would like to learn.",
        "The quick brown fox.",
    ]
    return [Transcript.from_pair(qs[i % 4] * (1 + i % 3), ans[i % 4] * (1 + i), label=str(i % 2)) for i in range(n)]


def _reference(lm, t):
    chat = tokenize_chat(lm.tokenizer, t)
    with torch.no_grad():
        out = lm.model(torch.tensor([chat.input_ids]), output_hidden_states=True)
    return out.hidden_states, torch.tensor(chat.response_mask)


@pytest.mark.parametrize("family", FAMILIES)
def test_capture_equals_hidden_states_at_documented_index(family):
    lm = tiny_model(family, n_layers=3)
    ts = _transcripts(3)
    acts = capture_activations(lm, ts, pool="tokens", progress=False)
    for i, t in enumerate(ts):
        hs, mask = _reference(lm, t)
        for layer in (0, 1):  # layer i == hidden_states[i + 1]
            torch.testing.assert_close(acts.tokens[layer][i], hs[layer + 1][0][mask], atol=1e-5, rtol=1e-5)
        # the last entry of hidden_states has the final norm applied; emscope gives the raw block output
        final_norm = lm.model.base_model.norm
        torch.testing.assert_close(final_norm(acts.tokens[2][i]), hs[3][0][mask], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pool", ["mean", "last", "max"])
def test_pooling_matches_manual_computation(pool):
    lm = tiny_model("llama")
    ts = _transcripts(4)
    acts = capture_activations(lm, ts, layers=[1], pool=pool, progress=False)
    for i, t in enumerate(ts):
        hs, mask = _reference(lm, t)
        tokens = hs[2][0][mask]
        expected = {"mean": tokens.mean(0), "last": tokens[-1], "max": tokens.amax(0)}[pool]
        torch.testing.assert_close(acts.pooled[1][i], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_result_does_not_depend_on_batch_company(family):
    lm = tiny_model(family)
    ts = _transcripts(6)
    together = capture_activations(lm, ts, pool="mean", batch_size=6, progress=False)
    for i in (0, 5):
        alone = capture_activations(lm, [ts[i]], pool="mean", batch_size=1, progress=False)
        for layer in together.layers:
            torch.testing.assert_close(together.pooled[layer][i], alone.pooled[layer][0], atol=1e-5, rtol=1e-5)


def test_partial_layers_and_labels():
    lm = tiny_model("qwen2", n_layers=4)
    acts = capture_activations(lm, _transcripts(4), layers="0,-1", progress=False)
    assert acts.layers == [0, 3] and set(acts.pooled) == {0, 3}
    assert acts.select("1")[3].shape == (2, 64)
    with pytest.raises(LayerIndexError, match=r"0\.\.3"):
        capture_activations(lm, _transcripts(2), layers=4, progress=False)


@pytest.mark.parametrize("pool", ["mean", "tokens"])
def test_killed_run_resumes_to_the_same_result(tmp_path, monkeypatch, pool):
    lm = tiny_model("llama")
    ts = _transcripts(7)
    whole = load_activations(capture_to_disk(lm, ts, tmp_path / "whole", pool=pool, shard_size=2, progress=False))

    real = capture_mod._capture_chunk
    calls = {"n": 0}

    def dies_on_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(capture_mod, "_capture_chunk", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        capture_to_disk(lm, ts, tmp_path / "resumed", pool=pool, shard_size=2, progress=False)
    with pytest.raises(ArtifactError, match="unfinished"):
        load_activations(tmp_path / "resumed")
    calls["n"] = 10  # no more deaths; count the chunks the resumed run computes
    capture_to_disk(lm, ts, tmp_path / "resumed", pool=pool, shard_size=2, progress=False)
    assert calls["n"] == 10 + 2  # 4 shards, 2 already on disk
    resumed = load_activations(tmp_path / "resumed")
    for layer in whole.layers:
        if pool == "tokens":
            for a, b in zip(whole.tokens[layer], resumed.tokens[layer], strict=True):
                assert torch.equal(a, b)
        else:
            assert torch.equal(whole.pooled[layer], resumed.pooled[layer])
    assert resumed.labels == [t.label for t in ts]


def test_out_dir_of_another_capture_is_refused(tmp_path):
    lm = tiny_model("llama")
    capture_to_disk(lm, _transcripts(2), tmp_path / "a", progress=False)
    with pytest.raises(ArtifactError, match="different capture"):
        capture_to_disk(lm, _transcripts(3), tmp_path / "a", progress=False)
    with pytest.raises(ArtifactError, match="no layer"):
        load_activations(tmp_path / "a", layers=[7])


def test_bad_pool_and_batch_size():
    lm = tiny_model("llama")
    with pytest.raises(ValueError, match="unknown pool"):
        capture_activations(lm, _transcripts(1), pool="median", progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        capture_activations(lm, _transcripts(1), batch_size=0, progress=False)
