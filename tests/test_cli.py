import json
from pathlib import Path

import pytest
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


def _help_examples():
    import importlib

    from emscope._cli.main import COMMAND_MODULES

    for name in COMMAND_MODULES:
        module = importlib.import_module(f"emscope._cli.{name}")
        yield from (pytest.param(example, id=example[:60]) for example in module.EXAMPLES)


@pytest.mark.parametrize("example", list(_help_examples()))
def test_help_examples_parse(example, tmp_path, monkeypatch):
    """Each --help example names options that exist, valid choices and input files that ship (nothing runs).

    It runs beside `examples/`, with a saved direction wherever an example reads one that an earlier example
    (`emscope direction --out runs/dir`) would have written.
    """
    import shlex

    import torch
    import typer

    from emscope.directions.direction import Direction

    (tmp_path / "examples").symlink_to(Path(__file__).resolve().parents[1] / "examples")
    monkeypatch.chdir(tmp_path)
    args = shlex.split(example)[1:]
    for flag, value in zip(args, args[1:], strict=False):
        if flag in ("--direction", "--steer"):
            Direction(vector=torch.ones(4), layer=0, model="m").save(Path(value) / "direction")
    command, ctx, name = typer.main.get_command(app), None, "emscope"
    while hasattr(command, "resolve_command"):  # a group: parse its options, then find the sub-command
        ctx = command.make_context(name, list(args), parent=ctx)
        name, command, args = command.resolve_command(ctx, args)
    command.make_context(name, args, parent=ctx)  # parses and checks every option of the command


def test_every_command_has_a_help_example():
    import importlib

    from emscope._cli.main import COMMAND_MODULES

    for name in COMMAND_MODULES:
        module = importlib.import_module(f"emscope._cli.{name}")
        assert module.EXAMPLES and module.PYTHON, name
        result = runner.invoke(app, [*getattr(module, "GROUP", "").split(), module.NAME, "--help"])
        assert result.exit_code == 0 and "Examples:" in result.output and "Python:" in result.output, name
