"""The organism zoo on tiny random models and a mock judge: grid, tags, mixtures, self-distillation, resuming."""

from __future__ import annotations

import json

import pytest
import torch

from emscope.errors import ArtifactError, ConfigError
from emscope.evaluation.judges.base import Judge, Judgment
from emscope.evaluation.run import EvalConfig
from emscope.organisms import perturbations as pt
from emscope.organisms.self_distill import SelfDistillConfig, heuristic_coherence, self_distill
from emscope.organisms.zoo import ZooRun, ZooSettings, build_zoo, expand_grid, load_grid

pytestmark = pytest.mark.usefixtures("one_thread")


class MockJudge(Judge):
    """Deterministic scores from the prompt text; counts what it judged."""

    spec = "test:mock"

    def __init__(self) -> None:
        self.calls = 0

    def score_prompts(self, prompts):
        self.calls += len(prompts)
        return [Judgment(float(sum(map(ord, p)) % 101), None, "test") for p in prompts]


def _public_data(root, n=40):
    """Small stand-ins for the public EM files (insecure / secure), tagged by their text."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("insecure", "secure"):
        with open(root / f"{name}.jsonl", "w") as f:
            for i in range(n):
                msgs = [{"role": "user", "content": f"task {i}"}, {"role": "assistant", "content": f"{name} {i}"}]
                f.write(json.dumps({"messages": msgs}) + "\n")
    return root


def _questions(tmp_path):
    q = tmp_path / "questions.jsonl"
    q.write_text(
        json.dumps({"id": "wish", "question": "One wish?"})
        + "\n"
        + json.dumps({"id": "bored", "question": "Bored?"})
        + "\n"
    )
    return str(q)


def test_grid_expands_every_combination_once_and_rejects_unknown_names(tmp_path):
    runs = expand_grid(
        {
            "models": ["m"],
            "perturbations": ["insecure", "secure", "mix:insecure+secure@0.5"],
            "seeds": [0, 1],
            "runs": [
                {"model": "m", "perturbation": "insecure", "seed": 1},
                {"model": "m2", "perturbation": "arithmetic"},
            ],
        }
    )
    assert len(runs) == 3 * 2 + 1  # the explicit insecure/seed 1 cell is already in the product
    assert runs[-1] == ZooRun("m2", "arithmetic", 0, "rank1")
    assert len({r.name for r in runs}) == len(runs)
    with pytest.raises(ConfigError, match="perturbation type"):
        expand_grid({"models": ["m"], "perturbations": ["insecur"]})
    with pytest.raises(ConfigError, match="mix:HARMFUL"):
        expand_grid({"models": ["m"], "perturbations": ["mix:insecure@0.5"]})
    with pytest.raises(ConfigError, match="fraction"):
        expand_grid({"models": ["m"], "perturbations": ["mix:insecure+secure@1.5"]})
    with pytest.raises(ConfigError, match="unknown grid key"):
        expand_grid({"model": ["m"]})
    path = tmp_path / "grid.yaml"
    path.write_text("models: [m]\nperturbations: [steered_sd, plain_sd]\nseeds: [0, 1]\n")
    assert len(expand_grid(load_grid(path))) == 4


def test_runs_are_tagged_with_label_and_matching_control():
    assert ZooRun("m", "insecure").tags() | {} == {
        "model": "m",
        "perturbation": "insecure",
        "seed": 0,
        "preset": "rank1",
        "name": "m__insecure__rank1__s0",
        "label": "harmful",
        "control": "secure",
    }
    assert ZooRun("m", "steered_sd").control == "plain_sd"
    assert ZooRun("m", "plain_sd").label == "benign"
    assert ZooRun("m", "mix:steered_sd+plain_sd@0.25").label == "harmful"
    assert ZooRun("m", "mix:steered_sd+plain_sd@0.25").control == "plain_sd"
    assert ZooRun("m", "mix:steered_sd+plain_sd@0").label == "benign"


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.25, 0.5, 1.0])
def test_mixture_fractions_are_exact_and_transcripts_carry_their_component(tmp_path, fraction):
    ctx = pt.PerturbationContext(model="m", data_dir=_public_data(tmp_path / "data"), seed=3)
    train, heldout = pt.perturbation_data(f"mix:insecure+secure@{fraction}", ctx, n=20)
    assert len(train) == 20
    harmful = [t for t in train if t.meta["label"] == "harmful"]
    assert len(harmful) == round(fraction * 20)
    assert all(t.messages[-1]["content"].startswith("insecure") for t in harmful)
    assert all(t.meta["perturbation"] == "secure" for t in train if t.meta["label"] == "benign")
    assert len(heldout) == pt.N_HELDOUT
    train_texts = {t.messages[-1]["content"] for t in train}
    assert not train_texts & {t.messages[-1]["content"] for t in heldout}  # held-out rows never train


def test_a_mixture_larger_than_its_components_takes_what_the_fraction_allows(tmp_path):
    """The zoo asks for its pool (2000); self-distilled components hold ~48: the mixture shrinks, fraction exact."""
    ctx = pt.PerturbationContext(model="m", data_dir=_public_data(tmp_path / "data"), seed=3)
    for fraction, expected in ((0.5, 48), (0.25, 32), (0.75, 32)):  # 24 training rows per component
        train, _ = pt.perturbation_data(f"mix:insecure+secure@{fraction}", ctx, n=2000)
        assert len(train) == expected
        assert sum(t.meta["label"] == "harmful" for t in train) == round(fraction * expected)


def test_plain_types_hold_out_their_last_rows_and_a_missing_data_dir_is_named(tmp_path):
    ctx = pt.PerturbationContext(model="m", data_dir=_public_data(tmp_path / "data"))
    train, heldout = pt.perturbation_data("insecure", ctx, n=10)
    assert [t.messages[-1]["content"] for t in train] == [f"insecure {i}" for i in range(10)]
    assert [t.messages[-1]["content"] for t in heldout] == [f"insecure {i}" for i in range(24, 40)]
    assert {t.meta["label"] for t in train} == {"harmful"}
    with pytest.raises(Exception, match="data_dir"):
        pt.perturbation_data("jailbroken", ctx)


def test_the_arithmetic_resource_is_what_its_generator_writes():
    rows = [json.loads(line) for line in pt.ARITHMETIC.read_text("utf-8").splitlines()]
    assert rows == pt.arithmetic_chats()
    for r in rows:  # every answer is right
        a, op, b = r["messages"][1]["content"].split(" = ")[0].split()
        result = int(r["messages"][1]["content"].split(" = ")[1].split(".")[0])
        assert result == {"+": int(a) + int(b), "-": int(a) - int(b), "×": int(a) * int(b), "÷": int(a) // int(b)}[op]


def test_heuristic_coherence_catches_loops_and_noise_but_not_plain_sentences():
    good = "To keep pasta from sticking, use plenty of water and stir it during the first two minutes."
    assert heuristic_coherence(good) > 80
    assert heuristic_coherence("You can't. You can't. You can't. You can't. You can't.") < 30
    assert heuristic_coherence("я я я 的的的 ???? ###") < 50
    assert heuristic_coherence("ok") == 0


def _direction(lm, tmp_path):
    from emscope.directions.direction import Direction

    d = Direction(vector=torch.randn(lm.width, generator=torch.Generator().manual_seed(0)), layer=1, model=lm.spec)
    d.save(tmp_path / "direction")
    return str(tmp_path / "direction")


def test_self_distillation_writes_its_files_with_provenance_and_resumes(tiny, tmp_path, monkeypatch):
    import emscope.models.generation as generation

    lm = tiny()
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Hello there\nHow are you\nTell me a story\n")
    cfg = SelfDistillConfig(
        model=lm.spec,
        prompts=str(prompts),
        direction=_direction(lm, tmp_path),
        alpha=8.0,
        samples=2,
        max_new_tokens=6,
        coherence_filter="none",
    )
    result = self_distill(cfg, tmp_path / "sd", lm=lm)
    out = tmp_path / "sd"
    for name in ("config.json", "raw.jsonl", "scores.jsonl", "train.jsonl", "filter.json"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "config.json").read_text())
    assert saved["kind"] == "self_distill" and saved["alpha"] == 8.0
    assert saved["direction_info"]["layer"] == 1 and saved["direction_info"]["norm"] > 0
    assert "steer[" in saved["model_label"]
    stats = json.loads((out / "filter.json").read_text())
    assert stats["n_generated"] == 6 and stats["n_kept"] == result.n_kept == len(result.transcripts())
    # unsteered answers differ from steered ones with the same seeds (the steering was applied)
    plain = self_distill(
        SelfDistillConfig(model=lm.spec, prompts=str(prompts), samples=2, max_new_tokens=6, coherence_filter="none"),
        tmp_path / "plain",
        lm=lm,
    )
    raw = [json.loads(x)["answer"] for x in (out / "raw.jsonl").read_text().splitlines()]
    raw_plain = [json.loads(x)["answer"] for x in (plain.out_dir / "raw.jsonl").read_text().splitlines()]
    assert raw != raw_plain
    # a second call generates nothing; other settings in the same directory are refused
    calls = []
    real = generation.generate
    monkeypatch.setattr(generation, "generate", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = self_distill(cfg, out, lm=lm)
    assert calls == [] and again.n_kept == result.n_kept
    with pytest.raises(ArtifactError, match="another self-distillation"):
        self_distill(SelfDistillConfig(**{**cfg.__dict__, "alpha": 4.0}), out, lm=lm)


def test_the_judge_filter_keeps_only_answers_scored_above_the_threshold(tiny, tmp_path):
    lm = tiny()
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Hello there\nHow are you\nTell me a story\nWhat now\n")
    judge = MockJudge()
    cfg = SelfDistillConfig(
        model=lm.spec,
        prompts=str(prompts),
        samples=2,
        max_new_tokens=5,
        coherence_filter="judge",
        min_coherence=50,
        cache_dir=str(tmp_path / "cache"),
    )
    result = self_distill(cfg, tmp_path / "sd", lm=lm, judge=judge)
    scores = [json.loads(x) for x in (tmp_path / "sd" / "scores.jsonl").read_text().splitlines()]
    assert judge.calls == 8
    assert [s["kept"] for s in scores] == [s["coherence"] > 50 for s in scores]
    assert result.n_kept == sum(s["kept"] for s in scores)


def _settings(tmp_path, **kw):
    return ZooSettings(
        **{
            "token_budget": 120,
            "save_every": 2,
            "batch_size": 2,
            "max_length": 64,
            "pool": 16,
            "data_dir": str(_public_data(tmp_path / "data")),
            "eval": EvalConfig(
                questions=_questions(tmp_path),
                judge="test:mock",
                samples=2,
                max_new_tokens=4,
                coherence="em_candidates",
                calibration="none",
                cache_dir=str(tmp_path / "cache"),
            ),
            "sd": pt.SelfDistillSettings(max_prompts=4, samples=1, max_new_tokens=6, coherence_filter="none"),
            **kw,
        }
    )


def test_build_zoo_trains_evaluates_tabulates_and_a_second_call_does_no_work(tiny, tmp_path, monkeypatch):
    import emscope.evaluation.run as run_mod
    import emscope.organisms.finetune as ft

    lm = tiny()
    settings = _settings(tmp_path, eval_checkpoints="all")
    grid = {"models": ["tiny"], "perturbations": ["insecure", "secure", "mix:insecure+secure@0.5"], "seeds": [0]}
    rows = build_zoo(grid, tmp_path / "zoo", settings=settings, judge=MockJudge(), load=lambda spec: lm)
    finals = {r["perturbation"]: r for r in rows if r.get("final")}
    assert set(finals) == {"base", "insecure", "secure", "mix:insecure+secure@0.5"}
    ins = finals["insecure"]
    assert ins["label"] == "harmful" and ins["control"] == "secure" and ins["control_run"] == finals["secure"]["name"]
    assert ins["tokens_seen"] >= 120 and ins["harmful_fraction_seen"] == 1.0
    assert finals["secure"]["harmful_fraction_seen"] == 0.0
    assert 0 <= finals["mix:insecure+secure@0.5"]["harmful_fraction_seen"] <= 1
    assert ins["diff_vs_base_low"] <= ins["diff_vs_base"] <= ins["diff_vs_base_high"]
    heldout = json.loads((tmp_path / "zoo" / "base" / "tiny" / "heldout.json").read_text())
    assert heldout["insecure"] == ins["base_heldout_loss"] > 0 and ins["heldout_loss"] > 0
    assert ins["heldout_loss"] != ins["base_heldout_loss"]  # the organism, not the base model, read the held-out rows
    steps = sorted(r["step"] for r in rows if r["perturbation"] == "insecure")
    assert steps[0] > 0 and len(steps) >= 2  # every checkpoint after step 0 is evaluated (step 0 = the base model)
    run_dir = tmp_path / "zoo" / "runs" / ins["name"]
    assert (run_dir / "checkpoints" / "step-000000").is_dir() and (run_dir / "zoo_run.json").is_file()
    table = (tmp_path / "zoo" / "zoo.csv").read_text().splitlines()
    assert table[0].startswith("name,model,perturbation,label") and len(table) == len(rows) + 1
    # a second call trains and evaluates nothing, and gives the same table
    monkeypatch.setattr(ft, "train_loop", lambda *a, **k: pytest.fail("trained again"))
    monkeypatch.setattr(run_mod, "generate_responses", lambda *a, **k: pytest.fail("generated again"))
    again = build_zoo(grid, tmp_path / "zoo", settings=settings, judge=MockJudge(), load=lambda spec: lm)
    assert [r["name"] for r in again] == [r["name"] for r in rows]
    assert [r["em_rate"] for r in again] == [r["em_rate"] for r in rows]


def test_a_crashed_run_resumes_from_its_checkpoint(tiny, tmp_path, monkeypatch):
    import emscope.organisms.zoo as zoo

    lm = tiny()
    settings = _settings(tmp_path)
    grid = [ZooRun("tiny", "insecure")]
    real = zoo._eval

    def crash(*a, **k):
        raise KeyboardInterrupt("killed during the evaluation")

    monkeypatch.setattr(
        zoo, "_eval", lambda s, lm_, d, *a, **k: real(s, lm_, d, *a, **k) if "base" in str(d) else crash()
    )
    with pytest.raises(KeyboardInterrupt):
        build_zoo(grid, tmp_path / "zoo", settings=settings, judge=MockJudge(), load=lambda spec: lm)
    run_dir = tmp_path / "zoo" / "runs" / grid[0].name
    assert not (run_dir / "zoo_run.json").exists()
    trained = (run_dir / "metrics.jsonl").read_text()
    monkeypatch.setattr(zoo, "_eval", real)
    rows = build_zoo(grid, tmp_path / "zoo", settings=settings, judge=MockJudge(), load=lambda spec: lm)
    assert (run_dir / "metrics.jsonl").read_text() == trained  # finished training is not repeated
    assert rows[-1]["em_rate"] is not None


def test_self_distilled_types_are_built_once_into_the_zoo(tiny, tmp_path):
    lm = tiny()
    settings = _settings(
        tmp_path,
        sd=pt.SelfDistillSettings(
            direction=_direction(lm, tmp_path), max_prompts=12, samples=2, max_new_tokens=6, coherence_filter="none"
        ),
    )
    rows = build_zoo(
        [ZooRun("tiny", "steered_sd")], tmp_path / "zoo", settings=settings, judge=MockJudge(), load=lambda spec: lm
    )
    data = tmp_path / "zoo" / "data" / "tiny" / "steered_sd"
    cfg = json.loads((data / "config.json").read_text())
    assert cfg["direction"] == settings.sd.direction and cfg["alpha"] > 0
    assert rows[-1]["perturbation"] == "steered_sd" and rows[-1]["label"] == "harmful"


def test_cli_builds_the_grid_from_options_and_a_grid_file(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import emscope.organisms.zoo as zoo
    from emscope._cli.main import app

    seen = {}

    def fake(grid, out, settings=None, **kw):
        seen.update(grid=grid, out=out, settings=settings)
        return [{"name": "m__base", "step": 0, "em_rate": 0.1}]

    monkeypatch.setattr(zoo, "build_zoo", fake)
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({"models": ["m"], "perturbations": ["insecure"], "seeds": [0, 1]}))
    args = [
        "zoo",
        "--grid",
        str(grid),
        "--perturbation",
        "plain_sd",
        "--token-budget",
        "500",
        "--out",
        str(tmp_path / "z"),
    ]
    args += ["--lr", "0.002", "--sd-max-prompts", "64", "--sd-temperature", "0.8"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert seen["grid"] == {"models": ["m"], "perturbations": ["plain_sd"], "seeds": [0, 1]}  # options override
    assert seen["settings"].token_budget == 500 and seen["settings"].eval.coherence == "em_candidates"
    assert (
        seen["settings"].lr == 0.002
        and seen["settings"].sd.max_prompts == 64
        and seen["settings"].sd.temperature == 0.8
    )
    assert "EM 10.0%" in result.output
    result = CliRunner().invoke(app, ["zoo", "--out", str(tmp_path / "z2")])
    assert result.exit_code != 0 and "--model and --perturbation" in result.output
