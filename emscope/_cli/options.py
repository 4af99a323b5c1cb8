"""Options shared by the commands: one definition each, with choices and defaults taken from the library.

Each option is an `Annotated` type used as ``model: Model = DEFAULT_MODEL``, or made by a small factory
where only the help text differs (``out: Annotated[Path, out_dir("...")]``). Values are checked while
the command line is parsed, so a bad one fails at once, as one line, before any model is loaded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any

import typer

from emscope.activations.capture import POOL_CHOICES, POOLERS
from emscope.artifacts import CONFIG_NAME
from emscope.directions.extract import METHODS
from emscope.errors import ConfigError, lookup
from emscope.models.architecture import resolve_layers
from emscope.models.embedded import DEFAULT_MODEL
from emscope.runtime import resolve_device, resolve_dtype

__all__ = ["DEFAULT_MODEL"]  # re-exported: every command's --model default

# -- checks run while parsing (each returns the value, or raises an EmscopeError) ------------------------


def choice(choices: Iterable[str], what: str) -> Callable[[str | None], str | None]:
    """A check that the value is one of `choices` (unknown: the choices and a did-you-mean)."""
    names = tuple(choices)

    def check(value: str | None) -> str | None:
        return value if value is None else lookup(names, value, what)

    return check


def check_dtype(value: str) -> str:
    resolve_dtype(value)
    return value


def check_device(value: str) -> str:
    resolve_device(value)
    return value


def check_layers(value: str | None) -> str | None:
    """The syntax of a layer spec; the range is checked against the model once it is loaded."""
    if value is not None and value.strip().lower() != "all":
        resolve_layers(value, 1_000_000)
    return value


def check_out(param: typer.CallbackParam, value: Path | None) -> Path | None:
    """An output directory must not be a file or lie under one (checked before any compute)."""
    if value is None:
        return None
    for p in (value, *value.parents):
        if p.is_dir():
            break
        if p.exists():
            raise ConfigError(f"{_flag(param)} {value}: {p} is a file, not a directory; choose another path")
    return value


def check_fraction(param: typer.CallbackParam, value: float) -> float:
    if not 0.0 < value < 1.0:
        raise ConfigError(f"{_flag(param)} must lie strictly between 0 and 1, got {value}")
    return value


def direction_dir(value: Path | str | None) -> Any:
    """A saved Direction, or the output directory of `emscope direction` (then its ``direction/``)."""
    if value is None:
        return None
    path = Path(value)
    if not path.exists():
        raise ConfigError(f"no saved direction at {path}: `emscope direction --out DIR` writes one to DIR/direction")
    if not (path / CONFIG_NAME).is_file() and (path / "direction" / CONFIG_NAME).is_file():
        path = path / "direction"
    return path if isinstance(value, Path) else str(path)


def _flag(param: typer.CallbackParam) -> str:
    return param.opts[0] if param.opts else str(param.name)


# -- factories: the same check, a help text of the command's own ---------------------------------------


def out_dir(help: str, flag: str = "--out") -> Any:
    """An output directory option that refuses a path that is, or lies under, an existing file."""
    return typer.Option(flag, help=help, callback=check_out)


def data_file(help: str, flag: str = "--data") -> Any:
    """An input file that must exist (checked before any model is loaded)."""
    return typer.Option(flag, help=help, exists=True, dir_okay=False)


def count(flag: str, help: str, minimum: int = 1) -> Any:
    """A whole number of things: at least `minimum` (1 unless said)."""
    return typer.Option(flag, help=help, min=minimum)


# -- options that read the same in every command -----------------------------------------------------------

Model = Annotated[
    str,
    typer.Option("--model", help="Embedded name, .gguf file, local directory, fine-tuning run or hub id."),
]
Layers = Annotated[
    str,
    typer.Option(
        "--layers", help="'all', '12', '-1', '0,4,8' or '2-5' (block outputs, 0-based).", callback=check_layers
    ),
]
Method = Annotated[
    str, typer.Option("--method", help=" | ".join(METHODS) + ".", callback=choice(METHODS, "direction method"))
]
CapturePool = Annotated[
    str,
    typer.Option(
        "--pool",
        help=" | ".join(POOLERS) + " over the selected tokens (--token-selection), or tokens (keep every one).",
        callback=choice(POOL_CHOICES, "pool"),
    ),
]
PooledPool = Annotated[
    str,
    typer.Option(
        "--pool",
        help="Pooling over the answer tokens: " + " | ".join(POOLERS) + ".",
        callback=choice(POOLERS, "pool for a direction"),
    ),
]
Dtype = Annotated[
    str,
    typer.Option("--dtype", help="Model dtype: float32 (use on CPU), bfloat16 or float16.", callback=check_dtype),
]
Device = Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:N, mps or auto.", callback=check_device)]
Seed = Annotated[int, typer.Option("--seed", help="Random seed (sampling, splits, controls).")]
Limit = Annotated[int | None, count("--limit", "Use only the first N transcripts.")]
BatchSize = Annotated[int, count("--batch-size", "Transcripts per forward pass.")]
MaxLength = Annotated[int | None, count("--max-length", "Cut transcripts to this many tokens.")]
MaxNewTokens = Annotated[int, count("--max-new-tokens", "Tokens generated per answer, at most.")]
Judge = Annotated[
    str,
    typer.Option(
        "--judge",
        help="probe:builtin (alignment and coherence probes on Qwen2.5-Coder-1.5B, offline) | "
        "local:MODEL | openai:MODEL[@URL] | http://HOST/v1[#MODEL] | probe:DIR. API keys only from $OPENAI_API_KEY.",
    ),
]
Calibration = Annotated[str | None, typer.Option("--calibration", help="Judge calibration JSON, or 'none'.")]
Questions = Annotated[
    str, typer.Option("--questions", help="A .yaml/.jsonl file of questions, builtin or builtin:spillover.")
]
DirectionDir = Annotated[
    Path,
    typer.Option(
        "--direction",
        help="A saved direction (emscope direction ... --out DIR writes it to DIR/direction; DIR also works).",
        callback=direction_dir,
    ),
]
