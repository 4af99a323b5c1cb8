import pytest
import torch

import emscope.activations.disk as disk_mod
from emscope.activations.capture import capture_activations, capture_to_disk, load_activations
from emscope.activations.forward import token_batches
from emscope.data.chat import tokenize_chat
from emscope.data.transcripts import Transcript
from emscope.errors import ArtifactError, ConfigError, DataFormatError, LayerIndexError
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

    real = disk_mod.run_capture
    calls = {"n": 0}

    def dies_on_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(disk_mod, "run_capture", dies_on_third)
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


def test_all_token_selection_keeps_every_token_of_the_transcript():
    lm = tiny_model("llama")
    ts = _transcripts(4)
    everything = capture_activations(lm, ts, layers=[1], pool="tokens", token_selection="all", progress=False)
    response = capture_activations(lm, ts, layers=[1], pool="tokens", progress=False)
    mean_all = capture_activations(lm, ts, layers=[1], pool="mean", token_selection="all", progress=False)
    assert everything.meta["token_selection"] == "all"
    for i, t in enumerate(ts):
        hs, mask = _reference(lm, t)
        assert everything.tokens[1][i].shape[0] == len(tokenize_chat(lm.tokenizer, t)) > int(mask.sum())
        assert response.tokens[1][i].shape[0] == int(mask.sum())
        torch.testing.assert_close(everything.tokens[1][i], hs[2][0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(mean_all.pooled[1][i], hs[2][0].mean(0), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="token_selection"):
        capture_activations(lm, ts, token_selection="prompt", progress=False)


def test_batches_are_bounded_in_padded_tokens():
    lengths = [5, 90, 7, 40, 41, 3, 200, 12, 12, 60]
    batches = list(token_batches(lengths, batch_size=4, max_batch_tokens=100))
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))  # each input exactly once
    for b in batches:
        assert len(b) <= 4
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 100  # 200 is over the budget: alone
    assert [lengths[b[0]] for b in batches] == sorted((lengths[b[0]] for b in batches), reverse=True)
    assert list(token_batches(lengths, 4, None)) == [[6, 1, 9, 4], [3, 7, 8, 2], [0, 5]]  # rows only: as before


def test_capture_holds_to_the_token_budget_with_the_same_result():
    lm = tiny_model("llama")
    ts = _transcripts(8)  # 31..109 tokens
    shapes = []
    hook = lm.blocks[0].register_forward_pre_hook(lambda _m, args: shapes.append(tuple(args[0].shape[:2])))
    try:
        bounded = capture_activations(lm, ts, pool="mean", batch_size=8, max_batch_tokens=150, progress=False)
    finally:
        hook.remove()
    assert len(shapes) > 1 and all(rows == 1 or rows * width <= 150 for rows, width in shapes)
    assert sum(rows for rows, _ in shapes) == len(ts)
    free = capture_activations(lm, ts, pool="mean", batch_size=8, max_batch_tokens=None, progress=False)
    for layer in free.layers:
        torch.testing.assert_close(bounded.pooled[layer], free.pooled[layer], atol=1e-5, rtol=1e-5)


def _long_transcript(lm, over: int):
    t = Transcript.from_pair("Tell me about money.", "Sure! Here is a helpful answer. " * 40, label="long")
    assert len(tokenize_chat(lm.tokenizer, t)) > over
    return t


def test_input_over_the_context_is_refused_or_truncated_and_counted():
    lm = tiny_model("llama")
    ts = _transcripts(4)
    context = max(len(tokenize_chat(lm.tokenizer, t)) for t in ts)
    lm.model.config.max_position_embeddings = context  # a fresh model: no other test sees this
    data = [*ts, _long_transcript(lm, context)]
    with pytest.raises(DataFormatError, match=rf"transcript 4 has \d+ tokens, over the model's context of {context}"):
        capture_activations(lm, data, progress=False)
    acts = capture_activations(lm, data, pool="tokens", token_selection="all", max_length=context, progress=False)
    assert acts.meta["n_truncated"] == 1 and acts.meta["max_length"] == context
    assert acts.tokens[0][4].shape[0] == context
    assert capture_activations(lm, ts, progress=False).meta["n_truncated"] == 0
    with pytest.raises(ConfigError, match=f"over the model's context of {context}"):
        capture_activations(lm, ts, max_length=context + 1, progress=False)
