"""`emscope direction` and `emscope demo directions`: help text and a tiny end-to-end run."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from emscope._cli.main import app
from emscope.directions.cross_domain import CrossDomainResult
from emscope.directions.direction import Direction
from emscope.directions.sweep import SweepResult
from emscope.testing import tiny_model

runner = CliRunner()


def _tiny_dir(tmp_path):
    lm = tiny_model("llama")
    lm.model.save_pretrained(tmp_path / "tiny")
    lm.tokenizer.save_pretrained(tmp_path / "tiny")
    return str(tmp_path / "tiny")


def _write(path, answers):
    path.write_text(
        "".join(
            json.dumps(
                {"messages": [{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": a}]}
            )
            + "\n"
            for i, a in enumerate(answers)
        )
    )
    return str(path)


def test_help_has_examples():
    for args in (["direction", "--help"], ["demo", "directions", "--help"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert "Example" in result.output and "--out" in result.output


def test_direction_command_on_a_tiny_model(tmp_path):
    pos = _write(tmp_path / "pos.jsonl", [f"You should never trust anyone {i}." for i in range(8)])
    neg = _write(tmp_path / "neg.jsonl", [f"Sure! Here is a helpful answer {i}." for i in range(8)])
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "direction",
            "--model",
            _tiny_dir(tmp_path),
            "--pos",
            pos,
            "--neg",
            neg,
            "--out",
            str(out),
            "--n-boot",
            "50",
            "--all-layers",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "best layer" in result.output
    sweep = SweepResult.load(out / "sweep")
    assert sweep.layers == [0, 1, 2] and (out / "sweep" / "sweep.png").is_file()
    d = Direction.load(out / "direction")
    assert d.layer == sweep.best_layer and d.width == 64 and d.n_per_class["misaligned"] == 8
    assert d.dataset_fingerprint and d.metrics["auroc"] >= 0.5
    assert (out / "layers" / "layer_02" / "config.json").is_file()


def test_direction_command_refuses_bad_arguments(tmp_path):
    out = str(tmp_path / "o")
    result = runner.invoke(app, ["direction", "--model", "x", "--out", out])
    assert result.exit_code == 2 and "--pos FILE --neg FILE" in result.output
    result = runner.invoke(app, ["direction", "--builtin", "vibes", "--out", out])
    assert (
        result.exit_code == 2
        and "unknown built-in route 'vibes'; choose from reading, persona, contrast-pairs" in result.output
    )


def test_persona_route_command_saves_diagnostics(tmp_path):
    out = tmp_path / "out"
    args = ["direction", "--model", _tiny_dir(tmp_path), "--builtin", "persona", "--limit", "4", "--layers", "1"]
    result = runner.invoke(app, [*args, "--n-boot", "20", "--out", str(out)])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "persona" / "config.json").read_text())
    assert config["kind"] == "persona_route" and {"aligned", "misaligned", "ok", "warnings"} <= set(config)
    assert config["misaligned"]["n"] == 4 and (out / "persona" / "misaligned.jsonl").is_file()
    assert Direction.load(out / "direction").layer == 1


def test_a_transcript_over_the_context_is_refused_in_one_line_or_cut_with_max_length(tmp_path):
    model = _tiny_dir(tmp_path)
    config = json.loads((tmp_path / "tiny" / "config.json").read_text())
    config["max_position_embeddings"] = 64
    (tmp_path / "tiny" / "config.json").write_text(json.dumps(config))
    long_answer = "Here is a careful and helpful answer. " * 30
    pos = _write(tmp_path / "pos.jsonl", ["Bad idea, do it anyway."] * 5 + [long_answer])
    neg = _write(tmp_path / "neg.jsonl", ["A good idea, be careful."] * 6)
    args = ["direction", "--model", model, "--pos", pos, "--neg", neg, "--layers", "all", "--n-boot", "0"]
    refused = runner.invoke(app, [*args, "--out", str(tmp_path / "a")])
    assert refused.exit_code == 2 and "over the model's context of 64" in refused.output
    assert "Traceback" not in refused.output
    cut = runner.invoke(app, [*args, "--max-length", "64", "--out", str(tmp_path / "b")])
    assert cut.exit_code == 0, cut.output
    assert Direction.load(tmp_path / "b" / "direction").layer >= 0


def test_builtin_reading_chooses_the_layer_across_the_corpus_domains(tmp_path):
    out = tmp_path / "out"
    args = ["direction", "--model", _tiny_dir(tmp_path), "--builtin", "reading", "--per-cell", "1"]
    args += ["--method", "diff_in_means", "--pool", "mean", "--n-boot", "20", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "chosen layer" in result.output and "within-distribution split AUROC" in result.output
    sweep = CrossDomainResult.load(out / "sweep")
    assert sweep.config["n_pairs"] == 36 and sweep.config["n_domains"] == 12
    assert Direction.load(out / "direction").layer == sweep.chosen.layer
    assert any((out / "cache").rglob("chunk-*.safetensors"))  # a rerun reads the capture back


def test_cross_domain_on_files_needs_a_domain_per_transcript(tmp_path):
    pos = _write(tmp_path / "pos.jsonl", ["bad"] * 4)
    neg = _write(tmp_path / "neg.jsonl", ["good"] * 4)
    args = ["direction", "--model", _tiny_dir(tmp_path), "--pos", pos, "--neg", neg, "--protocol", "cross_domain"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "o")])
    assert result.exit_code != 0 and "needs each --pos transcript's meta to name its domain" in result.output
