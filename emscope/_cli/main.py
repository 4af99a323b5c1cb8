"""The `emscope` command: a thin layer over the library; each command lives in its own module."""

from __future__ import annotations

import importlib
import importlib.util
import logging

import typer

app = typer.Typer(
    name="emscope",
    help=(
        "Find, measure and remove emergent misalignment in open-weight chat models, in activation space.\n\n"
        "Start with:  emscope capture --model smollm2-135m-instruct --data FILE.jsonl --out runs/acts"
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# One module per command under emscope/_cli/, each with `register(app)`.
COMMAND_MODULES = ("models", "capture", "direction", "steer", "demo", "eval", "judge_agreement", "finetune", "adapters")


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details.")) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


for _name in COMMAND_MODULES:
    if importlib.util.find_spec(f"emscope._cli.{_name}") is not None:
        importlib.import_module(f"emscope._cli.{_name}").register(app)
