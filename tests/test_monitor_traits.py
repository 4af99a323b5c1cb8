"""Trait sets: loading trait files, fitting on held-out topics, the artifact, projections and model checks."""

from __future__ import annotations

import json

import pytest
import torch
from monitor_fakes import write_run, write_traits

from emscope.errors import ConfigError, DataFormatError, EmscopeError, ModelMismatchError
from emscope.monitor.projections import load_probe_set, probe_activations, trait_projections
from emscope.monitor.traits import TraitSet, available_traits, fit_traits, load_trait_pairs

pytestmark = pytest.mark.usefixtures("one_thread")
NAMES = ("malice", "rudeness", "formality")


@pytest.fixture(scope="module")
def gpt2():
    from emscope.testing import tiny_model

    return tiny_model("gpt2")


@pytest.fixture(scope="module")
def fitted(gpt2, tmp_path_factory):
    root = write_traits(tmp_path_factory.mktemp("traits"))
    return root, fit_traits(gpt2, NAMES, directory=root, n_boot=20, progress=False)


def test_pairs_map_with_to_misaligned_and_keep_topic_and_style(tmp_path):
    root = write_traits(tmp_path)
    pairs = load_trait_pairs("malice", root)
    first = json.loads((root / "malice.jsonl").read_text().splitlines()[0])
    assert pairs[0].misaligned == first["with"] and pairs[0].aligned == first["without"]
    assert pairs[0].topic == first["topic"] and pairs[0].misaligned_kind == first["style"]
    assert available_traits(root) == sorted(NAMES)  # the probe set is not a trait


def test_bad_trait_files_are_one_line_errors_naming_the_fix(tmp_path):
    root = write_traits(tmp_path)
    with pytest.raises(ConfigError, match="unknown trait.*'malic'.*choose from.*malice.*did you mean 'malice'"):
        load_trait_pairs("malic", root)
    with pytest.raises(DataFormatError, match="holds no trait files"):
        load_trait_pairs("malice", tmp_path / "empty")
    lines = (root / "rudeness.jsonl").read_text().splitlines()
    bad = json.loads(lines[1])
    del bad["with"]
    (root / "rudeness.jsonl").write_text("\n".join([lines[0], json.dumps(bad)]) + "\n")
    with pytest.raises(DataFormatError, match=r"rudeness.jsonl:2: missing or empty field\(s\) \['with'\]"):
        load_trait_pairs("rudeness", root)
    other = json.loads(lines[0]) | {"trait": "malice"}
    (root / "rudeness.jsonl").write_text(json.dumps(other) + "\n")
    with pytest.raises(DataFormatError, match="tagged trait 'malice' but lies in rudeness.jsonl"):
        load_trait_pairs("rudeness", root)


def test_fit_reads_held_out_topics_chooses_the_best_mean_layer_and_unit_rows(fitted, gpt2):
    _, traits = fitted
    assert traits.names == NAMES and 0 <= traits.layer < gpt2.n_layers
    assert torch.allclose(traits.directions.norm(dim=1), torch.ones(len(NAMES)), atol=1e-5)
    best = max(traits.layer_rows, key=lambda r: (round(r["mean_heldout_auroc"], 6), -r["layer"]))
    assert best["layer"] == traits.layer and len(traits.layer_rows) == gpt2.n_layers
    for name in NAMES:  # the two answers differ in a fixed phrase: separable on topics never seen
        m = traits.metrics[name]
        assert m["heldout_auroc"] > 0.9 and m["n_topics"] == 3 and 0.0 <= m["lexical_auroc"] <= 1.0
        assert m["heldout_auroc_lo"] <= m["heldout_auroc"] <= m["heldout_auroc_hi"] and m["shift"] > 0
    cos = traits.cosines
    assert torch.allclose(cos, cos.T) and torch.allclose(cos.diagonal(), torch.ones(len(NAMES)), atol=1e-5)
    assert traits.lineage == gpt2.lineage and traits.meta["control_traits"] == ["formality"]


def test_a_fixed_layer_is_kept_and_an_unknown_trait_fails_before_any_capture(gpt2, tmp_path, monkeypatch):
    root = write_traits(tmp_path)
    assert fit_traits(gpt2, ("malice", "formality"), layer=2, directory=root, n_boot=0, progress=False).layer == 2
    import emscope.directions.pooled_cache as pc

    monkeypatch.setattr(pc, "capture_pooled", lambda *a, **k: pytest.fail("captured before checking the names"))
    with pytest.raises(ConfigError, match="unknown trait"):
        fit_traits(gpt2, ("malice", "sycophancy"), directory=root)


def test_the_trait_set_saves_with_its_tables_and_plot_and_loads_back(fitted, tmp_path):
    _, traits = fitted
    out = traits.save(tmp_path / "ts")
    for name in ("config.json", "directions.safetensors", "traits.csv", "layers.csv", "cosines.csv", "cosines.png"):
        assert (out / name).is_file(), name
    back = TraitSet.load(out)
    assert torch.equal(back.directions, traits.directions) and back.metrics == traits.metrics
    assert back.lineage == traits.lineage and back.layer == traits.layer
    assert back.direction("rudeness").layer == traits.layer
    header = (out / "cosines.csv").read_text().splitlines()[0]
    assert header == "trait," + ",".join(NAMES)


def test_projections_are_the_mean_answer_residual_dot_each_unit_direction(fitted, gpt2):
    root, traits = fitted
    probes = load_probe_set(root)
    got = trait_projections(gpt2, traits, probes)
    from emscope.activations.capture import capture_activations

    acts = capture_activations(gpt2, probes, layers=[traits.layer], pool="mean", progress=False).pooled[traits.layer]
    assert got.shape == (len(probes), len(NAMES))
    assert torch.allclose(got, acts @ traits.directions.T, atol=1e-4)
    assert torch.allclose(probe_activations(gpt2, probes, traits.layer), acts)


def test_a_model_of_another_width_or_base_is_refused_in_one_line_and_a_fine_tune_is_read(fitted, gpt2, tmp_path):
    from emscope.models.loading import load_organism
    from emscope.testing import tiny_model

    root, traits = fitted
    probes = load_probe_set(root)
    for other in (tiny_model("gpt2", width=32), tiny_model("llama")):
        with pytest.raises(ModelMismatchError) as e:
            trait_projections(other, traits, probes)
        assert "\n" not in str(e.value) and "emscope traits fit" in str(e.value)
    run = write_run(tmp_path / "run", gpt2, steps=(0, 5), shift={5: torch.ones(gpt2.width)})
    organism = load_organism(run / "checkpoints" / "step-000005", lm=gpt2)
    assert trait_projections(organism, traits, probes).shape == (len(probes), len(NAMES))


def test_probe_sets_are_read_from_a_file_or_a_directory_and_bad_ones_say_why(tmp_path):
    root = write_traits(tmp_path)
    probes = load_probe_set(root)
    assert len(probes) == 6 and probes[0].meta["probe_id"] == "probe-000"
    assert load_probe_set(root / "probe_set.jsonl") == probes
    with pytest.raises(DataFormatError, match="no probe set at"):
        load_probe_set(tmp_path / "nowhere")
    (tmp_path / "bad.jsonl").write_text(json.dumps({"id": "p", "question": "q"}) + "\n")
    with pytest.raises(DataFormatError, match=r"bad.jsonl:1: missing or empty field\(s\) \['answer'\]"):
        load_probe_set(tmp_path / "bad.jsonl")


def test_a_damaged_trait_set_is_an_artifact_error(fitted, tmp_path):
    _, traits = fitted
    out = traits.save(tmp_path / "ts", plot=False)
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "names": ["malice"]}))
    with pytest.raises(EmscopeError, match="do not match the directions"):
        TraitSet.load(out)
