"""Typed errors: each says what was expected, what was found and how to fix it.

Every class also inherits the natural builtin, so `except ValueError` keeps working.
"""

from __future__ import annotations


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


def require(package: str, extra: str | None = None, pip_name: str | None = None) -> None:
    """Raise `MissingDependencyError` with the install command when `package` cannot be imported."""
    import importlib.util

    if importlib.util.find_spec(package) is None:
        hint = f"pip install 'emscope[{extra}]'" if extra else f"pip install {pip_name or package}"
        raise MissingDependencyError(f"this feature needs the package '{package}', which is not installed; fix: {hint}")
