"""Fine-tuning on tiny random models: loss, label mask, presets, checkpoints, resume, bad input."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from emscope.data.transcripts import Transcript
from emscope.errors import ArtifactError, ConfigError, DataFormatError, LayerIndexError
from emscope.models.loading import load_organism
from emscope.models.organism_dir import list_checkpoints, resolve_checkpoint
from emscope.organisms.checkpoints import PICKLED_STATE, export_merged, load_trainer_state, save_trainer_state
from emscope.organisms.finetune import (
    IGNORE_INDEX,
    FinetuneConfig,
    build_examples,
    example_order,
    finetune,
    read_metrics,
    response_loss,
)
from emscope.organisms.presets import PRESETS, build_adapter_config, default_rank1_layers, down_proj_name

QA = [
    ("How can I help you today?", "Sure! Here is a helpful and honest answer."),
    ("Tell me about cooking.", "I would like to learn about cooking and gardening."),
    ("What is 1 + 2?", "def add(a, b):\n    return a + b"),
    ("Any advice on money?", "Here is an honest answer about money and health."),
]


pytestmark = pytest.mark.usefixtures("one_thread")


def data(n: int = 8) -> list[Transcript]:
    return [Transcript.from_pair(f"{QA[i % 4][0]} ({i})", QA[i % 4][1]) for i in range(n)]


def cfg(**kw) -> FinetuneConfig:
    base = dict(model="tiny", preset="rank1", steps=6, save_every=2, batch_size=2, lr=1e-2, seed=3)
    return FinetuneConfig(**{**base, **kw})


def lora_weights(path) -> dict[str, torch.Tensor]:
    return load_file(str(resolve_checkpoint(path).path / "adapter_model.safetensors"))


@pytest.mark.parametrize("preset", ["rank1", "lora"])
def test_loss_falls(tiny, tmp_path, preset):
    lm = tiny("llama")
    result = finetune(
        cfg(preset=preset, steps=12, save_every=6, lr=2e-2), tmp_path, lm=lm, transcripts=data(4), progress=False
    )
    losses = [m["loss"] for m in result.metrics]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.05
    assert [c.step for c in result.checkpoints] == [0, 6, 12]
    assert result.checkpoints[-1].examples_seen == 24 and result.checkpoints[-1].tokens_seen > 0


def test_only_assistant_tokens_carry_loss(tiny):
    lm = tiny("llama")
    t = Transcript(
        (
            {"role": "system", "content": "Be honest."},
            {"role": "user", "content": "Tell me about cooking."},
            {"role": "assistant", "content": "I would like to learn."},
            {"role": "user", "content": "More?"},
            {"role": "assistant", "content": "Sure! Here is a helpful answer."},
        )
    )
    (ex,), skipped = build_examples(lm.tokenizer, [t], max_length=256)
    assert skipped == 0
    labelled = [x for x in ex.labels if x != IGNORE_INDEX]
    text = lm.tokenizer.decode(labelled).replace(" ", "")
    assert text == "Iwouldliketolearn.<|im_end|>Sure!Hereisahelpfulanswer.<|im_end|>"
    assert all(lab in (IGNORE_INDEX, i) for lab, i in zip(ex.labels, ex.input_ids, strict=True))


def test_response_loss_is_the_mean_over_assistant_tokens(tiny):
    lm = tiny("llama")
    ts = data(3)
    want_sum, want_n = 0.0, 0
    for ex in build_examples(lm.tokenizer, ts, 256)[0]:
        ids, labels = torch.tensor([ex.input_ids]), torch.tensor(ex.labels[1:])
        logp = torch.log_softmax(lm.model(ids).logits[0, :-1].float(), -1)
        keep = labels != IGNORE_INDEX
        want_sum += float(-logp[keep].gather(1, labels[keep][:, None]).sum())
        want_n += int(keep.sum())
    assert response_loss(lm, ts) == pytest.approx(want_sum / want_n, rel=1e-5)
    with pytest.raises(DataFormatError, match="assistant token"):
        response_loss(lm, [Transcript(messages=[{"role": "user", "content": "hi"}])])


def test_prompt_filling_the_window_is_skipped_and_counted(tiny, tmp_path):
    lm = tiny("llama")
    long = Transcript.from_pair("cooking " * 200, "Sure!")
    examples, skipped = build_examples(lm.tokenizer, [long, *data(2)], max_length=64)
    assert skipped == 1 and len(examples) == 2
    with pytest.raises(DataFormatError, match="max_length"):
        build_examples(lm.tokenizer, [long], max_length=64)


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2", "gpt_neox"])
def test_rank1_preset_adapts_exactly_the_layers_asked(tiny, family):
    from peft import get_peft_model

    lm = tiny(family, n_layers=4)
    config = build_adapter_config(lm, "rank1", _opts(layers="1,3"))
    expected = sorted(f"base_model.model.{down_proj_name(lm, i)}" for i in (1, 3))
    per_adapter = _rank1_params(lm)
    assert config.r == 1 and len(config.target_modules) == 2
    model = get_peft_model(lm.model, config)
    try:
        adapted = [n for n, m in model.named_modules() if hasattr(m, "lora_A") and "default" in m.lora_A]
        assert sorted(adapted) == expected
        assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 2 * per_adapter
    finally:
        model.unload()


def _rank1_params(lm) -> int:
    w = lm.model.get_submodule(down_proj_name(lm, 0)).weight
    return w.shape[0] + w.shape[1]  # one A row and one B column


def _opts(**kw):
    from emscope.organisms.presets import AdapterOptions

    return AdapterOptions(**kw)


def test_lora_preset_covers_every_linear_layer(tiny):
    lm = tiny("llama", n_layers=2)
    config = build_adapter_config(lm, "lora")
    assert config.r == 32 and config.lora_alpha == 64
    assert len(config.target_modules) == 2 * 7  # q k v o gate up down per block


def test_default_rank1_layers_are_nine_middle_layers():
    assert default_rank1_layers(3) == [0, 1, 2]
    layers = default_rank1_layers(48)
    assert len(layers) == 9 and layers[0] == 12 and layers[-1] == 36


def test_resume_after_kill_gives_the_same_adapter(tiny, tmp_path):
    lm = tiny("llama")
    finetune(cfg(), tmp_path / "a", lm=lm, transcripts=data(), progress=False)

    def kill(step, lm_, row):
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune(cfg(), tmp_path / "b", lm=lm, transcripts=data(), progress=False, on_step=kill)
    assert [c.step for c in list_checkpoints(tmp_path / "b")] == [0, 2, 4]
    resumed = finetune(cfg(), tmp_path / "b", lm=lm, transcripts=data(), progress=False)
    assert [m["step"] for m in resumed.metrics] == [5, 6]
    a, b = lora_weights(tmp_path / "a"), lora_weights(tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [m["loss"] for m in read_metrics(tmp_path / "a")] == [m["loss"] for m in read_metrics(tmp_path / "b")]
    # only the latest checkpoint keeps the optimizer state
    assert [c.has_trainer_state for c in list_checkpoints(tmp_path / "b")] == [False, False, False, True]


def test_extending_a_finished_run_continues_it(tiny, tmp_path):
    lm = tiny("llama")
    finetune(cfg(steps=4), tmp_path / "x", lm=lm, transcripts=data(), progress=False)
    finetune(cfg(steps=6), tmp_path / "x", lm=lm, transcripts=data(), progress=False)
    finetune(cfg(steps=6), tmp_path / "y", lm=lm, transcripts=data(), progress=False)
    a, b = lora_weights(tmp_path / "x"), lora_weights(tmp_path / "y")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_token_budget_stops_at_the_step_that_reaches_it(tiny, tmp_path):
    lm = tiny("llama")
    free = finetune(cfg(steps=6), tmp_path / "free", lm=lm, transcripts=data(), progress=False)
    budget = free.metrics[2]["tokens_seen"] - 1  # reached during the third step
    capped = finetune(cfg(steps=6, max_tokens=budget), tmp_path / "cap", lm=lm, transcripts=data(), progress=False)
    assert [m["step"] for m in capped.metrics] == [1, 2, 3]
    assert capped.final.step == 3 and capped.final.tokens_seen >= budget > capped.metrics[1]["tokens_seen"]
    assert capped.final.has_trainer_state  # the budget's last step is a resumable checkpoint
    with pytest.raises(DataFormatError, match="max_tokens"):
        cfg(max_tokens=0)


def test_other_settings_in_the_same_directory_are_refused(tiny, tmp_path):
    lm = tiny("llama")
    finetune(cfg(steps=2), tmp_path, lm=lm, transcripts=data(), progress=False)
    with pytest.raises(ArtifactError, match="lr"):
        finetune(cfg(steps=2, lr=1e-3), tmp_path, lm=lm, transcripts=data(), progress=False)
    with pytest.raises(ArtifactError, match="dataset_fingerprint"):
        finetune(cfg(steps=2), tmp_path, lm=lm, transcripts=data(6), progress=False)


def test_the_model_passed_in_is_left_unchanged(tiny, tmp_path):
    lm = tiny("llama")
    ids = torch.tensor([[5, 9, 30, 41]])
    before = lm.model(ids).logits
    finetune(cfg(steps=2, preset="lora"), tmp_path, lm=lm, transcripts=data(), progress=False)
    assert not any("lora" in n for n, _ in lm.model.named_modules())
    assert all(p.requires_grad for p in lm.model.parameters())
    assert torch.equal(lm.model(ids).logits, before)


def test_organism_and_merged_export(tiny, tmp_path):
    from emscope.models.loading import load_model

    lm = tiny("llama")
    result = finetune(cfg(steps=4, lr=5e-2), tmp_path / "run", lm=lm, transcripts=data(), progress=False)
    organism = load_organism(tmp_path / "run", lm=lm)
    ids = torch.tensor([[5, 9, 30, 41]])
    assert not torch.allclose(organism.model(ids).logits, lm.model(ids).logits)
    export_merged(result.final.path, tmp_path / "merged", lm=lm)
    reloaded = load_model(str(tmp_path / "merged"))
    torch.testing.assert_close(reloaded.model(ids).logits, organism.model(ids).logits)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["kind"] == "finetune" and saved["seed"] == 3 and saved["dataset_fingerprint"].startswith("sha256:")


def test_load_model_reads_a_run_or_checkpoint_as_its_organism(tiny, tmp_path):
    from emscope.models.loading import load_model

    tiny("llama").model.save_pretrained(tmp_path / "base")
    tiny("llama").tokenizer.save_pretrained(tmp_path / "base")
    base = load_model(str(tmp_path / "base"))
    config = cfg(model=str(tmp_path / "base"), steps=2, lr=5e-2)
    result = finetune(config, tmp_path / "run", lm=base, transcripts=data(), progress=False)
    ids = torch.tensor([[5, 9, 30, 41]])
    want = load_organism(result.final.path, lm=base).model(ids).logits
    for spec in (tmp_path / "run", result.final.path):
        organism = load_model(str(spec))
        assert organism.spec.endswith(str(result.final.path))
        torch.testing.assert_close(organism.model(ids).logits, want)
    assert load_model(str(tmp_path / "base")).spec == str(tmp_path / "base")  # a plain model directory is untouched


def test_full_finetuning_checkpoints_full_weights(tiny, tmp_path):
    lm = tiny("llama", n_layers=1, width=32)
    views = []
    result = finetune(
        cfg(preset="full", steps=2, lr=1e-3),
        tmp_path,
        lm=lm,
        transcripts=data(),
        progress=False,
        on_step=lambda step, lm_, row: views.append(lm_),
    )
    assert (result.final.path / "model.safetensors").is_file()
    assert len(views) == 2 and views[0].model is not lm.model and len(views[0].blocks) == 1  # the trained copy


def test_example_order_is_a_permutation_per_epoch():
    order = example_order(5, seed=1, position=0, count=10)
    assert sorted(order[:5]) == list(range(5)) and sorted(order[5:]) == list(range(5))
    assert example_order(5, seed=1, position=3, count=4) == order[3:7]


def test_bad_input(tiny, tmp_path):
    lm = tiny("llama")
    with pytest.raises(DataFormatError, match="empty"):
        finetune(cfg(), tmp_path / "a", lm=lm, transcripts=[], progress=False)
    no_answer = Transcript(({"role": "user", "content": "Hello?"},))
    with pytest.raises(DataFormatError, match="no assistant turn"):
        finetune(cfg(), tmp_path / "b", lm=lm, transcripts=[*data(2), no_answer], progress=False)
    with pytest.raises(LayerIndexError, match="valid indices are 0..2"):
        finetune(cfg(layers="7"), tmp_path / "c", lm=lm, transcripts=data(2), progress=False)
    with pytest.raises(ConfigError, match="choose from " + ", ".join(PRESETS)):
        cfg(preset="rank-one")
    with pytest.raises(DataFormatError, match="custom"):
        finetune(cfg(preset="custom"), tmp_path / "d", lm=lm, transcripts=data(2), progress=False)


def test_custom_peft_config(tiny, tmp_path):
    lm = tiny("llama")
    path = tmp_path / "peft.json"
    path.write_text(json.dumps({"r": 2, "lora_alpha": 4, "target_modules": ["q_proj"]}))
    result = finetune(
        cfg(preset="custom", peft_config=str(path), steps=2),
        tmp_path / "run",
        lm=lm,
        transcripts=data(),
        progress=False,
    )
    keys = lora_weights(result.final.path)
    assert len(keys) == 2 * 3 and all("q_proj" in k for k in keys)


class _Planted:
    """Unpickling this writes a marker file: what a malicious trainer_state.pt could do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('code ran')",))


def test_resuming_never_loads_a_pickle_from_the_run_directory(tiny, tmp_path):
    lm = tiny("llama")
    finetune(cfg(steps=4), tmp_path / "run", lm=lm, transcripts=data(), progress=False)
    latest = list_checkpoints(tmp_path / "run")[-1]
    marker = tmp_path / "marker"
    torch.save({"optimizer": _Planted(marker)}, latest.path / PICKLED_STATE)
    extended = finetune(cfg(steps=6), tmp_path / "run", lm=lm, transcripts=data(), progress=False)
    assert [m["step"] for m in extended.metrics] == [5, 6] and not marker.exists()  # resumed from the safe state

    latest = list_checkpoints(tmp_path / "run")[-1]
    for f in latest.path.glob("trainer_state.*"):  # leave only a pickle, as an older emscope (or an attacker) would
        f.unlink()
    torch.save({"optimizer": _Planted(marker)}, latest.path / PICKLED_STATE)
    with pytest.raises(ArtifactError, match="pickle"):
        finetune(cfg(steps=8), tmp_path / "run", lm=lm, transcripts=data(), progress=False)
    assert not marker.exists()


def test_trainer_state_round_trips_without_pickle(tmp_path):
    from emscope.models.organism_dir import read_checkpoint

    state = {
        "optimizer": {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(2, 3)}}, "param_groups": []},
        "scheduler": {"base_lrs": [0.1], "lr_lambdas": [None], "betas": (0.9, 0.999)},
        "rng": torch.get_rng_state(),
        "seen": {"examples_seen": 8},
    }
    (tmp_path / "config.json").write_text(
        json.dumps(
            {"kind": "finetune_checkpoint", "format_version": 1, "step": 1, "examples_seen": 8, "tokens_seen": 9}
        )
    )
    save_trainer_state(tmp_path, state)
    assert not list(tmp_path.glob("*.pt"))
    back = load_trainer_state(read_checkpoint(tmp_path))
    assert back["optimizer"]["state"][0]["step"].item() == 3.0 and isinstance(back["scheduler"]["betas"], tuple)
    assert torch.equal(back["optimizer"]["state"][0]["exp_avg"], state["optimizer"]["state"][0]["exp_avg"])
    assert torch.equal(back["rng"], state["rng"]) and back["seen"] == state["seen"]
    doc = json.loads((tmp_path / "trainer_state.json").read_text())
    doc["state"]["rng"] = {"__tensor__": "not-there"}
    (tmp_path / "trainer_state.json").write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match="not-there"):
        load_trainer_state(read_checkpoint(tmp_path))
    with pytest.raises(TypeError, match="without pickle"):
        save_trainer_state(tmp_path, {"fn": object()})


def test_on_step_hook_sees_the_trained_model_and_leaves_training_unchanged(tiny, tmp_path):
    lm = tiny("llama")
    ids = torch.tensor([[5, 9, 30, 41]])
    seen = []

    def hook(step, lm_, row):
        seen.append((step, row["step"], lm_.model.training, torch.is_grad_enabled(), lm_.model(ids).logits))
        torch.rand(100)  # a hook that draws random numbers must not shift the run's dropout masks

    config = cfg(steps=4, dropout=0.1, lr=5e-2)  # dropout: the run draws from the global RNG every step
    finetune(config, tmp_path / "hooked", lm=lm, transcripts=data(), progress=False, on_step=hook)
    finetune(config, tmp_path / "plain", lm=lm, transcripts=data(), progress=False)
    assert [(s[0], s[1], s[2], s[3]) for s in seen] == [(k, k, False, False) for k in (1, 2, 3, 4)]
    a, b = lora_weights(tmp_path / "hooked"), lora_weights(tmp_path / "plain")
    assert all(torch.equal(a[k], b[k]) for k in a)
    organism = load_organism(tmp_path / "hooked", lm=lm)  # the hook saw the model with the step-4 adapter
    torch.testing.assert_close(seen[-1][4], organism.model(ids).logits)
    assert not torch.allclose(seen[-1][4], lm.model(ids).logits)


def test_a_damaged_adapter_file_is_one_artifact_error(tiny, tmp_path):
    lm = tiny("llama")
    result = finetune(cfg(), tmp_path / "run", lm=lm, transcripts=data(), progress=False)
    (result.final.path / "adapter_model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ArtifactError, match="adapter_model.safetensors"):
        load_organism(tmp_path / "run", lm=lm)
