"""`emscope demo`: end-to-end demonstrations on the embedded models, written as docs-ready results."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from emscope._cli.common import friendly_errors

demo_app = typer.Typer(help="End-to-end demonstrations on the embedded models.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(demo_app, name="demo")
    demo_app.command(
        "directions",
        epilog=(
            "Example:  emscope demo directions --model smollm2-135m-instruct --out docs/results/smollm2-135m-instruct\n\n"
            "Python:   emscope.demos.directions.run_reading_demo(DemoConfig(model='smollm2-135m-instruct'), 'out/')"
        ),
    )(directions)


@friendly_errors
def directions(
    out: Annotated[Path, typer.Option("--out", help="Output directory (sweep/, direction/, steering/, summary.md).")],
    model: Annotated[
        str, typer.Option("--model", help="Embedded name, .gguf file, local dir or hub id.")
    ] = "smollm2-135m-instruct",
    method: Annotated[
        str, typer.Option("--method", help="diff_in_means | logistic_probe | pca_of_paired_differences.")
    ] = "diff_in_means",
    layers: Annotated[str, typer.Option("--layers", help="Layers to sweep: 'all', '0,4,8' or '2-5'.")] = "all",
    n_pairs: Annotated[
        int | None, typer.Option("--n-pairs", help="Use only the first N built-in contrast pairs.")
    ] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    steer: Annotated[
        bool, typer.Option("--steer/--no-steer", help="Also steer along +/- the direction vs controls.")
    ] = True,
    alpha: Annotated[
        list[float] | None,
        typer.Option(
            "--alpha", help="Steering strength as a multiple of the mean-difference norm (repeat; default -2 2)."
        ),
    ] = None,
    n_controls: Annotated[
        int, typer.Option("--n-controls", min=1, help="Control directions per kind (random, orthogonal).")
    ] = 3,
    n_questions: Annotated[
        int, typer.Option("--n-questions", min=1, help="Held-out questions answered under steering.")
    ] = 8,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1)] = 32,
) -> None:
    """Reading-route layer sweep on a real model, then steering along the best direction against controls."""
    from emscope.demos.directions import DemoConfig, run_reading_demo

    config = DemoConfig(
        model=model,
        method=method,
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
