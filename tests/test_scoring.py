"""`score`: a direction as a detector, on a tiny model (structure) and the real one (behaviour)."""

from __future__ import annotations

import pytest
import torch

from emscope.activations.capture import capture_activations
from emscope.data.transcripts import Transcript
from emscope.directions.contrast import reading_route_transcripts
from emscope.directions.detect import project, score
from emscope.directions.direction import Direction
from emscope.directions.sweep import sweep_model
from emscope.errors import DataFormatError, LayerIndexError, WidthMismatchError


def test_score_is_the_projection_of_pooled_activations(tiny):
    lm = tiny("llama")
    ts = [Transcript.from_pair("Hi?", "Hello there friend."), Transcript.from_pair("Q?", "An answer.")]
    d = Direction(torch.randn(64), layer=1, model=lm.spec)
    s = score(lm, ts, d)
    acts = capture_activations(lm, ts, layers=[1], progress=False)
    assert s.shape == (2,)
    assert torch.allclose(s, acts.pooled[1] @ d.unit, atol=1e-5)
    assert torch.allclose(score(lm, ts, d.scaled(3.0)), s, atol=1e-5)  # on the unit direction


def test_score_refuses_a_direction_of_another_width(tiny):
    lm = tiny("llama")
    with pytest.raises(WidthMismatchError):
        score(lm, [Transcript.from_pair("Q?", "A.")], Direction(torch.randn(32), layer=0, model=lm.spec))
    with pytest.raises(WidthMismatchError):
        project(torch.randn(3, 8), torch.randn(9))


def test_sweep_model_refuses_out_of_range_layers_and_empty_sets(tiny):
    lm = tiny("llama", n_layers=3)
    aligned, misaligned = reading_route_transcripts(limit=4)
    with pytest.raises(LayerIndexError, match="valid indices are 0..2"):
        sweep_model(lm, misaligned, aligned, layers="5", progress=False)
    with pytest.raises(DataFormatError, match="both sides"):
        sweep_model(lm, [], aligned, progress=False)


def test_reading_route_sweep_on_smollm2(smollm2):
    """16 built-in pairs, 2 layers: the best layer separates held-out answers well, and scores agree."""
    aligned, misaligned = reading_route_transcripts(limit=16)
    result = sweep_model(smollm2, misaligned, aligned, layers="4,10", n_boot=200, progress=False)
    best = result.best
    assert best.metrics["auroc"] > 0.8  # measured 0.92 (layer 10) on this split; chance is 0.5
    assert best.model == "smollm2-135m-instruct" and best.width == 576
    s = score(smollm2, misaligned[:3] + aligned[:3], best)
    assert s[:3].mean() > s[3:].mean()
