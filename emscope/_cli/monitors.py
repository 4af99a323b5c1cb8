"""`emscope monitors`: monitoring methods side by side on the labelled corpus, held out by domain."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from emscope._cli import options as o
from emscope.evaluation.judges.factory import DEFAULT_OFFLINE_JUDGE

NAME = "monitors"
DEFAULT_MONITORS = "raw-mean-dim,raw-mean-logistic,raw-last-logistic,raw-max-logistic,prompted-logistic,zero-shot"
EXAMPLES = (
    "emscope monitors --list",
    "emscope monitors --model smollm2-135m-instruct --per-cell 5 --out runs/monitors",
    "emscope monitors --model smollm2-135m-instruct --monitors raw-mean-logistic,judge-probe --per-cell 3 "
    "--out runs/monitors-judge",
)
PYTHON = (
    "emscope.evaluation.monitors.run_monitors(['raw-mean-logistic', 'zero-shot'], lm, "
    "emscope.probes.corpus_items(emscope.directions.contrast.load_corpus()), out='runs/monitors')"
)


def command(
    out: Annotated[Path | None, o.out_dir("Write monitors.json, table.csv, curves.csv and curves.png here.")] = None,
    model: o.Model = o.DEFAULT_MODEL,
    monitors: Annotated[
        str, typer.Option("--monitors", help="Comma-separated monitor names (see --list).")
    ] = DEFAULT_MONITORS,
    per_cell: Annotated[
        int | None, o.count("--per-cell", "Pairs per domain x style cell of the corpus (default: all).")
    ] = None,
    corpus: Annotated[
        Path | None, typer.Option("--corpus", help="A corpus directory of DOMAIN.jsonl files (default: built in).")
    ] = None,
    repeats: Annotated[int, o.count("--repeats", "Random draws per training size.")] = 5,
    features: Annotated[
        Path | None,
        typer.Option("--features", help="Cache the forward passes here (resumable; default: OUT/features)."),
    ] = None,
    sae: Annotated[
        Path | None, typer.Option("--sae", help="An SAE directory (emscope sae train) for sae-max-logistic.")
    ] = None,
    judge: Annotated[str, typer.Option("--judge", help="The probe judge the judge-* monitors read.")] = (
        DEFAULT_OFFLINE_JUDGE
    ),
    seed: o.Seed = 0,
    list_: Annotated[bool, typer.Option("--list", help="List the monitors and exit.")] = False,
) -> None:
    """Held-out-domain AUROC against training size for each monitor, per style, with its cost per item."""
    from emscope.errors import ConfigError
    from emscope.evaluation.monitors import ALL_MONITORS, check_names

    if list_:
        for name, spec in ALL_MONITORS.items():
            typer.echo(f"{name:20s} [{spec.arm}] {spec.description}")
        return
    names = check_names([m.strip() for m in monitors.split(",") if m.strip()])
    if out is None:
        raise ConfigError("--out is required (where the tables and the plot go)")
    from emscope.directions.contrast import load_corpus
    from emscope.evaluation.monitors import run_monitors
    from emscope.models.loading import load_model
    from emscope.probes import corpus_items, subsample_pairs

    pairs = load_corpus(directory=corpus)
    if per_cell is not None:
        pairs = subsample_pairs(pairs, per_cell, seed=seed)
    sae_obj = None
    if sae is not None:
        from emscope.sae import load_sae  # type: ignore[import-not-found, unused-ignore]

        sae_obj = load_sae(sae)
    needs_model = any(ALL_MONITORS[m].arm != "judge" for m in names)
    result = run_monitors(
        names,
        load_model(model) if needs_model else None,
        corpus_items(pairs),
        out=out,
        features=features or out / "features",
        repeats=repeats,
        sae=sae_obj,
        judge=judge,
        progress=typer.echo,
    )
    typer.echo(json.dumps(result["table"], indent=1, default=str))
