"""Shared CLI plumbing: one error path, the help epilog, and configs built from the parsed options.

Every error on user input reaches the user as one line on stderr and exit status 2: an `EmscopeError`
raised anywhere in a command (or in an option's check), and click's own usage errors (a missing option,
a value out of range). Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NoReturn, TypeVar

import typer
from typer.core import TyperGroup

from emscope.errors import EmscopeError

C = TypeVar("C")
# click's exceptions, or the copy of click that newer typer versions vendor (typer._click)
_click_exceptions: Any = importlib.import_module(typer.BadParameter.__module__)
UsageError: type[Exception] = _click_exceptions.UsageError
NoArgsIsHelpError: Any = getattr(_click_exceptions, "NoArgsIsHelpError", ())  # click >= 8.2: help, not an error
EXIT_USER_ERROR = 2


def fail(message: str) -> NoReturn:
    """Print ``error: message`` as one line on stderr and exit with status 2."""
    typer.secho(f"error: {' '.join(message.split())}", fg=typer.colors.RED, err=True)
    raise typer.Exit(EXIT_USER_ERROR)


def _usage_line(e: Any) -> str:
    where = f" (see '{e.ctx.command_path} --help')" if getattr(e, "ctx", None) is not None else ""
    return e.format_message().rstrip(".") + where


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """Turn an `EmscopeError` or a usage error raised inside into `fail` (one line, exit status 2)."""
    try:
        yield
    except NoArgsIsHelpError:
        raise
    except UsageError as e:
        fail(_usage_line(e))
    except EmscopeError as e:
        fail(str(e))


class OneLineErrors(TyperGroup):
    """The `emscope` command group: user-input errors of every sub-command become one line, exit status 2."""

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        with one_line_errors():  # errors in the options of `emscope` itself
            return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx: Any) -> Any:
        with one_line_errors():  # a sub-command's options, then its body
            return super().invoke(ctx)


def epilog(examples: Sequence[str], python: str) -> str:
    """A command's ``--help`` epilog: runnable examples, then the Python equivalent."""
    lines = "\n\n".join(f"  {e}" for e in examples)
    return f"Examples:\n\n{lines}\n\nPython:  {python}"


def config_from(cls: type[C], values: Mapping[str, Any], **overrides: Any) -> C:
    """An instance of the dataclass `cls` from the command's parameters: the fields it has, plus `overrides`."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]  # cls is a dataclass
    return cls(**{**{k: v for k, v in values.items() if k in names}, **overrides})
