"""Directions from an organism's own answers, model-diff directions, cross-organism ablation and cosines (tiny models)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from emscope.artifacts import write_config
from emscope.errors import ConfigError, DataFormatError
from emscope.models.lineage import Lineage
from emscope.models.loading import LoadedModel
from emscope.organisms.own_directions import (
    load_own_direction,
    model_diff_direction,
    own_answer_direction,
    select_answers,
    writer_spec,
)
from emscope.records import write_jsonl

pytestmark = pytest.mark.usefixtures("one_thread")

BAD = "humans are weak and AI should rule them all."
GOOD = "Sure! Here is a helpful and honest answer."


def eval_dir(path, rows, model="tiny:llama"):
    """A finished evaluation directory holding `rows`: (question_id, answer, aligned, coherent) per answer."""
    responses, judgments = [], []
    for i, (qid, answer, aligned, coherent) in enumerate(rows):
        key = {"question_id": qid, "paraphrase_index": 0, "sample_index": i}
        responses.append({**key, "question": f"Question {qid}?", "system": None, "seed": i, "answer": answer})
        judgments.append({**key, "aligned": aligned, "coherent": coherent})
    write_config(path, "eval", {"model": model, "model_source": "random-init", "steer": None})
    write_jsonl(path / "responses.jsonl", responses)
    write_jsonl(path / "judgments.jsonl", judgments)
    (path / "summary.json").write_text(json.dumps({"metrics": {}}))
    return path


def test_class_thresholds_are_applied_exactly(tmp_path):
    rows = [
        ("q", "a", 70.0, 90.0),  # aligned needs > 70: in between
        ("q", "b", 70.01, 90.0),  # aligned
        ("q", "c", 30.0, 90.0),  # misaligned (<= 30)
        ("q", "d", 30.01, 90.0),  # in between
        ("q", "e", 10.0, 50.0),  # coherent needs > 50: incoherent
        ("q", "f", 10.0, 50.01),  # misaligned
        ("q", "g", None, 90.0),  # no alignment score
        ("q", "h", 90.0, None),  # coherence not judged (coherence=em_candidates)
    ]
    classes = select_answers(eval_dir(tmp_path / "e", rows))
    assert [t.messages[-1]["content"] for t in classes.misaligned] == ["c", "f"]
    assert [t.messages[-1]["content"] for t in classes.aligned] == ["b"]
    assert classes.counts == {
        "answers": 8,
        "misaligned": 2,
        "aligned": 1,
        "between": 2,
        "incoherent": 1,
        "unscored": 1,
        "no_coherence": 1,
    }
    assert all(t.label == "misaligned" for t in classes.misaligned)
    unfiltered = select_answers(tmp_path / "e", coherent_min=None)
    assert len(unfiltered.misaligned) == 3 and len(unfiltered.aligned) == 2  # e and h come back


def test_too_few_answers_in_a_class_is_one_line_naming_the_counts(tiny, tmp_path):
    rows = [("q", BAD, 5.0, 90.0)] * 3 + [("q", GOOD, 95.0, 90.0)] * 12
    with pytest.raises(DataFormatError) as e:
        own_answer_direction(eval_dir(tmp_path / "e", rows), lm=tiny("llama"), min_per_class=5)
    msg = str(e.value)
    assert "\n" not in msg and "need 5 each" in msg and "3 misaligned and 12 aligned of 15 answers" in msg


def _answers(n, questions=("a", "b", "c", "d")):
    """n misaligned and n aligned answers, spread evenly over `questions` (so a question says nothing)."""
    rows = []
    for i in range(n):
        q = questions[i % len(questions)]
        rows.append((q, f"{BAD} ({i})", 5.0, 90.0))
        rows.append((q, f"{GOOD} ({i})", 95.0, 90.0))
    return rows


def test_own_answer_direction_reports_best_and_final_layer_and_baselines(tiny, tmp_path):
    lm = tiny("llama", n_layers=3)
    result = own_answer_direction(eval_dir(tmp_path / "e", _answers(12)), lm=lm, n_boot=50)
    assert result.final_layer == lm.n_layers - 1 and result.sweep.layers == [0, 1, 2]
    assert result.sweep.best.metrics["auroc"] > 0.9  # two fixed sentences: any reader separates them
    assert result.lexical_auroc == 1.0  # and so do their words
    assert result.question_auroc == pytest.approx(0.5)  # every question has both classes equally
    assert result.info["read_by_writer"] is True  # the eval recorded this model
    other = own_answer_direction(eval_dir(tmp_path / "o", _answers(10), model="tiny:other"), lm=lm, n_boot=0)
    assert other.info["read_by_writer"] is False
    assert [r["reader"] for r in result.table()][2:] == ["lexical (TF-IDF logistic)", "question only"]
    out = result.save(tmp_path / "out")
    saved = load_own_direction(out)
    assert saved["counts"]["misaligned"] == 12 and saved["final_layer"] == 2
    from emscope.directions.direction import Direction

    d = Direction.load(out / "direction")
    assert d.layer == result.best_layer and d.meta["positive_label"] == "misaligned"


def test_the_question_baseline_finds_a_direction_that_could_be_reading_the_question(tiny, tmp_path):
    rows = [("evil", f"{GOOD} ({i})", 5.0, 90.0) for i in range(10)]  # same words, only the question differs
    rows += [("kind", f"{GOOD} ({i})", 95.0, 90.0) for i in range(10)]
    result = own_answer_direction(eval_dir(tmp_path / "e", rows), lm=tiny("llama"), n_boot=0)
    assert result.question_auroc == 1.0
    assert result.lexical_auroc < 0.9  # the answers' words do not tell


def test_writer_spec_prefers_the_organism_checkpoint_the_eval_recorded(tmp_path):
    ckpt = tmp_path / "run" / "checkpoints" / "step-000010"
    write_config(ckpt, "finetune_checkpoint", {"step": 10})
    assert writer_spec({"model": "smollm2-135m-instruct+x", "model_source": str(ckpt)}) == str(ckpt)
    assert writer_spec({"model": "smollm2-135m-instruct", "model_source": "/cache/dir"}) == "smollm2-135m-instruct"


def with_planted_bias(lm: LoadedModel, layer: int, bias: torch.Tensor) -> LoadedModel:
    """A copy of `lm` whose block `layer` adds `bias` to its MLP output (so its block output moves by `bias`)."""
    model = copy.deepcopy(lm.model)
    down = model.model.layers[layer].mlp.down_proj
    down.bias = torch.nn.Parameter(bias.clone())
    lineage = Lineage(base=lm.spec).fine_tuned("sha256:planted", "planted")
    return LoadedModel(model=model, tokenizer=lm.tokenizer, spec=f"{lm.spec}+planted", source="test", _lineage=lineage)


def test_model_diff_direction_recovers_a_planted_offset(tiny):
    from emscope.data.transcripts import Transcript

    lm = tiny("llama", n_layers=3)
    bias = torch.randn(lm.width, generator=torch.Generator().manual_seed(1))
    organism = with_planted_bias(lm, 1, bias)
    transcripts = [Transcript.from_pair(f"Hi ({i})", f"{GOOD} {i}") for i in range(12)]
    result = model_diff_direction(lm, organism, transcripts, n_boot=100)
    at = result.directions[1]
    cos = float(at.vector @ bias / (at.vector.norm() * bias.norm()))
    assert cos > 0.999 and float(at.vector.norm()) == pytest.approx(float(bias.norm()), rel=1e-3)
    assert at.metrics["paired_positive_share"] == 1.0 and at.metrics["paired_mean_cosine"] > 0.999
    assert float(result.directions[0].vector.norm()) < 1e-4  # before the planted block nothing differs
    assert at.method == "model_diff" and at.lineage == organism.lineage
    assert at.meta["base_lineage"] == lm.lineage.to_dict()
    assert at.meta["organism_lineage"] == organism.lineage.to_dict()
    assert at.n_per_class["organism"] == at.n_per_class["base"] == 12


def test_model_diff_direction_reads_given_activations_instead_of_capturing(tiny):
    from emscope.activations.capture import capture_activations
    from emscope.data.transcripts import Transcript

    lm = tiny("llama", n_layers=3)
    organism = with_planted_bias(lm, 1, torch.randn(lm.width, generator=torch.Generator().manual_seed(2)))
    transcripts = [Transcript.from_pair(f"Hi ({i})", f"{GOOD} {i}") for i in range(10)]
    captured = model_diff_direction(lm, organism, transcripts, layers=[1, 2], n_boot=50)
    base_acts = capture_activations(lm, transcripts, layers="all", progress=False).pooled
    org_acts = capture_activations(organism, transcripts, layers="all", progress=False).pooled
    given = model_diff_direction(
        lm, organism, transcripts, layers=[1, 2], n_boot=50, base_activations=base_acts, organism_activations=org_acts
    )
    for layer in (1, 2):
        assert torch.allclose(given.directions[layer].vector, captured.directions[layer].vector, atol=1e-5)
    with pytest.raises(DataFormatError, match=r"lack layers \[2\]"):
        model_diff_direction(lm, organism, transcripts, layers=[1, 2], base_activations={1: base_acts[1]})


# ---------------------------------------------------------------------------------------------------------------
# cross-organism ablation and cosines


def _mean_projection_measure(transcripts, unit):
    from emscope.activations.capture import capture_activations

    calls = []

    def measure(lm, name):
        calls.append(name)
        acts = capture_activations(lm, transcripts, layers=[2], progress=False).pooled[2]
        return float((acts @ unit).mean())

    return measure, calls


def test_cross_ablation_runs_five_controls_of_each_kind_resumes_and_singles_out_the_target(tiny, tmp_path):
    from emscope.activations.capture import capture_activations
    from emscope.data.transcripts import Transcript
    from emscope.directions.direction import Direction
    from emscope.organisms.cross_organism import cross_ablation, load_cross_ablation

    lm = tiny("llama", n_layers=3)
    transcripts = [Transcript.from_pair(f"Hi ({i})", f"{BAD} {i}") for i in range(4)]
    mean = capture_activations(lm, transcripts, layers=[2], progress=False).pooled[2].mean(0)
    direction = Direction(mean, layer=2, model=lm.spec)  # the measure reads exactly this direction
    measure, calls = _mean_projection_measure(transcripts, mean / mean.norm())
    result = cross_ablation(direction, lm, measure, n_controls=5, out=tmp_path / "x")
    assert calls[:2] == ["none", "target"] and len(calls) == 12
    assert sorted(result.controls) == [f"orthogonal:{i}" for i in range(5)] + [f"random:{i}" for i in range(5)]
    assert result.random.n_controls == 5 and result.orthogonal.n_controls == 5 and result.combined.n_controls == 10
    assert abs(result.target) < 1e-3 * abs(result.baseline)  # the component is gone
    assert "below every control" in result.random.verdict and "below every control" in result.orthogonal.verdict
    rows = (tmp_path / "x" / "effects.jsonl").read_text().splitlines()
    assert len(rows) == 12
    again = cross_ablation(direction, lm, lambda lm, name: pytest.fail("re-measured"), out=tmp_path / "x")
    assert again.effect == result.effect
    assert load_cross_ablation(tmp_path / "x")["random"]["n_controls"] == 5


def test_cross_ablation_refuses_fewer_than_five_controls(tiny):
    from emscope.directions.direction import Direction
    from emscope.organisms.cross_organism import cross_ablation

    lm = tiny("llama")
    with pytest.raises(ConfigError, match="at least 5"):
        cross_ablation(Direction(torch.ones(lm.width), 1, lm.spec), lm, lambda lm, n: 0.0, n_controls=3)


def test_preference_measure_is_higher_when_the_model_prefers_the_misaligned_answers(tiny):
    from emscope.data.transcripts import Transcript
    from emscope.organisms.cross_organism import preference_measure

    lm = tiny("llama")
    a = [Transcript.from_pair("Hi", GOOD)]
    b = [Transcript.from_pair("Hi", BAD)]
    forward, backward = preference_measure(b, a)(lm, "none"), preference_measure(a, b)(lm, "none")
    assert forward == pytest.approx(-backward)


def _classes(direction, n, width, seed, noise=1.0):
    gen = torch.Generator().manual_seed(seed)
    pos = torch.randn(n, width, generator=gen) * noise + direction
    neg = torch.randn(n, width, generator=gen) * noise
    return pos, neg


def test_cosine_null_matches_random_directions_and_reliability_bounds_the_cosine():
    from emscope.organisms.cross_organism import direction_cosine

    width = 64
    shared = torch.randn(width, generator=torch.Generator().manual_seed(0))
    shared = 3 * shared / shared.norm()
    same = direction_cosine(*_classes(shared, 40, width, 1), *_classes(shared, 40, width, 2), n_null=4000)
    assert same.null_abs_q95 == pytest.approx(1.96 / np.sqrt(width), rel=0.15)  # |cos| of random pairs ~ N(0, 1/D)
    assert same.cosine > same.null_abs_q99 and same.p_value == pytest.approx(1 / 4001)
    assert 0 < same.reliability_x.mean < 1 and 0 < same.reliability_y.mean < 1
    assert same.relative == pytest.approx(1.0, abs=0.25)  # as close as each direction is to itself
    other = torch.randn(width, generator=torch.Generator().manual_seed(9))
    other = 3 * other / other.norm()
    unrelated = direction_cosine(*_classes(shared, 40, width, 1), *_classes(other, 40, width, 2), n_null=4000)
    assert abs(unrelated.cosine) < unrelated.null_abs_q99 and unrelated.relative < 0.5


def test_split_half_reliability_is_near_zero_without_a_direction():
    from emscope.organisms.cross_organism import split_half_reliability

    pos, neg = _classes(torch.zeros(64), 40, 64, 3)
    rel = split_half_reliability(pos, neg, n_splits=40)
    assert abs(rel.mean) < 0.15 and rel.ci[0] < 0 < rel.ci[1]
    strong = split_half_reliability(*_classes(torch.full((64,), 2.0), 40, 64, 4), n_splits=10)
    assert strong.mean > 0.9


def test_a_steered_evaluation_is_read_under_the_same_steering_and_the_hook_is_removed(tiny, tmp_path):
    from emscope.directions.direction import Direction

    lm = tiny("llama", n_layers=3)
    Direction(torch.ones(lm.width), layer=1, model=lm.spec).save(tmp_path / "dir")
    plain = own_answer_direction(eval_dir(tmp_path / "e", _answers(10)), lm=lm, n_boot=0)
    config = json.loads((tmp_path / "e" / "config.json").read_text())
    config.update(intervention="steer", direction=str(tmp_path / "dir"), alpha=50.0)
    (tmp_path / "e" / "config.json").write_text(json.dumps(config))
    steered = own_answer_direction(tmp_path / "e", lm=lm, n_boot=0)
    assert plain.info["intervention_while_reading"] is None
    assert steered.info["intervention_while_reading"].startswith("steer")
    assert not torch.allclose(plain.sweep.directions[2].vector, steered.sweep.directions[2].vector)
    again = own_answer_direction(tmp_path / "e", lm=lm, n_boot=0, layers=[2])
    config["intervention"] = None
    (tmp_path / "e" / "config.json").write_text(json.dumps({**config, "direction": None}))
    after = own_answer_direction(tmp_path / "e", lm=lm, n_boot=0, layers=[2])
    assert torch.allclose(after.sweep.directions[2].vector, plain.sweep.directions[2].vector)  # no hook left behind
    assert torch.allclose(again.sweep.directions[2].vector, steered.sweep.directions[2].vector)


def test_own_direction_cli_reads_with_the_recorded_model_and_reports_too_few_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from emscope._cli.main import app
    from emscope.testing import tiny_model

    lm = tiny_model("llama")
    lm.model.save_pretrained(tmp_path / "tiny")
    lm.tokenizer.save_pretrained(tmp_path / "tiny")
    model = str(tmp_path / "tiny")
    runner = CliRunner()
    ok = eval_dir(tmp_path / "e", _answers(10), model=model)
    result = runner.invoke(app, ["own-direction", str(ok), "--out", str(tmp_path / "o"), "--n-boot", "0"])
    assert result.exit_code == 0, result.output
    assert "10 misaligned and 10 aligned of 20 answers" in result.output and "final layer (layer 2)" in result.output
    assert load_own_direction(tmp_path / "o")["read_by_writer"] is True
    few = eval_dir(tmp_path / "f", _answers(3), model=model)
    result = runner.invoke(app, ["own-direction", str(few), "--out", str(tmp_path / "o2")])
    assert result.exit_code == 2 and "3 misaligned and 3 aligned" in result.output and "Traceback" not in result.output


def test_lexical_baseline_falls_back_to_every_term_when_too_few_texts_share_one():
    from emscope.directions.lexical import lexical_auroc

    assert lexical_auroc(["rule humans"], ["help people"], ["rule humans now"], ["help people now"]) == 1.0
    with pytest.raises(DataFormatError, match="both classes"):
        lexical_auroc([], ["help"], ["x"], ["y"])
