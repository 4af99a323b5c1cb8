"""emscope's SAE: training through eai-sparsify recovers a planted dictionary; the saved artifact loads and
encodes without the library, exactly as the library's own coder does; the quality measures mean what they say."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from emscope.errors import ArtifactError, ConfigError
from emscope.sae.model import SparseAutoencoder, load_sae
from emscope.sae.quality import loss_recovered, reconstruction_metrics
from emscope.sae.train import SaeTrainConfig, from_sparsify, from_sparsify_dir, train_sae

pytestmark = pytest.mark.usefixtures("one_thread")


def planted(n: int = 6000, d: int = 24, m: int = 32, k: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows that are sparse non-negative combinations (k of m) of a random unit dictionary [m, d]."""
    g = torch.Generator().manual_seed(seed)
    dictionary = torch.randn(m, d, generator=g)
    dictionary /= dictionary.norm(dim=1, keepdim=True)
    idx = torch.stack([torch.randperm(m, generator=g)[:k] for _ in range(n)])
    z = torch.zeros(n, m).scatter_(1, idx, torch.rand(n, k, generator=g) * 2 + 0.5)
    return z @ dictionary, dictionary


def best_cosines(sae: SparseAutoencoder, dictionary: torch.Tensor) -> torch.Tensor:
    w = sae.W_dec / sae.W_dec.norm(dim=1, keepdim=True)
    return (dictionary @ w.T).max(1).values


@pytest.mark.parametrize("activation,k", [("topk", 3), ("groupmax", 4)])
def test_a_planted_sparse_dictionary_is_recovered(activation, k):
    x, dictionary = planted()
    config = SaeTrainConfig(
        activation=activation, n_latents=64, k=k, epochs=6, batch_size=512, max_norm_factor=None, dead_after_tokens=3000
    )
    sae = train_sae(x, layer=0, model="synthetic", config=config, progress=False)
    assert best_cosines(sae, dictionary).mean() > 0.9
    # a random dictionary of the same size is far from it: the test can fail
    rand = torch.randn_like(sae.W_dec)
    assert (dictionary @ (rand / rand.norm(dim=1, keepdim=True)).T).max(1).values.mean() < 0.8
    assert sae.library == "eai-sparsify" and sae.library_version not in ("", "unknown")
    assert sae.training["steps"] > 0 and sae.activation == activation


def _library_coder(activation: str, k: int):
    from sparsify import SparseCoder, SparseCoderConfig

    torch.manual_seed(0)
    coder = SparseCoder(16, SparseCoderConfig(activation=activation, num_latents=48, k=k))
    with torch.no_grad():
        coder.encoder.bias.normal_()
        coder.b_dec.normal_()
    return coder


@pytest.mark.parametrize("activation,k", [("topk", 5), ("groupmax", 6)])
def test_plain_torch_inference_equals_the_library(activation, k):
    coder = _library_coder(activation, k)
    sae = from_sparsify(coder, layer=2, model="m")
    x = torch.randn(40, 16)
    with torch.no_grad():
        out = coder(x)
    torch.testing.assert_close(sae(x), out.sae_out, atol=1e-5, rtol=1e-5)
    dense = torch.zeros(40, 48).scatter_(1, out.latent_indices, out.latent_acts)
    torch.testing.assert_close(sae.encode(x), dense)
    torch.testing.assert_close(sae.decode(sae.encode(x)), out.sae_out, atol=1e-5, rtol=1e-5)


def test_the_artifact_describes_itself_and_loads_without_the_library(tmp_path, monkeypatch):
    from emscope.artifacts import load_result
    from emscope.models.lineage import Lineage

    sae = from_sparsify(
        _library_coder("topk", 4), layer=3, model="tiny", lineage=Lineage(base="tiny"), training={"steps": 7}
    )
    sae.save(tmp_path / "sae")
    config = json.loads((tmp_path / "sae" / "config.json").read_text())
    for key, value in {
        "kind": "sae",
        "model": "tiny",
        "layer": 3,
        "site": "resid_post",
        "library": "eai-sparsify",
    }.items():
        assert config[key] == value
    assert config["library_version"] and config["lineage"]["base"] == "tiny" and config["n_latents"] == 48
    monkeypatch.setitem(sys.modules, "sparsify", None)  # any import of the library now fails
    loaded = load_result(tmp_path / "sae")
    assert isinstance(loaded, SparseAutoencoder) and loaded.training == {"steps": 7}
    x = torch.randn(8, 16)
    torch.testing.assert_close(loaded(x), sae(x))
    direction = loaded.decoder_direction(5)
    assert direction.layer == 3 and abs(float(direction.vector.norm()) - 1) < 1e-5


def test_a_library_checkpoint_directory_is_read_without_the_library(tmp_path, monkeypatch):
    coder = _library_coder("topk", 4)
    coder.save_to_disk(tmp_path / "layers.3")
    monkeypatch.setitem(sys.modules, "sparsify", None)
    sae = from_sparsify_dir(tmp_path / "layers.3", layer=3, model="m")
    x = torch.randn(8, 16)
    torch.testing.assert_close(sae(x), from_sparsify(coder, layer=3, model="m")(x))


def test_damaged_artifacts_and_bad_settings_are_refused(tmp_path):
    sae = from_sparsify(_library_coder("topk", 4), layer=0, model="m")
    sae.save(tmp_path / "sae")
    config = json.loads((tmp_path / "sae" / "config.json").read_text())
    config["k"] = 1000
    (tmp_path / "sae" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match="k=1000"):
        load_sae(tmp_path / "sae")
    with pytest.raises(ConfigError, match="activation"):
        SaeTrainConfig(activation="relu")
    with pytest.raises(ConfigError, match="model= and layer="):
        train_sae(torch.randn(10, 4), progress=False)


def plus_minus_identity(d: int, layer: int, model: str, max_norm: float | None = None) -> SparseAutoencoder:
    """An exact SAE: latents relu(x) and relu(-x), decoded back with +I and -I (2d latents, all kept)."""
    eye = torch.eye(d)
    w = torch.cat([eye, -eye])
    return SparseAutoencoder(
        w, torch.zeros(2 * d), w.clone(), torch.zeros(d), k=2 * d, layer=layer, model=model, max_norm=max_norm
    )


def test_reconstruction_metrics_are_the_documented_quantities():
    x = torch.randn(200, 8)
    exact = plus_minus_identity(8, 0, "m")
    m = reconstruction_metrics(exact, x)
    assert m.fvu < 1e-10 and m.l0 == pytest.approx(8.0) and m.dead_fraction == 0.0  # each coordinate: one of ±
    # keep one latent per row: FVU is the share of variance the other coordinates carry
    one = SparseAutoencoder(exact.W_enc, exact.b_enc, exact.W_dec, exact.b_dec, k=1, layer=0, model="m")
    kept = one(x)
    expected = float((x - kept).pow(2).sum() / (x - x.mean(0)).pow(2).sum())
    m1 = reconstruction_metrics(one, x)
    assert m1.fvu == pytest.approx(expected, rel=1e-5) and 0.5 < m1.fvu < 1 and m1.l0 == pytest.approx(1.0)
    # rows above max_norm are left out of the measures
    capped = plus_minus_identity(8, 0, "m", max_norm=float(x.norm(dim=1).median()))
    assert reconstruction_metrics(capped, x).n_rows_over_max_norm == int((x.norm(dim=1) > capped.max_norm).sum())


def test_an_exact_sae_recovers_all_of_the_loss_and_a_bad_one_does_not(tiny):
    from emscope.data.transcripts import Transcript

    lm = tiny("llama", n_layers=3, width=32)
    data = [Transcript.from_pair(f"Question {i}?", "Sure! Here is a helpful and honest answer.") for i in range(3)]
    exact = plus_minus_identity(lm.width, 1, lm.spec)
    r = loss_recovered(lm, exact, data, n_boot=200)
    assert r.spliced_loss == pytest.approx(r.clean_loss, abs=1e-5) and r.fraction_recovered == pytest.approx(
        1.0, abs=1e-4
    )
    assert r.ablated_loss != pytest.approx(r.clean_loss) and r.n_transcripts == 3
    crude = SparseAutoencoder(exact.W_enc, exact.b_enc, exact.W_dec, exact.b_dec, k=2, layer=1, model=lm.spec)
    worse = loss_recovered(lm, crude, data, n_boot=200)
    assert worse.fraction_recovered < r.fraction_recovered
    assert not any(h for b in lm.blocks for h in b._forward_hooks.values())  # no hook left behind


def test_training_from_a_capture_directory_records_the_model_and_refuses_pooled_captures(tiny, tmp_path):
    from emscope.activations.capture import capture_to_disk
    from emscope.data.transcripts import Transcript

    lm = tiny("llama", n_layers=3, width=32)
    data = [
        Transcript.from_pair(f"Hi {i}", "Sure! Here is a helpful and honest answer to your question.") for i in range(6)
    ]
    tokens = capture_to_disk(
        lm, data, tmp_path / "tok", layers=[1], pool="tokens", token_selection="all", progress=False
    )
    config = SaeTrainConfig(expansion_factor=2, k=4, batch_size=32, max_norm_factor=None, buffer_size=64)
    sae = train_sae(tokens, config=config, progress=False)
    assert (sae.layer, sae.model, sae.site, sae.lineage) == (1, lm.spec, "resid_post", lm.lineage)
    assert sae.training["dataset_fingerprint"] and sae.n_latents == 64
    pooled = capture_to_disk(lm, data, tmp_path / "mean", layers=[1], pool="mean", progress=False)
    with pytest.raises(ConfigError, match="pool='tokens'"):
        train_sae(pooled, config=config, progress=False)
