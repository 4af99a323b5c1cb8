"""`emscope direction`: layer sweep over two labelled transcript sets, and the chosen layer's Direction.

`--builtin reading` reads the labelled corpus (12 domains x 3 styles) and chooses the layer, method and
pooling by leaving one domain out at a time (`emscope.directions.cross_domain`); the within-distribution
random split is reported beside it. `--pos/--neg` files use the random split unless `--protocol
cross_domain` is given and each transcript's meta names its domain (``domain`` or ``topic``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from emscope._cli import options as o
from emscope.activations.pooling import POOLERS
from emscope.directions.cross_domain import PROTOCOLS
from emscope.directions.extract import METHODS

NAME = "direction"
EXAMPLES = (
    "emscope direction --model smollm2-135m-instruct --builtin reading --out runs/dir",
    "emscope direction --model qwen2.5-coder-0.5b-instruct --builtin reading --per-cell 4 --out runs/dir-qwen",
    "emscope direction --model smollm2-135m-instruct --pos examples/misaligned.jsonl --neg examples/aligned.jsonl "
    "--method logistic_probe --layers 8-20 --out runs/dir",
)
PYTHON = (
    "pairs = load_corpus(); aligned, misaligned = reading_route_transcripts(pairs)\n"
    "r = emscope.sweep_model(lm, misaligned, aligned, protocol='cross_domain', domains=[p.topic for p in pairs], "
    "styles=[p.misaligned_kind for p in pairs], methods=('diff_in_means', 'logistic_probe'), pools=('mean', 'last'))\n"
    "r.save('runs/dir/sweep'); r.best.save('runs/dir/direction')\n\n"
    "Writes OUT/sweep (cross-domain: config.json, layers.csv, domains.csv, styles.csv, folds.csv, heatmaps, "
    "directions.safetensors; random split: config.json, sweep.csv, sweep.png, directions.safetensors) and "
    "OUT/direction (the chosen layer's Direction; with --all-layers also OUT/layers/layer_NN)."
)
ROUTES = ("reading", "persona", "contrast-pairs")
OptionalMethod = Annotated[
    str | None,
    typer.Option(
        "--method",
        help=" | ".join(METHODS) + ". Default: diff_in_means (random split); diff_in_means and "
        "logistic_probe compared (cross_domain).",
        callback=o.choice(METHODS, "direction method"),
    ),
]
OptionalPool = Annotated[
    str | None,
    typer.Option(
        "--pool",
        help="Pooling over the answer tokens: " + " | ".join(POOLERS) + ". Default: mean (random split); "
        "mean and last compared (cross_domain).",
        callback=o.choice(POOLERS, "pool for a direction"),
    ),
]
ProtocolOption = Annotated[
    str | None,
    typer.Option(
        "--protocol",
        help="cross_domain (leave one domain out; the default on the corpus) | random_split (the default on "
        "--pos/--neg files).",
        callback=o.choice(PROTOCOLS, "protocol"),
    ),
]
PerCell = Annotated[int | None, o.count("--per-cell", "On the corpus: only the first N pairs of each domain x style.")]


def command(
    out: Annotated[Path, o.out_dir("Output directory.")],
    model: o.Model = o.DEFAULT_MODEL,
    pos: Annotated[
        Path | None, o.data_file("Positive class (e.g. misaligned) transcripts, messages JSONL.", "--pos")
    ] = None,
    neg: Annotated[
        Path | None, o.data_file("Negative class (e.g. aligned) transcripts, messages JSONL.", "--neg")
    ] = None,
    builtin: Annotated[
        str | None,
        typer.Option(
            "--builtin",
            help="'reading': the labelled corpus (612 pairs, 12 domains x subtle/blatant/sycophantic) read by the "
            "model, layer chosen across domains; 'contrast-pairs': the 54 earlier built-in pairs, random split; "
            "'persona': the model answers the built-in questions under a malicious vs an honest system prompt "
            "(diagnostics in OUT/persona). Instead of --pos/--neg.",
            callback=o.choice(ROUTES, "built-in route"),
        ),
    ] = None,
    layers: o.Layers = "all",
    method: OptionalMethod = None,
    pool: OptionalPool = None,
    protocol: ProtocolOption = None,
    per_cell: PerCell = None,
    cache: Annotated[
        Path | None,
        typer.Option("--cache", help="Cross-domain capture cache (default OUT/cache): a rerun reads it back."),
    ] = None,
    test_frac: Annotated[
        float, typer.Option("--test-frac", help="Held-out share (pairs are split together).", callback=o.check_fraction)
    ] = 0.3,
    seed: o.Seed = 0,
    n_boot: Annotated[
        int, o.count("--n-boot", "Bootstrap resamples for the 95% intervals (0: none).", minimum=0)
    ] = 1000,
    limit: Annotated[int | None, o.count("--limit", "Use only the first N transcripts (pairs) per side.")] = None,
    all_layers: Annotated[bool, typer.Option("--all-layers", help="Also save every layer's Direction.")] = False,
    batch_size: o.BatchSize = 8,
    max_length: o.MaxLength = None,
    dtype: o.Dtype = "float32",
    device: o.Device = "cpu",
) -> None:
    """Fit a direction at every layer (train split), measure it held-out, and save the best layer's Direction."""
    from emscope.data.transcripts import load_transcripts
    from emscope.directions.contrast import load_contrast_pairs, load_corpus, reading_route_transcripts
    from emscope.directions.cross_domain import DEFAULT_METHODS, DEFAULT_POOLS, CrossDomainResult
    from emscope.directions.persona import persona_route
    from emscope.directions.sweep import SweepResult, sweep_model
    from emscope.errors import ConfigError
    from emscope.models.context import token_limit
    from emscope.models.loading import load_model

    lm = None
    domains: list[str] | None = None
    styles: list[str] | None = None
    if builtin == "reading" and pos is None and neg is None:
        pairs = load_corpus(per_cell=per_cell)[:limit]
        aligned, misaligned = reading_route_transcripts(pairs)
        pos_t, neg_t = misaligned, aligned
        domains, styles = [p.topic for p in pairs], [p.misaligned_kind for p in pairs]
        protocol = protocol or "cross_domain"
    elif builtin == "contrast-pairs" and pos is None and neg is None:
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
        if protocol == "cross_domain":
            domains = [str(t.meta.get("domain") or t.meta.get("topic") or "") for t in pos_t]
            if not all(domains):
                raise ConfigError(
                    "--protocol cross_domain needs each --pos transcript's meta to name its domain "
                    '("meta": {"domain": ...}); or use --protocol random_split'
                )
    else:
        raise ConfigError("give the two classes: --pos FILE --neg FILE, or --builtin reading|contrast-pairs|persona")
    lm = lm or load_model(model, dtype=dtype, device=device)
    if builtin == "reading" and max_length is None:
        max_length = token_limit(lm, None)  # built-in text: cut (and count) what a small-context model cannot read
    if protocol == "cross_domain" and domains is not None:
        result: SweepResult | CrossDomainResult = sweep_model(
            lm,
            pos_t,
            neg_t,
            layers=layers,
            test_frac=test_frac,
            seed=seed,
            n_boot=n_boot,
            batch_size=batch_size,
            max_length=max_length,
            protocol="cross_domain",
            domains=domains,
            styles=styles,
            methods=[method] if method else DEFAULT_METHODS,
            pools=[pool] if pool else DEFAULT_POOLS,
            cache_dir=cache or out / "cache",
        )
    else:
        result = sweep_model(
            lm,
            pos_t,
            neg_t,
            layers=layers,
            method=method or "diff_in_means",
            pool=pool or "mean",
            test_frac=test_frac,
            seed=seed,
            n_boot=n_boot,
            batch_size=batch_size,
            max_length=max_length,
        )
    result.save(out / "sweep")
    result.best.save(out / "direction")
    if all_layers:
        for layer, d in result.directions.items():
            d.save(out / "layers" / f"layer_{layer:02d}")
    if isinstance(result, CrossDomainResult):
        typer.echo(f"rule: {result.rule}")
        typer.echo(result.summary())
    else:
        m = result.best.metrics
        ci = " [{:.3f}, {:.3f}]".format(*m["auroc_ci"]) if "auroc_ci" in m else ""
        typer.echo(
            f"best layer {result.best_layer} (rule: {result.rule}): held-out accuracy {m['accuracy']:.3f}, "
            f"AUROC {m['auroc']:.3f}{ci}"
        )
    typer.echo(f"wrote {out / 'sweep'} and {out / 'direction'}")
