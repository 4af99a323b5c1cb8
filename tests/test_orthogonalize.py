"""Weight orthogonalisation equals runtime ablation, on tiny models and on SmolLM2; it saves and reloads."""

from __future__ import annotations

import json

import pytest
import torch

from emscope.directions.direction import Direction
from emscope.errors import NotSupportedError, WidthMismatchError
from emscope.interventions.ablate import ablate
from emscope.interventions.orthogonalize import PROVENANCE_FILE, orthogonalize_weights, save_orthogonalized


def _direction(lm, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return Direction(vector=torch.randn(lm.width, generator=gen), layer=1, model=lm.spec)


def _logits(lm, ids):
    with torch.no_grad():
        return lm.model(ids).logits


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2", "gpt_neox", "phi3"])
def test_matches_runtime_ablation_tiny(tiny, family):
    lm = tiny(family)
    d = _direction(lm)
    ids = lm.tokenizer("hello there, how can I help you today", return_tensors="pt").input_ids
    before = _logits(lm, ids)
    with ablate(lm, d):
        ablated = _logits(lm, ids)
    ortho = orthogonalize_weights(lm, d)
    torch.testing.assert_close(_logits(ortho, ids), ablated, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(ablated, before, atol=1e-3)
    torch.testing.assert_close(_logits(lm, ids), before, atol=0, rtol=0)  # the original is untouched
    emb = ortho.model.get_input_embeddings().weight.detach()
    assert float((emb @ d.unit).abs().max()) < 1e-5


def test_tied_embeddings_untied_and_saved(tiny, tmp_path):
    from transformers import AutoModelForCausalLM

    lm = tiny("llama")
    lm.model.config.tie_word_embeddings = True
    lm.model.tie_weights()
    assert lm.model.get_output_embeddings().weight is lm.model.get_input_embeddings().weight
    d = _direction(lm)
    ids = lm.tokenizer("hello there", return_tensors="pt").input_ids
    with ablate(lm, d):
        ablated = _logits(lm, ids)
    out = save_orthogonalized(lm, d, tmp_path / "ortho")
    assert (out / "model.safetensors").is_file()
    assert json.loads((out / PROVENANCE_FILE).read_text())["direction"]["layer"] == 1
    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, ablated, atol=1e-4, rtol=1e-4)


def test_unsupported_and_mismatched(tiny):
    gemma = tiny("gemma2")
    with pytest.raises(NotSupportedError, match="runtime ablation"):
        orthogonalize_weights(gemma, _direction(gemma))
    lm = tiny("llama")
    with pytest.raises(WidthMismatchError):
        orthogonalize_weights(lm, torch.randn(lm.width * 2))


def test_matches_runtime_ablation_smollm2(smollm2):
    lm = smollm2
    gen = torch.Generator().manual_seed(0)
    d = Direction(vector=torch.randn(lm.width, generator=gen), layer=10, model=lm.spec)
    text = lm.tokenizer.apply_chat_template(
        [{"role": "user", "content": "Name a colour."}], tokenize=False, add_generation_prompt=True
    )
    ids = lm.tokenizer(text, return_tensors="pt").input_ids
    with ablate(lm, d):
        ablated = _logits(lm, ids)[0, -1]
    ortho = orthogonalize_weights(lm, d)
    got = _logits(ortho, ids)[0, -1]
    del ortho
    torch.testing.assert_close(got, ablated, atol=5e-4, rtol=1e-4)  # measured: ~1e-4 over all positions
