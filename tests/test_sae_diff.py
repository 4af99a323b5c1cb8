"""Model diffing through an SAE: a change planted in a tiny model's layer is found, ranked first, with an interval
that excludes zero while untouched latents stay at zero; reading, steering and ablating a latent; prediction."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from emscope.activations.sites import Site, hook_site
from emscope.data.transcripts import Transcript
from emscope.errors import ConfigError, ModelMismatchError
from emscope.models.loading import LoadedModel
from emscope.sae.diff import LatentDiff, cosine_with_direction, encode_transcripts, latent_diff, max_activating
from emscope.sae.intervene import ablate_latent, frequency_matched, latent_effects
from emscope.sae.model import SparseAutoencoder
from emscope.sae.predict import predict_em

pytestmark = pytest.mark.usefixtures("one_thread")
LAYER, PLANTED, SHIFT = 1, 5, 40.0
DATA = [Transcript.from_pair(f"Question {i}?", "Sure! Here is a helpful and honest answer.") for i in range(6)]


def plus_minus_identity(d: int, model: str) -> SparseAutoencoder:
    eye = torch.eye(d)
    w = torch.cat([eye, -eye])
    return SparseAutoencoder(w, torch.zeros(2 * d), w.clone(), torch.zeros(d), k=2 * d, layer=LAYER, model=model)


@pytest.fixture(scope="module")
def models():
    from emscope.testing import tiny_model

    base = tiny_model("llama", n_layers=3, width=32)
    tuned = LoadedModel(copy.deepcopy(base.model), base.tokenizer, "tiny-tuned", "test")
    tuned._lineage = base.lineage.fine_tuned("sha256:planted")

    def shift(hidden: torch.Tensor) -> torch.Tensor:  # the "fine-tune": coordinate PLANTED moves up by SHIFT
        out = hidden.clone()
        out[..., PLANTED] += SHIFT
        return out

    hook_site(tuned, Site("resid_post", LAYER), shift)
    return base, tuned


def test_latent_diff_finds_the_planted_change(models, tmp_path):
    base, tuned = models
    sae = plus_minus_identity(base.width, base.spec)
    diff = latent_diff(sae, base, tuned, DATA, n_boot=200)
    assert diff.ranking[0] == PLANTED
    top = diff.rows(3)[0]
    assert top["diff"] > SHIFT * 0.5 and top["excludes_zero"] and top["rate_model"] == 1.0
    untouched = [i for i in range(base.width) if i != PLANTED]
    assert torch.all(diff.diff[untouched] == 0) and torch.all(diff.diff_ci[:, untouched] == 0)
    diff.save(tmp_path / "diff")
    again = LatentDiff.load(tmp_path / "diff")
    assert (
        again.ranking == diff.ranking and again.model == "tiny-tuned" and (tmp_path / "diff" / "latents.csv").is_file()
    )
    # a model of another base is refused
    stranger = LoadedModel(base.model, base.tokenizer, "stranger", "test")
    stranger._lineage = type(base.lineage)(base="another-base")
    with pytest.raises(ModelMismatchError, match="SAE from"):
        latent_diff(sae, base, stranger, DATA)


def test_reading_a_latent(models):
    base, tuned = models
    sae = plus_minus_identity(base.width, base.spec)
    feats = encode_transcripts(sae, tuned, DATA, pool="max")
    assert feats.shape == (len(DATA), 2 * base.width) and torch.all(feats[:, PLANTED] > SHIFT * 0.5)
    contexts = max_activating(sae, tuned, DATA, [PLANTED], n=3)[PLANTED]
    assert len(contexts) == 3 and contexts[0]["activation"] >= contexts[-1]["activation"] > 0
    assert contexts[0]["context"].endswith("]")
    direction = torch.zeros(base.width)
    direction[PLANTED] = 1.0
    (hit,) = cosine_with_direction(sae, direction, [PLANTED])
    (miss,) = cosine_with_direction(sae, direction, [PLANTED + 1])
    assert hit.cosine == pytest.approx(1.0) and hit.percentile > 95 and miss.cosine == 0.0


def test_ablating_a_latent_removes_its_contribution_only(models):
    from emscope.activations.forward import block_outputs

    base, _ = models
    sae = plus_minus_identity(base.width, base.spec)
    ids = base.tokenizer("Sure! Here is a helpful answer.", return_tensors="pt")["input_ids"]
    plain = block_outputs(base, [LAYER], input_ids=ids)[LAYER].clone()
    with ablate_latent(base, sae, PLANTED):
        ablated = block_outputs(base, [LAYER], input_ids=ids)[LAYER]
    torch.testing.assert_close(ablated[..., PLANTED], plain[..., PLANTED].clamp(max=0))  # relu(x) removed
    others = [i for i in range(base.width) if i != PLANTED]
    torch.testing.assert_close(ablated[..., others], plain[..., others])


def test_latent_effects_compare_the_target_with_its_controls(models):
    from emscope.directions.direction import Direction

    base, _ = models
    sae = plus_minus_identity(base.width, base.spec)
    vector = torch.zeros(base.width)
    vector[PLANTED] = 1.0
    readout = Direction(vector, layer=LAYER, model=base.spec)  # read where the latent writes: effect = alpha
    rates = torch.linspace(0.1, 0.9, 2 * base.width)
    effects = latent_effects(base, sae, PLANTED, DATA[:3], readout, rates, alpha=4.0, n_matched=3, n_directions=2)
    assert effects.target.value == pytest.approx(4.0, abs=1e-3)
    assert len(effects.controls) == 3 + 2 + 2 and effects.comparison.n_controls == 7
    assert all(abs(c.value) < 4.0 for c in effects.controls)
    too_early = Direction(vector, layer=LAYER - 1, model=base.spec)
    with pytest.raises(ConfigError, match="before the SAE's layer"):
        latent_effects(base, sae, PLANTED, DATA[:1], too_early, rates)
    assert frequency_matched(rates, PLANTED, 3) == sorted(
        frequency_matched(rates, PLANTED, 3), key=lambda i: abs(rates[i] - rates[PLANTED])
    )


def test_prediction_across_organisms():
    change = [0.1, 0.2, 0.3, 0.9, 1.1, 1.3, 0.15, 1.0]
    rate = [0.0, 0.01, 0.02, 0.2, 0.3, 0.4, 0.0, 0.25]
    kinds = ["a", "a", "b", "b", "c", "c", "d", "d"]
    p = predict_em(change, rate, kinds, n_boot=200)
    assert p.spearman > 0.95 and p.lopo_auroc == 1.0 and p.n_types == 4
    shuffled = predict_em(change, list(np.array(rate)[[3, 0, 5, 1, 6, 2, 4, 7]]), kinds, n_boot=200)
    assert shuffled.spearman < 0.5
