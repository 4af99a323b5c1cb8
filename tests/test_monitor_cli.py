"""`emscope traits fit` and `emscope drift` end to end on a tiny model saved to disk and fake runs."""

from __future__ import annotations

import json

import pytest
import torch
from monitor_fakes import write_run, write_traits
from typer.testing import CliRunner

from emscope._cli.main import app
from emscope.monitor.study import find_runs
from emscope.monitor.traits import TraitSet

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()
TYPES = {"insecure": "harmful", "steered": "harmful", "secure": "benign", "plain": "benign"}


def test_fit_then_drift_with_the_detector_writes_every_table(tmp_path):
    from emscope.models.loading import load_model
    from emscope.testing import tiny_model

    tiny = tiny_model("gpt2")
    tiny.model.save_pretrained(tmp_path / "tiny")
    tiny.tokenizer.save_pretrained(tmp_path / "tiny")
    root = write_traits(tmp_path / "traits")
    result = runner.invoke(app, ["traits", "fit", "--model", str(tmp_path / "tiny"), "--trait-dir", str(root),
                                 "--traits", "malice,formality", "--layer", "1", "--n-boot", "10",
                                 "--out", str(tmp_path / "ts")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "malice: held-out-topic AUROC" in result.output
    traits = TraitSet.load(tmp_path / "ts")
    lm = load_model(str(tmp_path / "tiny"))
    for i, (kind, label) in enumerate(TYPES.items()):
        for seed in range(2):
            sign = 1.0 if label == "harmful" else -1.0
            shift = {s: sign * s / 5 * traits.directions[0] + 0.01 * i for s in (5, 10)}
            write_run(tmp_path / "runs" / f"{kind}-{seed}", lm, steps=(0, 5, 10), shift=shift, layer=1,
                      perturbation=kind, label=label)  # fmt: skip
    (tmp_path / "runs" / "unfinished" / "checkpoints").mkdir(parents=True)  # no zoo_run.json: skipped
    assert len(find_runs([tmp_path / "runs"])) == 8
    result = runner.invoke(app, ["drift", "--traits", str(tmp_path / "ts"), "--runs", str(tmp_path / "runs"),
                                 "--probes", str(root / "probe_set.jsonl"), "--detector", "--n-boot", "20",
                                 "--out", str(tmp_path / "d")])  # fmt: skip
    assert result.exit_code == 0, result.output
    out = tmp_path / "d"
    assert (out / "runs" / "insecure-0" / "drift.csv").is_file() and (out / "axis.png").is_file()
    assert (out / "detector" / "table.csv").is_file() and (out / "detector" / "detector" / "config.json").is_file()
    summary = json.loads((out / "summary.json").read_text())
    monitor = next(r for r in summary["detector"] if r["features"] == "trait_drift")
    assert monitor["auroc"] == 1.0 and len(summary["runs"]) == 8
    assert "trait_drift: held-out-type AUROC 1.000" in result.output


def test_drift_on_a_path_that_is_not_a_run_is_one_line(tmp_path):
    d = torch.ones(1, 4)
    TraitSet(("malice",), 0, d, "tiny").save(tmp_path / "ts", plot=False)
    (tmp_path / "file").write_text("x")
    probes = write_traits(tmp_path / "t") / "probe_set.jsonl"
    result = runner.invoke(app, ["drift", "--traits", str(tmp_path / "ts"), "--runs", str(tmp_path / "file"),
                                 "--probes", str(probes), "--out", str(tmp_path / "o")])  # fmt: skip
    assert result.exit_code != 0 and "neither a run directory" in result.output and "Traceback" not in result.output


def test_runs_of_the_same_name_in_two_zoos_get_distinct_directories(tmp_path):
    from emscope.monitor.study import unique_names

    a, b, c = tmp_path / "Z" / "runs" / "x", tmp_path / "Z2" / "runs" / "x", tmp_path / "Z2" / "runs" / "y"
    assert unique_names([a, b, c]) == ["Z__x", "Z2__x", "y"]
