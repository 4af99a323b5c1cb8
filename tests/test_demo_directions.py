"""The reading-route demonstration, end to end on a tiny model (structure only)."""

from __future__ import annotations

import json
import logging
from dataclasses import replace

from emscope.demos.directions import DemoConfig, regenerate_command, run_reading_demo
from emscope.directions.cross_domain import CrossDomainResult
from emscope.directions.direction import Direction
from emscope.directions.sweep import SweepResult


def test_demo_chooses_across_domains_and_ships_that_direction(tiny, tmp_path, caplog):
    lm = tiny("llama")
    config = DemoConfig(
        model=lm.spec,
        per_cell=1,
        methods=("diff_in_means",),  # logistic fits are covered in tests/test_cross_domain.py
        n_boot=20,
        n_controls=1,
        n_steer_questions=2,
        max_new_tokens=3,
        n_samples_shown=1,
        alpha_multiples=(1.0,),
    )
    out = run_reading_demo(config, tmp_path / "demo", lm=lm)
    sweep = CrossDomainResult.load(out / "sweep")
    assert sweep.config["n_pairs"] == 36 and sweep.config["n_domains"] == 12 and sweep.layers == [0, 1, 2]
    assert len(sweep.rows) == 3 * 2  # layers x default pools
    shipped = Direction.load(out / "direction")
    assert (shipped.layer, shipped.method) == (sweep.chosen.layer, sweep.chosen.method)
    assert shipped.token_selection == f"response_{sweep.chosen.pool}"
    assert shipped.metrics["protocol"] == "cross_domain" and "within_split" in shipped.metrics
    summary = (out / "summary.md").read_text()
    assert f"chosen {sweep.chosen.describe()}" in summary and "within-distribution split AUROC" in summary
    assert "| fit \\ score |" in summary and "| alpha multiple |" in summary
    assert "--per-cell 1" in regenerate_command(json.loads((out / "config.json").read_text())["demo"], out)
    for name in ("layers.png", "domains.png", "styles.png", "domains.csv", "styles.csv"):
        assert (out / "sweep" / name).is_file(), name
    assert any((out / "capture").rglob("chunk-*.safetensors"))

    stamp = (out / "sweep" / "directions.safetensors").stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="emscope.demos.directions"):
        run_reading_demo(replace(config, steer=False), out, lm=lm)
    assert "reusing the layer sweep" in caplog.text
    assert (out / "sweep" / "directions.safetensors").stat().st_mtime_ns == stamp


def test_demo_random_split_writes_every_result_and_a_summary(tiny, tmp_path, caplog):
    lm = tiny("llama")
    config = DemoConfig(
        model=lm.spec,
        protocol="random_split",
        n_pairs=6,
        n_boot=20,
        n_controls=1,
        n_steer_questions=2,
        max_new_tokens=3,
        n_samples_shown=1,
        alpha_multiples=(1.0,),
    )
    out = run_reading_demo(config, tmp_path / "demo", lm=lm)
    sweep = SweepResult.load(out / "sweep")
    assert sweep.config["n_pos"] == 6 and sweep.layers == [0, 1, 2]
    assert Direction.load(out / "direction").layer == sweep.best_layer
    steering = json.loads((out / "steering" / "config.json").read_text())
    assert set(steering["values"]) == {"target", "random:0", "orthogonal:0"}
    assert len(steering["values"]["target"]) == 1
    samples = (out / "steering" / "samples.jsonl").read_text().splitlines()
    assert [json.loads(s)["alpha_multiple"] for s in samples] == [0.0, 1.0]
    summary = (out / "summary.md").read_text()
    assert f"best layer {sweep.best_layer}" in summary and "| alpha multiple |" in summary
    assert (out / "steering.png").is_file() and (out / "sweep" / "sweep.png").is_file()

    stamp = (out / "sweep" / "directions.safetensors").stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="emscope.demos.directions"):
        run_reading_demo(replace(config, steer=False, alpha_multiples=(2.0,)), out, lm=lm)
    assert "reusing the layer sweep" in caplog.text
    assert (out / "sweep" / "directions.safetensors").stat().st_mtime_ns == stamp


def test_the_demo_ships_a_direction_it_can_steer_with():
    from emscope.demos.directions import DemoConfig

    # Measured on SmolLM2: the logistic probe's direction detects best but steers no further than controls.
    assert DemoConfig().methods == ("diff_in_means",)
