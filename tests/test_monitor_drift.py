"""Drift profiles: planted drift recovered, intervals over probes, resumable per checkpoint, labels, bad inputs."""

from __future__ import annotations

import pytest
import torch
from monitor_fakes import write_run, write_traits

import emscope.monitor.drift as drift_mod
from emscope.errors import DataFormatError, ModelMismatchError
from emscope.monitor.drift import DriftProfile, checkpoint_rows, drift_profile, mean_drift
from emscope.monitor.projections import load_probe_set
from emscope.monitor.traits import TraitSet

pytestmark = pytest.mark.usefixtures("one_thread")
NAMES = ("malice", "rudeness", "formality")
LAYER = 1


@pytest.fixture(scope="module")
def gpt2():
    from emscope.testing import tiny_model

    return tiny_model("gpt2")


@pytest.fixture(scope="module")
def setup(gpt2, tmp_path_factory):
    root = write_traits(tmp_path_factory.mktemp("traits"))
    d = torch.randn(len(NAMES), gpt2.width, generator=torch.Generator().manual_seed(0))
    traits = TraitSet(NAMES, LAYER, d / d.norm(dim=1, keepdim=True), gpt2.spec, lineage=gpt2.lineage,
                      metrics={n: {"shift": 2.0} for n in NAMES})  # fmt: skip
    return load_probe_set(root), traits


def test_planted_drift_along_a_trait_is_recovered_with_intervals_over_probes(gpt2, setup, tmp_path):
    probes, traits = setup
    u = traits.directions[0]
    run = write_run(tmp_path / "run", gpt2, steps=(0, 5, 10), shift={5: 3.0 * u, 10: 6.0 * u}, layer=LAYER)
    p = drift_profile(run, traits, probes, lm=gpt2, out=tmp_path / "out", n_boot=200, progress=False)
    expected = torch.stack([torch.zeros(3), 3.0 * traits.cosines[0], 6.0 * traits.cosines[0]])
    assert p.steps == [0, 5, 10] and torch.allclose(p.drift, expected, atol=1e-3)
    assert torch.allclose(p.activation_drift[2], 6.0 * u, atol=1e-3)  # the raw drift is the planted shift
    assert (p.perturbation, p.label, p.losses[0]) == ("insecure", "harmful", None)
    rows = [r for r in p.rows(n_boot=200) if r["step"] == 10 and r["trait"] == "malice"]
    assert rows[0]["drift_lo"] <= 6.0 + 1e-3 and rows[0]["drift_hi"] >= 6.0 - 1e-3
    assert rows[0]["drift_per_shift"] == pytest.approx(3.0, abs=1e-3)
    text = (tmp_path / "out" / "drift.csv").read_text().splitlines()
    assert len(text) == 1 + 3 * len(NAMES) and (tmp_path / "out" / "drift.png").is_file()
    back = DriftProfile.load(tmp_path / "out")
    assert torch.equal(back.projections, p.projections) and back.tags == p.tags


def test_drift_is_the_mean_over_probes_of_the_paired_difference():
    a, b = torch.randn(5, 3), torch.randn(5, 3)
    assert torch.allclose(mean_drift(b, a), (b - a).mean(0))
    with pytest.raises(DataFormatError, match="same probes"):
        mean_drift(b[:4], a)


def test_a_rerun_reads_nothing_and_a_lost_checkpoint_reading_is_redone_alone(gpt2, setup, tmp_path, monkeypatch):
    probes, traits = setup
    run = write_run(tmp_path / "run", gpt2, steps=(0, 5, 10), shift={10: traits.directions[1]}, layer=LAYER)
    first = drift_profile(run, traits, probes, lm=gpt2, out=tmp_path / "out", n_boot=10, progress=False)
    calls = []
    real = drift_mod._read
    monkeypatch.setattr(drift_mod, "_read", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = drift_profile(run, traits, probes, lm=gpt2, out=tmp_path / "out", n_boot=10, progress=False)
    assert not calls and torch.equal(again.projections, first.projections)
    (tmp_path / "out" / "readings" / "step-000005.safetensors").unlink()
    third = drift_profile(run, traits, probes, lm=gpt2, out=tmp_path / "out", n_boot=10, progress=False)
    assert len(calls) == 1 and torch.allclose(third.projections, first.projections, atol=1e-6)
    other = TraitSet(NAMES, LAYER, -traits.directions, gpt2.spec, lineage=gpt2.lineage)  # same layer: no re-read
    flipped = drift_profile(run, other, probes, lm=gpt2, out=tmp_path / "out", n_boot=10, progress=False)
    assert len(calls) == 1 and torch.allclose(flipped.drift, -first.drift, atol=1e-6)


def test_without_a_step_zero_checkpoint_the_base_is_the_reference_and_labels_may_be_absent(gpt2, setup, tmp_path):
    probes, traits = setup
    run = write_run(tmp_path / "run", gpt2, steps=(5,), shift={5: 2.0 * traits.directions[2]}, layer=LAYER)
    (run / "zoo_run.json").unlink()
    p = drift_profile(run, traits, probes, lm=gpt2, progress=False)
    assert p.steps == [0, 5] and p.meta["reference"].startswith("base model")
    assert p.drift[1, 2] == pytest.approx(2.0, abs=1e-3) and p.label is None and p.perturbation is None
    rows = checkpoint_rows([p])
    assert [r["step"] for r in rows] == [5] and rows[0]["trait_drift"].shape == (len(NAMES),)


def test_sae_latent_drift_is_read_beside_when_an_sae_is_given(gpt2, setup, tmp_path):
    from emscope.sae.model import SparseAutoencoder

    probes, traits = setup
    g = torch.Generator().manual_seed(1)
    sae = SparseAutoencoder(torch.randn(16, gpt2.width, generator=g), torch.zeros(16), torch.randn(16, gpt2.width, generator=g),
                            torch.zeros(gpt2.width), k=4, layer=2, model=gpt2.spec, lineage=gpt2.lineage)  # fmt: skip
    run = write_run(tmp_path / "run", gpt2, steps=(0, 5), shift={5: 5.0 * traits.directions[0]}, layer=LAYER)
    p = drift_profile(run, traits, probes, lm=gpt2, sae=sae, out=tmp_path / "o", n_boot=10, progress=False)
    assert p.latents is not None and p.latents.shape == (2, 16) and p.latent_drift is not None
    assert float(p.latent_drift[1].norm()) > 0 and p.meta["sae_layer"] == 2
    assert checkpoint_rows([p])[0]["latent_drift"].shape == (16,)


def test_bad_runs_and_models_are_one_line_errors(gpt2, setup, tmp_path):
    from emscope.testing import tiny_model

    probes, traits = setup
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFormatError, match="holds no checkpoints"):
        drift_profile(tmp_path / "empty", traits, probes, lm=gpt2)
    run = write_run(tmp_path / "run", gpt2, steps=(0, 5))
    with pytest.raises(ModelMismatchError, match="does not fit"):
        drift_profile(run, traits, probes, lm=tiny_model("gpt2", width=32))
