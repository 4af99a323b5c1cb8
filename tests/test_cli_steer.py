"""`emscope steer` on a tiny saved model: answers with controls, a sweep, the help examples and friendly errors."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from emscope._cli.main import app
from emscope.directions.direction import Direction


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    from emscope.testing import tiny_model

    root = tmp_path_factory.mktemp("cli")
    lm = tiny_model("llama")
    lm.model.save_pretrained(root / "model")
    lm.tokenizer.save_pretrained(root / "model")
    spec = str(root / "model")
    Direction(vector=torch.randn(lm.width), layer=1, model=spec).save(root / "dir")
    return root, spec


def test_help_has_examples():
    result = CliRunner().invoke(app, ["steer", "--help"])
    assert result.exit_code == 0
    assert "--ablate" in result.output and "emscope steer --direction" in result.output


def test_steer_prints_plain_target_and_controls(saved):
    root, spec = saved
    args = [
        "steer",
        "--model",
        spec,
        "--direction",
        str(root / "dir"),
        "--alpha",
        "4",
        "--prompt",
        "hello",
        "--controls",
        "1",
        "--max-new-tokens",
        "3",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    for label in ("--- plain:", "--- steer target:", "--- steer random:0:", "--- steer orthogonal:0:"):
        assert label in result.output
    result = CliRunner().invoke(app, [*args, "--ablate"])
    assert result.exit_code == 0 and "--- ablate target:" in result.output


def test_sweep_writes_csv_and_plot(saved, tmp_path):
    root, spec = saved
    out = tmp_path / "dose"
    args = [
        "steer",
        "--model",
        spec,
        "--direction",
        str(root / "dir"),
        "--sweep",
        "--alphas=0,4",
        "--prompt",
        "hi",
        "--controls",
        "1",
        "--max-new-tokens",
        "3",
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (out / "dose_response.csv").is_file() and (out / "dose_response.png").is_file()
    assert "alpha=+4:" in result.output


def test_wrong_layer_is_a_friendly_error(saved):
    root, spec = saved
    result = CliRunner().invoke(
        app, ["steer", "--model", spec, "--direction", str(root / "dir"), "--layers", "9", "--max-new-tokens", "2"]
    )
    assert result.exit_code == 2
    assert "out of range" in result.output


def test_the_output_directory_of_emscope_direction_is_accepted(saved, tmp_path):
    """`--direction runs/dir` (as in the help examples) finds runs/dir/direction; it used to fail."""
    import shutil

    root, spec = saved
    shutil.copytree(root / "dir", tmp_path / "run" / "direction")
    args = ["steer", "--model", spec, "--direction", str(tmp_path / "run"), "--prompt", "hi", "--controls", "0"]
    result = CliRunner().invoke(app, [*args, "--max-new-tokens", "2"])
    assert result.exit_code == 0, result.output
    assert "--- steer target:" in result.output
