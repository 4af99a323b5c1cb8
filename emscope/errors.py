"""Typed errors: each says what was expected, what was found and how to fix it.

Every class also inherits the natural builtin, so `except ValueError` keeps working.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import TypeVar, overload

T = TypeVar("T")


class EmscopeError(Exception):
    """Base class of every error emscope raises on purpose."""


class ModelLoadError(EmscopeError, RuntimeError):
    """A model spec could not be resolved or loaded."""


class MissingDependencyError(EmscopeError, ImportError):
    """An optional package is needed; the message holds the exact `pip install`."""


class ArchitectureError(EmscopeError, TypeError):
    """The model's decoder blocks could not be found."""


class LayerIndexError(EmscopeError, IndexError):
    """A layer index outside the model's range."""


class DataFormatError(EmscopeError, ValueError):
    """Malformed input data (the message names the file and line)."""


class ChatTemplateError(EmscopeError, ValueError):
    """The tokenizer has no chat template, or a transcript cannot be rendered."""


class WidthMismatchError(EmscopeError, ValueError):
    """A vector or artifact made for a model of another width (or another model)."""


class ArtifactError(EmscopeError, ValueError):
    """A saved result directory is missing, of another kind, or of an unknown format version."""


class ModelMismatchError(EmscopeError, ValueError):
    """An artifact made for another model (same width or not) than the one it is used with."""


class ConfigError(EmscopeError, ValueError):
    """An option or setting with a value emscope does not accept (the message names the choices)."""


class NotSupportedError(EmscopeError, NotImplementedError):
    """Something emscope does not support yet."""


@overload
def lookup(table: Mapping[str, T], name: str, what: str) -> T: ...
@overload
def lookup(table: Sequence[str] | AbstractSet[str], name: str, what: str) -> str: ...
def lookup(table: Mapping[str, T] | Sequence[str] | AbstractSet[str], name: str, what: str) -> T | str:
    """``table[name]`` (or `name` itself when `table` is a plain collection of names).

    An unknown name raises `ConfigError` listing the choices and the closest one, e.g.
    ``unknown pool 'median'; choose from mean, last, max (did you mean 'mean'?)``.
    """
    if name in table:
        return table[name] if isinstance(table, Mapping) else name
    raise ConfigError(unknown_choice(name, (str(k) for k in table), what))


def unknown_choice(name: object, choices: Iterable[str], what: str) -> str:
    """The one-line message of `lookup`: the unknown name, the choices, and a did-you-mean when one is close."""
    choices = list(choices)
    close = difflib.get_close_matches(str(name), choices, n=1, cutoff=0.7)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {what} {name!r}; choose from {', '.join(choices)}{hint}"


def require(package: str, extra: str | None = None, pip_name: str | None = None) -> None:
    """Raise `MissingDependencyError` with the install command when `package` cannot be imported."""
    import importlib.util

    if importlib.util.find_spec(package) is None:
        hint = f"pip install 'emscope[{extra}]'" if extra else f"pip install {pip_name or package}"
        raise MissingDependencyError(f"this feature needs the package '{package}', which is not installed; fix: {hint}")
