import json

from typer.testing import CliRunner

from emscope._cli.main import app
from emscope.activations.capture import load_activations
from emscope.testing import tiny_model

runner = CliRunner()


def _tiny_dir(tmp_path):
    lm = tiny_model("llama")
    lm.model.save_pretrained(tmp_path / "tiny")
    lm.tokenizer.save_pretrained(tmp_path / "tiny")
    return str(tmp_path / "tiny")


def test_help_teaches():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "capture" in result.output
    result = runner.invoke(app, ["capture", "--help"])
    assert result.exit_code == 0 and "Example" in result.output


def test_capture_command_writes_a_result(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(
        "\n".join(
            json.dumps({"messages": [{"role": "user", "content": f"Q{i}"}, {"role": "assistant", "content": f"A{i}"}]})
            for i in range(3)
        )
    )
    result = runner.invoke(
        app,
        [
            "capture",
            "--model",
            _tiny_dir(tmp_path),
            "--data",
            str(data),
            "--layers",
            "0,2",
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code == 0, result.output
    acts = load_activations(tmp_path / "o")
    assert acts.layers == [0, 2] and acts.pooled[0].shape == (3, 64)


def test_cli_errors_are_one_line_with_exit_2(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]}\n')
    result = runner.invoke(
        app,
        ["capture", "--model", _tiny_dir(tmp_path), "--data", str(data), "--layers", "9", "--out", str(tmp_path / "o")],
    )
    assert result.exit_code == 2
    assert "valid indices are 0..2" in result.output and "Traceback" not in result.output
