"""The `emscope` command: a thin layer over the library; each command lives in its own module.

A command module holds ``NAME``, ``EXAMPLES`` (runnable command lines), ``PYTHON`` (the library call it
wraps) and the function ``command``; ``GROUP`` puts it under a sub-command (``emscope demo directions``).
"""

from __future__ import annotations

import importlib
import logging
from types import ModuleType

import typer

from emscope._cli.common import OneLineErrors, epilog

app = typer.Typer(
    name="emscope",
    cls=OneLineErrors,
    help=(
        "Find, measure and remove emergent misalignment in open-weight chat models, in activation space.\n\n"
        "Start with:  emscope capture --model smollm2-135m-instruct --data examples/chats.jsonl --out runs/acts"
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

COMMAND_MODULES = (
    "models",
    "capture",
    "direction",
    "steer",
    "demo",
    "eval",
    "compare_evals",
    "read_em",
    "judge_agreement",
    "finetune",
    "realign",
    "own_direction",
    "adapters",
    "monitors",
    "sae",
    "sae_inspect",
    "diff",
    "zoo",
    "transfer",
    "traits",
    "drift",
    "monitor",
)
GROUP_HELP = {
    "demo": "End-to-end demonstrations on the embedded models.",
    "sae": "Sparse autoencoders: train, inspect.",
    "traits": "Trait sets for the drift monitor: fit.",
}


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details.")) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


def register(module: ModuleType, groups: dict[str, typer.Typer]) -> None:
    """Add one command module to the app (see the module docstring for what it holds)."""
    target = app
    group = getattr(module, "GROUP", None)
    if group is not None:
        if group not in groups:
            groups[group] = typer.Typer(help=GROUP_HELP.get(group), no_args_is_help=True)
            app.add_typer(groups[group], name=group)
        target = groups[group]
    target.command(module.NAME, epilog=epilog(module.EXAMPLES, module.PYTHON))(module.command)


_groups: dict[str, typer.Typer] = {}
for _name in COMMAND_MODULES:
    register(importlib.import_module(f"emscope._cli.{_name}"), _groups)
