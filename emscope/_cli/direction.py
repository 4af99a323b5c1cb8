"""`emscope direction`: layer sweep over two labelled transcript sets, and the best layer's Direction."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from emscope._cli.common import friendly_errors


def register(app: typer.Typer) -> None:
    app.command(
        "direction",
        epilog=(
            "Examples:\n\n"
            "  emscope direction --model smollm2-135m-instruct --builtin reading --out runs/dir\n\n"
            "  emscope direction --model qwen2.5-coder-0.5b-instruct --pos misaligned.jsonl --neg aligned.jsonl "
            "--method logistic_probe --layers 8-20 --out runs/dir\n\n"
            "Writes OUT/sweep (config.json, sweep.csv, sweep.png, directions.safetensors) and OUT/direction "
            "(the best layer's Direction; with --all-layers also OUT/layers/layer_NN).\n\n"
            "Python:  r = emscope.directions.sweep.sweep_model(lm, pos, neg); r.save('runs/dir/sweep'); r.best.save('runs/dir/direction')"
        ),
    )(direction)


@friendly_errors
def direction(
    out: Annotated[Path, typer.Option("--out", help="Output directory.")],
    model: Annotated[
        str, typer.Option("--model", help="Embedded name, .gguf file, local dir or hub id.")
    ] = "smollm2-135m-instruct",
    pos: Annotated[
        Path | None, typer.Option("--pos", help="Positive class (e.g. misaligned) transcripts, messages JSONL.")
    ] = None,
    neg: Annotated[
        Path | None, typer.Option("--neg", help="Negative class (e.g. aligned) transcripts, messages JSONL.")
    ] = None,
    builtin: Annotated[
        str | None,
        typer.Option(
            "--builtin",
            help="'reading': the built-in contrast pairs read by the model (misaligned vs aligned answers); "
            "'persona': the model answers the built-in questions under a malicious vs an honest system prompt "
            "(diagnostics in OUT/persona). Instead of --pos/--neg.",
        ),
    ] = None,
    layers: Annotated[
        str, typer.Option("--layers", help="'all', '12', '-1', '0,4,8' or '2-5' (block outputs, 0-based).")
    ] = "all",
    method: Annotated[
        str, typer.Option("--method", help="diff_in_means | logistic_probe | pca_of_paired_differences.")
    ] = "diff_in_means",
    pool: Annotated[str, typer.Option("--pool", help="Pooling over response tokens: mean | last | max.")] = "mean",
    test_frac: Annotated[float, typer.Option("--test-frac", help="Held-out share (pairs are split together).")] = 0.3,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    n_boot: Annotated[
        int, typer.Option("--n-boot", help="Bootstrap resamples for the 95% intervals (0: none).")
    ] = 1000,
    limit: Annotated[
        int | None, typer.Option("--limit", help="Use only the first N transcripts (pairs) per side.")
    ] = None,
    all_layers: Annotated[bool, typer.Option("--all-layers", help="Also save every layer's Direction.")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 8,
    dtype: Annotated[
        str, typer.Option("--dtype", help="Model dtype: float32 (use on CPU), bfloat16, float16.")
    ] = "float32",
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, mps or auto.")] = "cpu",
) -> None:
    """Fit a direction at every layer (train split), measure it held-out, and save the best layer's Direction."""
    from emscope.data.transcripts import load_transcripts
    from emscope.directions.contrast import load_contrast_pairs, reading_route_transcripts
    from emscope.directions.persona import persona_route
    from emscope.directions.sweep import sweep_model
    from emscope.errors import DataFormatError
    from emscope.models.loading import load_model

    lm = None
    if builtin == "reading" and pos is None and neg is None:
        aligned, misaligned = reading_route_transcripts(limit=limit)
        pos_t, neg_t = misaligned, aligned
    elif builtin == "persona" and pos is None and neg is None:
        lm = load_model(model, dtype=dtype, device=device)
        questions = [p.question for p in load_contrast_pairs(limit=limit)]
        route = persona_route(lm, questions)
        route.save(out / "persona", **lm.provenance())
        for warning in route.warnings:
            typer.secho(f"warning: {warning}", fg=typer.colors.YELLOW, err=True)
        pos_t, neg_t = route.misaligned, route.aligned
    elif builtin is None and pos is not None and neg is not None:
        pos_t, neg_t = load_transcripts(pos, limit=limit), load_transcripts(neg, limit=limit)
    else:
        raise DataFormatError("give the two classes: --pos FILE --neg FILE, or --builtin reading|persona")
    lm = lm or load_model(model, dtype=dtype, device=device)
    result = sweep_model(
        lm,
        pos_t,
        neg_t,
        layers=layers,
        method=method,
        pool=pool,
        test_frac=test_frac,
        seed=seed,
        n_boot=n_boot,
        batch_size=batch_size,
    )
    result.save(out / "sweep")
    result.best.save(out / "direction")
    if all_layers:
        for layer, d in result.directions.items():
            d.save(out / "layers" / f"layer_{layer:02d}")
    m = result.best.metrics
    ci = " [{:.3f}, {:.3f}]".format(*m["auroc_ci"]) if "auroc_ci" in m else ""
    typer.echo(
        f"best layer {result.best_layer} (rule: {result.rule}): held-out accuracy {m['accuracy']:.3f}, "
        f"AUROC {m['auroc']:.3f}{ci}"
    )
    typer.echo(f"wrote {out / 'sweep'} and {out / 'direction'}")
