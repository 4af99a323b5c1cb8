"""`emscope models`: the embedded models and the conversion cache."""

from __future__ import annotations

from typing import Annotated

import typer

NAME = "models"
EXAMPLES = ("emscope models", "emscope models --load smollm2-135m-instruct")
PYTHON = "emscope.models.embedded.EMBEDDED_MODELS; emscope.load_model('smollm2-135m-instruct').provenance()"


def command(
    load: Annotated[
        str | None, typer.Option("--load", help="Load (and cache) this model spec, then describe it.")
    ] = None,
) -> None:
    """List the models that ship inside PyPI packages, or load one and describe it."""
    from emscope.errors import ModelLoadError
    from emscope.models.embedded import DEFAULT_MODEL, EMBEDDED_MODELS, embedded_parts
    from emscope.models.loading import load_model
    from emscope.runtime import cache_root

    if load:
        lm = load_model(load)
        for key, value in lm.provenance().items():
            typer.echo(f"{key:15} {value}")
        return
    for name, m in EMBEDDED_MODELS.items():
        try:
            embedded_parts(name)
            state = "installed"
        except ModelLoadError:
            state = f"not installed ({m.pip_command})"
        default = " (default)" if name == DEFAULT_MODEL else ""
        typer.echo(f"{name}{default}: {m.hf_id}, {state}")
    typer.echo(f"cache: {cache_root()}")
