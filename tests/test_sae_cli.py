"""`emscope sae train`, `emscope sae inspect` and `emscope diff` on a tiny model, end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from emscope._cli.main import app

pytestmark = pytest.mark.usefixtures("one_thread")
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from emscope.testing import tiny_model

    lm = tiny_model("llama", n_layers=3, width=32)
    path = tmp_path_factory.mktemp("tiny") / "model"
    lm.model.save_pretrained(path)
    lm.tokenizer.save_pretrained(path)
    return str(path)


def run(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_train_inspect_and_diff(tiny_dir, tmp_path):
    from emscope.artifacts import load_result

    out = tmp_path / "sae"
    text = run(
        "sae", "train", "--model", tiny_dir, "--data", "builtin", "--corpus-pairs", "4", "--limit", "40",
        "--layers", "-1", "--epochs", "1", "--k", "4", "--expansion-factor", "2", "--batch-size", "64", "--out", str(out),
    )  # fmt: skip
    assert "held-out" in text and "recovered" in text
    sae = load_result(out / "sae")
    assert sae.layer == 2 and sae.n_latents == 64 and {"heldout", "loss"} <= set(sae.metrics)
    text = run("sae", "inspect", str(out), "--model", tiny_dir, "--data", str(EXAMPLES / "chats.jsonl"), "--top", "2")
    assert text.count("latent ") >= 1
    diff_dir = tmp_path / "diff"
    text = run(
        "diff", "--base", tiny_dir, "--model", tiny_dir, "--sae", str(out), "--data", str(EXAMPLES / "chats.jsonl"),
        "--out", str(diff_dir), "--top", "3", "--n-boot", "100",
    )  # fmt: skip
    diff = load_result(diff_dir)
    assert float(diff.diff.abs().max()) == 0.0  # the same model on both sides: nothing changes
    assert (diff_dir / "top.md").is_file() and "| rank | latent |" in text


def test_bad_arguments_fail_in_one_line(tiny_dir, tmp_path):
    result = CliRunner().invoke(
        app, ["sae", "train", "--model", tiny_dir, "--layers", "0,1", "--out", str(tmp_path / "x"), "--limit", "4"]
    )
    assert result.exit_code == 2 and "one layer" in result.output
    result = CliRunner().invoke(app, ["sae", "train", "--activation", "relu", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "relu" in result.output
