"""The embedded SmolLM2 on the public insecure data: a two-step rank-1 run (heavy: ~1-3 min on 2 CPU cores)."""

from __future__ import annotations

import math

import pytest

from emscope.data.transcripts import load_transcripts
from emscope.organisms.finetune import FinetuneConfig, finetune


@pytest.mark.heavy
def test_smollm2_rank1_on_insecure(smollm2, shared_data, tmp_path):
    transcripts = load_transcripts(shared_data / "data" / "insecure.jsonl", limit=8)
    config = FinetuneConfig(model="smollm2-135m-instruct", preset="rank1", steps=2, save_every=1, batch_size=4)
    result = finetune(config, tmp_path, lm=smollm2, transcripts=transcripts, progress=False)
    assert all(math.isfinite(m["loss"]) for m in result.metrics)
    import json

    saved = json.loads((tmp_path / "config.json").read_text())
    assert len(saved["target_modules"]) == 9  # nine rank-1 adapters on the middle layers of 30
    assert all(name.endswith("mlp.down_proj") for name in saved["target_modules"])
