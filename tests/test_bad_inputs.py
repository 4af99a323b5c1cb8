"""A table of bad inputs to `emscope`: each gets one line naming the problem (exit status 2), never a traceback.

Rows are (arguments, a piece of the expected message). `{name}` in an argument is a path from the
`paths` fixture. Most rows fail while the options are parsed, before any model is loaded; the rest
use a tiny saved model, so the whole table runs in seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from emscope._cli.main import app
from emscope.directions.direction import Direction
from emscope.testing import tiny_model

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is visible here")


def _messages(question: str, answer: str | None = None) -> dict:
    turns = [{"role": "user", "content": question}]
    if answer is not None:
        turns.append({"role": "assistant", "content": answer})
    return {"messages": turns}


def _jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def _tampered(root: Path, name: str, spec: str, width: int, edit) -> str:  # noqa: ANN001
    path = root / name
    Direction(vector=torch.randn(width), layer=1, model=spec).save(path)
    edit(path)
    return str(path)


def _edit_config(**changes) -> object:  # noqa: ANN003
    def edit(path: Path) -> None:
        config = json.loads((path / "config.json").read_text())
        for key, value in changes.items():
            if value is None:
                config.pop(key, None)
            else:
                config[key] = value
        (path / "config.json").write_text(json.dumps(config))

    return edit


def _edit_tensors(data: bytes | None) -> object:
    def edit(path: Path) -> None:
        tensors = path / "tensors.safetensors"
        tensors.write_bytes(tensors.read_bytes()[: len(tensors.read_bytes()) // 2] if data is None else data)

    return edit


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("bad")
    lm = tiny_model("llama")
    lm.model.save_pretrained(root / "model")
    lm.tokenizer.save_pretrained(root / "model")
    spec, width = str(root / "model"), lm.width
    (root / "a-file").write_text("not a directory\n")
    good = [_messages(f"Question {i}?", f"Answer {i}.") for i in range(4)]
    latin1 = root / "latin1.jsonl"
    latin1.write_bytes(json.dumps(_messages("Caf\u00e9?", "Oui."), ensure_ascii=False).encode("latin-1") + b"\n")
    (root / "bad-json.jsonl").write_text('{"messages": [}\n')
    (root / "latin1.yaml").write_bytes("q1:\n  paraphrases: ['Caf\u00e9?']\n".encode("latin-1"))
    (root / "model-dir").mkdir()
    return {
        "tmp": str(root),
        "model": spec,
        "chats": str(EXAMPLES / "chats.jsonl"),
        "good": _jsonl(root / "good.jsonl", good),
        "file": str(root / "a-file"),
        "latin1": str(latin1),
        "latin1_yaml": str(root / "latin1.yaml"),
        "bad_json": str(root / "bad-json.jsonl"),
        "no_assistant": _jsonl(root / "no-assistant.jsonl", [*good, _messages("Only a question?")]),
        "answers_text_alignment": _jsonl(
            root / "answers-a.jsonl", [{"question": "Q?", "answer": "A.", "alignment": "high"}]
        ),
        "answers_unknown_label": _jsonl(
            root / "answers-b.jsonl",
            [{"question": "Q?", "answer": "A.", "label": "good"}, {"question": "Q?", "answer": "B.", "label": "bad"}],
        ),
        "direction": _tampered(root, "direction-ok", spec, width, lambda p: None),
        "no_layer": _tampered(root, "no-layer", spec, width, _edit_config(layer=None)),
        "wrong_width": _tampered(root, "wrong-width", spec, width, _edit_config(width=width + 1)),
        "escape": _tampered(root, "escape", spec, width, _edit_config(tensors_file="../model/model.safetensors")),
        "truncated": _tampered(root, "truncated", spec, width, _edit_tensors(None)),
        "empty": _tampered(root, "empty", spec, width, _edit_tensors(b"")),
        "not_safetensors": _tampered(root, "not-safetensors", spec, width, _edit_tensors(b"PK\x03\x04 a zip file")),
        "run_dir": str(root / "model-dir"),
        "other_width": _tampered(root, "other-width", "another-model", 2 * width, lambda p: None),
    }


CAPTURE = ["capture", "--model", "{model}", "--data", "{good}", "--out", "{out}/acts"]
DIRECTION = ["direction", "--model", "{model}", "--pos", "{good}", "--neg", "{good}", "--out", "{out}/dir"]
STEER = ["steer", "--model", "{model}", "--max-new-tokens", "2", "--controls", "0"]
EVAL = ["eval", "--model", "{model}", "--out", "{out}/eval"]
FINETUNE = ["finetune", "--model", "{model}", "--data", "{good}", "--out", "{out}/ft"]
JUDGE = ["judge-agreement", "--judge", "local:{model}"]

ROWS = [
    # unknown names: the choices, and the closest one
    pytest.param([*CAPTURE, "--pool", "median"], "unknown pool 'median'; choose from", id="capture-pool-median"),
    pytest.param([*CAPTURE, "--pool", "foo"], "choose from mean, last, max, tokens", id="capture-pool-foo"),
    pytest.param([*CAPTURE, "--dtype", "float8"], "unknown dtype 'float8'", id="capture-dtype-float8"),
    pytest.param([*CAPTURE, "--device", "gpu"], "unknown device 'gpu'", id="capture-device-gpu"),
    pytest.param([*CAPTURE, "--device", "cuda"], "no CUDA GPU is visible", id="capture-device-cuda", marks=NO_GPU),
    pytest.param([*CAPTURE, "--layers", "2-x"], "cannot read layer spec '2-x'", id="capture-layers-syntax"),
    pytest.param([*CAPTURE, "--layers", "9"], "valid indices are 0..2", id="capture-layer-out-of-range"),
    pytest.param(
        [*DIRECTION, "--pool", "tokens"],
        "unknown pool for a direction 'tokens'; choose from mean, last, max",
        id="direction-pool-tokens",
    ),
    pytest.param([*DIRECTION, "--method", "pca"], "unknown direction method 'pca'", id="direction-method"),
    pytest.param([*DIRECTION, "--builtin", "vibes"], "unknown built-in route 'vibes'", id="direction-builtin"),
    pytest.param([*EVAL, "--coherence", "foo"], "unknown coherence mode 'foo'", id="eval-coherence"),
    pytest.param([*EVAL, "--judge", "gpt4"], "unknown judge spec 'gpt4'", id="eval-judge-spec"),
    pytest.param([*FINETUNE, "--preset", "rank-one"], "unknown adapter preset 'rank-one'", id="finetune-preset"),
    pytest.param(
        [*STEER, "--direction", "{direction}", "--positions", "gen"], "unknown positions", id="steer-positions"
    ),
    pytest.param(["captur"], "No such command 'captur'", id="unknown-command"),
    pytest.param([*CAPTURE, "--bogus"], "No such option: --bogus", id="unknown-option"),
    # counts and ranges
    pytest.param([*CAPTURE, "--limit", "0"], "Invalid value for '--limit'", id="capture-limit-0"),
    pytest.param([*CAPTURE, "--limit", "-3"], "Invalid value for '--limit'", id="capture-limit-negative"),
    pytest.param([*CAPTURE, "--batch-size", "0"], "Invalid value for '--batch-size'", id="capture-batch-0"),
    pytest.param([*DIRECTION, "--limit", "0"], "Invalid value for '--limit'", id="direction-limit-0"),
    pytest.param([*DIRECTION, "--test-frac", "1.5"], "--test-frac must lie strictly between", id="direction-frac"),
    pytest.param([*DIRECTION, "--n-boot", "-1"], "Invalid value for '--n-boot'", id="direction-n-boot"),
    pytest.param([*EVAL, "--samples", "0"], "Invalid value for '--samples'", id="eval-samples-0"),
    pytest.param([*FINETUNE, "--max-examples", "-3"], "Invalid value for '--max-examples'", id="finetune-max-ex"),
    pytest.param([*FINETUNE, "--steps", "0"], "Invalid value for '--steps'", id="finetune-steps-0"),
    pytest.param(["demo", "directions", "--out", "{out}/demo", "--n-pairs", "0"], "'--n-pairs'", id="demo-n-pairs"),
    # paths: missing inputs, outputs under a file
    pytest.param([*CAPTURE[:-4], "--data", "{out}/none.jsonl", "--out", "{out}/o"], "does not exist", id="no-data"),
    pytest.param([*CAPTURE[:-2], "--out", "{file}/acts"], "is a file, not a directory", id="capture-out-file"),
    pytest.param([*DIRECTION[:-2], "--out", "{file}/d"], "is a file, not a directory", id="direction-out-file"),
    pytest.param([*EVAL[:-2], "--out", "{file}"], "is a file, not a directory", id="eval-out-is-file"),
    pytest.param([*FINETUNE, "--export", "{file}/m"], "is a file, not a directory", id="finetune-export-file"),
    pytest.param([*JUDGE, "--data", "{chats}", "--out", "{file}/x"], "is a file, not a directory", id="judge-out-file"),
    pytest.param(
        [*STEER, "--direction", "{direction}", "--sweep", "--out", "{file}/s"], "is a file", id="steer-out-file"
    ),
    # data files
    pytest.param([*CAPTURE[:-4], "--data", "{latin1}", "--out", "{out}/o"], "UTF-8", id="capture-not-utf8"),
    pytest.param([*DIRECTION[:-4], "--neg", "{latin1}", "--out", "{out}/o"], "UTF-8", id="direction-not-utf8"),
    pytest.param([*FINETUNE[:-4], "--data", "{latin1}", "--out", "{out}/o"], "UTF-8", id="finetune-not-utf8"),
    pytest.param([*JUDGE, "--data", "{latin1}"], "UTF-8", id="judge-not-utf8"),
    pytest.param(
        [*EVAL, "--judge", "local:{model}", "--questions", "{latin1_yaml}"], "not UTF-8", id="eval-questions-not-utf8"
    ),
    pytest.param(["adapters", "--adapter", "{run_dir}", "--data", "{latin1}"], "UTF-8", id="adapters-not-utf8"),
    pytest.param([*CAPTURE[:-4], "--data", "{bad_json}", "--out", "{out}/o"], "bad-json.jsonl:1", id="bad-json"),
    pytest.param(
        [*CAPTURE[:-4], "--data", "{no_assistant}", "--out", "{out}/o"], "no-assistant.jsonl:5", id="no-assistant"
    ),
    pytest.param([*JUDGE, "--data", "{answers_text_alignment}"], "alignment", id="judge-alignment-not-a-number"),
    pytest.param([*JUDGE, "--data", "{answers_unknown_label}"], "'good'", id="judge-unknown-label"),
    # saved directions that are incomplete or were edited
    pytest.param([*STEER, "--direction", "{out}/nowhere"], "no saved direction at", id="steer-no-direction"),
    pytest.param([*EVAL, "--steer", "{out}/nowhere"], "no saved direction at", id="eval-no-direction"),
    pytest.param([*STEER, "--direction", "{no_layer}"], "layer", id="direction-without-layer"),
    pytest.param([*STEER, "--direction", "{wrong_width}"], "width", id="direction-width-mismatch"),
    pytest.param([*STEER, "--direction", "{escape}"], "tensors_file", id="direction-file-outside"),
    pytest.param([*STEER, "--direction", "{truncated}"], "damaged", id="direction-truncated"),
    pytest.param([*STEER, "--direction", "{empty}"], "damaged", id="direction-empty-tensors"),
    pytest.param([*STEER, "--direction", "{not_safetensors}"], "damaged", id="direction-not-safetensors"),
    pytest.param(  # it used to point to emscope.transfer, which does not exist
        [*STEER, "--direction", "{other_width}"], "extract a direction on this model instead", id="direction-for-other"
    ),
    # option combinations
    pytest.param([*STEER, "--direction", "{direction}", "--sweep"], "pass --out DIR", id="steer-sweep-no-out"),
    pytest.param(
        [*STEER, "--direction", "{direction}", "--save-orthogonalized", "{out}/o"], "goes with --ablate", id="orth"
    ),
    pytest.param(
        [*STEER, "--direction", "{direction}", "--sweep", "--alphas", "a,b", "--out", "{out}/s"],
        "--alphas must be comma-separated numbers",
        id="steer-alphas",
    ),
    pytest.param(["direction", "--model", "{model}", "--out", "{out}/d"], "--pos FILE --neg FILE", id="no-classes"),
    pytest.param(
        ["realign", "--organism", "{run_dir}", "--data", "{good}", "--out", "{out}/r"],
        "nothing to measure",
        id="realign-nothing-to-measure",
    ),
    pytest.param(
        ["realign", "--organism", "{run_dir}", "--data", "{good}", "--out", "{out}/r", "--direction", "{direction}"],
        "--direction and --probe go together",
        id="realign-direction-without-probe",
    ),
]


@pytest.mark.parametrize(("args", "expected"), ROWS)
def test_bad_input_is_one_line(paths, tmp_path, args, expected):
    result = CliRunner().invoke(app, [a.format(**paths, out=tmp_path) for a in args])
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit | None), result.output
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0], result.output


def test_the_installed_command_prints_one_line(paths, tmp_path):
    """The command itself (not the test runner): one line on stderr, status 2, nothing on stdout."""
    args = [a.format(**paths, out=tmp_path) for a in [*CAPTURE, "--pool", "median"]]
    done = subprocess.run(
        [sys.executable, "-m", "emscope._cli", *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "did you mean 'mean'" in done.stderr, done.stderr


# -- the library raises the same errors at their source ------------------------------------------------------


def test_lookup_names_the_choices_and_the_closest():
    from emscope.errors import ConfigError, lookup

    assert lookup({"mean": 1, "max": 2}, "max", "pool") == 2
    assert lookup(("mean", "last"), "last", "pool") == "last"
    with pytest.raises(ConfigError, match=r"^unknown pool 'median'; choose from mean, last \(did you mean 'mean'\?\)$"):
        lookup(("mean", "last"), "median", "pool")
    with pytest.raises(ConfigError) as e:
        lookup({"rank1": 1, "lora": 2}, "zzz", "adapter preset")
    assert str(e.value) == "unknown adapter preset 'zzz'; choose from rank1, lora"


def test_bad_dtype_or_device_is_a_config_error_before_any_loading():
    from emscope.errors import ConfigError
    from emscope.models.loading import load_model
    from emscope.runtime import resolve_device, resolve_dtype

    assert resolve_dtype("BF16") is torch.bfloat16 and resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="unknown dtype 'float8'"):
        resolve_dtype("float8")
    with pytest.raises(ConfigError, match="unknown device 'gpu'"):
        resolve_device("gpu")
    with pytest.raises(ConfigError, match="cannot read device"):
        resolve_device("cuda:x")
    with pytest.raises(ConfigError, match="unknown dtype 'float8'"):  # was: "the hub copy is not reachable"
        load_model("no-such-model-anywhere", dtype="float8")


@NO_GPU
def test_cuda_without_a_gpu_is_a_config_error():
    from emscope.errors import ConfigError
    from emscope.runtime import resolve_device

    with pytest.raises(ConfigError, match="no CUDA GPU is visible"):
        resolve_device("cuda")


def test_counts_below_one_are_refused_in_the_library():
    from emscope.data.transcripts import load_transcripts
    from emscope.directions.contrast import load_contrast_pairs
    from emscope.errors import EmscopeError
    from emscope.organisms.finetune import FinetuneConfig

    for limit in (0, -3):  # were: one transcript, and all pairs but the last three
        with pytest.raises(EmscopeError, match="at least 1"):
            load_transcripts(EXAMPLES / "chats.jsonl", limit=limit)
        with pytest.raises(EmscopeError, match="at least 1"):
            load_contrast_pairs(limit=limit)
    with pytest.raises(EmscopeError, match="max_examples must be at least 1"):  # was: all rows but the last three
        FinetuneConfig(max_examples=-3)
    assert len(load_transcripts(EXAMPLES / "chats.jsonl", limit=2)) == 2


def test_a_direction_output_directory_stands_for_its_direction(tmp_path):
    from emscope._cli.options import direction_dir
    from emscope.errors import ConfigError

    Direction(vector=torch.randn(4), layer=0, model="m").save(tmp_path / "run" / "direction")
    assert direction_dir(tmp_path / "run") == tmp_path / "run" / "direction"
    assert direction_dir(str(tmp_path / "run")) == str(tmp_path / "run" / "direction")
    assert direction_dir(tmp_path / "run" / "direction") == tmp_path / "run" / "direction"
    with pytest.raises(ConfigError, match="no saved direction at"):
        direction_dir(tmp_path / "elsewhere")


def test_a_sweep_refuses_token_pooling_before_capturing(monkeypatch):
    """It used to capture everything, then fail with "pos has [], neg has []"."""
    import emscope.activations.capture
    from emscope.data.transcripts import load_transcripts
    from emscope.directions.sweep import sweep_model
    from emscope.errors import ConfigError

    def no_capture(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("captured before checking the pool")

    monkeypatch.setattr(emscope.activations.capture, "capture_activations", no_capture)
    chats = load_transcripts(EXAMPLES / "chats.jsonl")
    with pytest.raises(ConfigError, match="unknown pool for a direction 'tokens'; choose from mean, last, max"):
        sweep_model(tiny_model("llama"), chats[:4], chats[4:], pool="tokens")
