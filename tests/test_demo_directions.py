"""The reading-route demonstration, end to end on a tiny model (structure only)."""

from __future__ import annotations

import json
import logging
from dataclasses import replace

from emscope.demos.directions import DemoConfig, run_reading_demo
from emscope.directions.direction import Direction
from emscope.directions.sweep import SweepResult


def test_demo_writes_every_result_and_a_summary(tiny, tmp_path, caplog):
    lm = tiny("llama")
    config = DemoConfig(
        model=lm.spec,
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
