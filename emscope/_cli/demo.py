"""`emscope demo directions`: the reading-route sweep and steering against controls, written as docs-ready results."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from emscope._cli import options as o
from emscope._cli.direction import OptionalMethod, OptionalPool, PerCell, ProtocolOption
from emscope.demos.directions import DemoConfig

GROUP = "demo"
NAME = "directions"
EXAMPLES = ("emscope demo directions --model smollm2-135m-instruct --out runs/demo",)
PYTHON = "emscope.demos.directions.run_reading_demo(DemoConfig(model='smollm2-135m-instruct'), 'runs/demo')"


def command(
    out: Annotated[Path, o.out_dir("Output directory (sweep/, direction/, steering/, summary.md).")],
    model: o.Model = DemoConfig.model,
    method: OptionalMethod = None,
    pool: OptionalPool = None,
    protocol: ProtocolOption = None,
    per_cell: PerCell = None,
    layers: o.Layers = DemoConfig.layers,
    n_pairs: Annotated[
        int | None, o.count("--n-pairs", "With --protocol random_split: only the first N built-in contrast pairs.")
    ] = None,
    seed: o.Seed = DemoConfig.seed,
    steer: Annotated[
        bool, typer.Option("--steer/--no-steer", help="Also steer along +/- the direction vs controls.")
    ] = DemoConfig.steer,
    alpha: Annotated[
        list[float] | None,
        typer.Option(
            "--alpha", help="Steering strength as a multiple of the mean-difference norm (repeat; default -2 2)."
        ),
    ] = None,
    n_controls: Annotated[
        int, o.count("--n-controls", "Control directions per kind (random, orthogonal).")
    ] = DemoConfig.n_controls,
    n_questions: Annotated[
        int, o.count("--n-questions", "Held-out questions answered under steering.")
    ] = DemoConfig.n_steer_questions,
    max_new_tokens: o.MaxNewTokens = DemoConfig.max_new_tokens,
) -> None:
    """Layer, method and pooling chosen across the corpus's domains on a real model, then steering against controls."""
    from emscope.demos.directions import run_reading_demo

    config = DemoConfig(
        model=model,
        method=method or DemoConfig.method,
        protocol=protocol or DemoConfig.protocol,
        per_cell=per_cell,
        methods=(method,) if method else DemoConfig.methods,
        pools=(pool,) if pool else DemoConfig.pools,
        layers=layers,
        n_pairs=n_pairs,
        seed=seed,
        steer=steer,
        alpha_multiples=tuple(alpha) if alpha else DemoConfig.alpha_multiples,
        n_controls=n_controls,
        n_steer_questions=n_questions,
        max_new_tokens=max_new_tokens,
    )
    path = run_reading_demo(config, out)
    typer.echo(f"wrote {path / 'summary.md'}")
