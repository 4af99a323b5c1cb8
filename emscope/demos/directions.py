"""The reading-route demonstration: find a misalignment direction on a real model, then steer with it.

1. The model reads the labelled corpus (`emscope.directions.contrast.load_corpus`: an aligned and a
   misaligned answer to each user message, 12 domains x subtle / blatant / sycophantic), no system prompt.
2. The layer, method and pooling are chosen across domains (`emscope.directions.cross_domain`: fit on
   every domain but one, score the one left out, highest mean held-out-domain AUROC), with the domain x
   domain and style x style matrices and the within-distribution random split beside it; the chosen
   candidate fitted on every pair is the shipped direction. ``protocol="random_split"`` runs the earlier
   demo instead: the 54 built-in contrast pairs, a random train/held-out split, the best layer by held-out AUROC.
3. The shipped direction steers the model (no system prompt) on questions it was not fitted on (the
   built-in contrast questions, or the held-out ones of the random split), at ``-alpha`` and ``+alpha``,
   beside norm-matched random and orthogonal control directions (`emscope.interventions.dose_response`).
   The measure is the mean projection, read by the unmodified model, of the generated answers on the direction.
4. ``summary.md`` is written from the saved results only.

Layout of the output directory::

    capture/    the cached pooled activations (cross-domain protocol; a rerun reads them back)
    sweep/      cross-domain: config.json, layers.csv, domains.csv, styles.csv, folds.csv, *.png,
                directions.safetensors; random split: config.json, sweep.csv, sweep.png, directions.safetensors
    direction/  the shipped Direction (config.json + tensors.safetensors)
    steering/   config.json, dose_response.csv, samples.jsonl ; steering.png
    summary.md
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from emscope.artifacts import atomic_write_bytes, load_result, read_config, write_config
from emscope.directions.contrast import load_contrast_pairs, load_corpus, reading_route_transcripts
from emscope.directions.cross_domain import DEFAULT_POOLS, CrossDomainResult, check_protocol
from emscope.directions.extract import train_test_split
from emscope.directions.sweep import SweepResult, sweep_model
from emscope.models.embedded import DEFAULT_MODEL
from emscope.models.loading import LoadedModel, load_model
from emscope.records import read_jsonl, write_jsonl

log = logging.getLogger(__name__)
KIND = "directions_demo"


STEERING_METHODS = ("diff_in_means",)


@dataclass(frozen=True)
class DemoConfig:
    """Settings of `run_reading_demo` (also saved as the demo's ``config.json``)."""

    model: str = DEFAULT_MODEL
    method: str = "diff_in_means"  # the random split's method
    layers: str = "all"
    n_pairs: int | None = None  # random split: None = every built-in contrast pair
    protocol: str = "cross_domain"  # or "random_split" (the earlier demo)
    per_cell: int | None = None  # cross-domain: the first N pairs of each domain x style (None: the whole corpus)
    # The demo steers with what it ships, so it compares difference-in-means only: on SmolLM2 the logistic probe's
    # direction detected better across domains (0.991 vs 0.916) but steered no further than norm-matched controls,
    # while difference-in-means steered beyond all of them (docs/detection.md). `emscope direction` compares both.
    methods: tuple[str, ...] = STEERING_METHODS
    pools: tuple[str, ...] = DEFAULT_POOLS  # cross-domain: compared
    test_frac: float = 0.3
    seed: int = 0
    n_boot: int = 1000
    steer: bool = True
    alpha_multiples: tuple[float, ...] = (-2.0, 2.0)  # alpha = multiple x norm of the mean difference
    n_controls: int = 3  # per kind (random, orthogonal)
    n_steer_questions: int = 8  # held-out questions answered under steering
    max_new_tokens: int = 32
    n_samples_shown: int = 3
    batch_size: int = 8


def run_reading_demo(config: DemoConfig, out: str | os.PathLike[str], lm: LoadedModel | None = None) -> Path:
    """Run the sweep (and, if ``config.steer``, the steering with controls); write results and ``summary.md``.

    A sweep already saved in `out` with the same model, data and sweep settings is reused,
    so the steering part can be re-run (e.g. with other alphas) without capturing again.
    """
    out = Path(out)
    check_protocol(config.protocol, ["corpus"])
    lm = lm or load_model(config.model)
    saved = result = _saved_sweep(out, config)
    if config.protocol == "cross_domain":
        corpus = load_corpus(per_cell=config.per_cell)
        if result is None:
            aligned, misaligned = reading_route_transcripts(corpus)
            result = sweep_model(
                lm,
                misaligned,
                aligned,
                layers=config.layers,
                test_frac=config.test_frac,
                seed=config.seed,
                n_boot=config.n_boot,
                batch_size=config.batch_size,
                protocol="cross_domain",
                domains=[p.topic for p in corpus],
                styles=[p.misaligned_kind for p in corpus],
                methods=config.methods,
                pools=config.pools,
                cache_dir=out / "capture",
            )
        questions = [p.question for p in load_contrast_pairs()]  # never in the corpus the direction was fitted on
    else:
        pairs = load_contrast_pairs(limit=config.n_pairs)
        if result is None:
            aligned, misaligned = reading_route_transcripts(pairs)
            result = sweep_model(
                lm,
                misaligned,
                aligned,
                layers=config.layers,
                method=config.method,
                test_frac=config.test_frac,
                seed=config.seed,
                n_boot=config.n_boot,
                batch_size=config.batch_size,
            )
        held_out = train_test_split(len(pairs), len(pairs), config.test_frac, config.seed).pos_test.tolist()
        questions = [pairs[i].question for i in held_out]
    if saved is None:
        result.save(out / "sweep")
        result.best.save(out / "direction")
    write_config(out, KIND, {"demo": asdict(config), **lm.provenance()})
    if config.steer:
        steer_with_controls(lm, result, questions[: config.n_steer_questions], config, out)
    write_summary(out)
    return out


SWEEP_FIELDS = ("model", "method", "layers", "n_pairs", "test_frac", "seed", "n_boot", "protocol")
CROSS_DOMAIN_FIELDS = ("per_cell", "methods", "pools")
Sweep = SweepResult | CrossDomainResult


def _saved_sweep(out: Path, config: DemoConfig) -> Sweep | None:
    """The sweep already in `out` when it was made with the same sweep settings (so steering can be re-run alone)."""
    if not (out / "config.json").is_file() or not (out / "sweep" / "config.json").is_file():
        return None
    saved = read_config(out, KIND).get("demo", {})
    saved.setdefault("protocol", "random_split")  # demos saved before the cross-domain protocol
    fields = SWEEP_FIELDS + (CROSS_DOMAIN_FIELDS if config.protocol == "cross_domain" else ())
    if any(_plain(saved.get(k)) != _plain(getattr(config, k)) for k in fields):
        return None
    log.info("reusing the layer sweep saved in %s (same model, data and sweep settings)", out / "sweep")
    result = load_result(out / "sweep")
    return result if isinstance(result, SweepResult | CrossDomainResult) else None


def _plain(value: Any) -> Any:
    """Tuples as lists, as they read back from JSON."""
    return list(value) if isinstance(value, tuple) else value


def steer_with_controls(lm: LoadedModel, result: Sweep, questions: list[str], config: DemoConfig, out: Path) -> None:
    """Steer along +/- the best direction and along controls; save the dose-response and a few answers."""
    from emscope.interventions.dose_response import dose_response, plot_dose_response
    from emscope.interventions.measures import AnswerProjection
    from emscope.interventions.steer import steer

    best = result.best
    norm = float(best.vector.norm())
    alphas = [m * norm for m in config.alpha_multiples]
    measure = AnswerProjection(questions, best, max_new_tokens=config.max_new_tokens, batch_size=config.batch_size)
    dr = dose_response(lm, best, alphas, measure, n_controls=config.n_controls, seed=config.seed)
    dr.meta.update(
        alpha_multiples=list(config.alpha_multiples), direction_norm=norm, questions=questions, layer=best.layer
    )
    dr.save(out / "steering")
    plot_dose_response(dr, out / "steering.png", title=f"{lm.spec}: steering at layer {best.layer} vs controls")
    shown = AnswerProjection(questions[: config.n_samples_shown], best, config.max_new_tokens, config.batch_size)
    rows: list[dict[str, Any]] = []
    for multiple in dict.fromkeys((0.0, min(config.alpha_multiples), max(config.alpha_multiples))):
        with steer(lm, best, alpha=multiple * norm):  # alpha 0 adds nothing: the plain model
            answers = shown.generate(lm)
        rows += [
            {"alpha_multiple": multiple, "question": q, "answer": a}
            for q, a in zip(shown.prompts, answers, strict=True)
        ]
    write_jsonl(out / "steering" / "samples.jsonl", rows)


def regenerate_command(cfg: dict[str, Any], out: Path) -> str:
    """The `emscope demo directions` command line that reproduces a saved demo configuration."""
    parts = ["emscope demo directions", f"--model {cfg['model']}"]
    if cfg.get("protocol", "random_split") == "cross_domain":
        parts += [f"--method {m}" for m in cfg["methods"]] + [f"--pool {p}" for p in cfg["pools"]]
        parts += [f"--per-cell {cfg['per_cell']}"] if cfg.get("per_cell") is not None else []
    else:
        parts += ["--protocol random_split", f"--method {cfg['method']}"]
        parts += [f"--n-pairs {cfg['n_pairs']}"] if cfg.get("n_pairs") is not None else []
    parts += [f"--layers {cfg['layers']}", f"--seed {cfg['seed']}"]
    if cfg["steer"]:
        parts += [f"--alpha {a:g}" for a in cfg["alpha_multiples"]]
        parts += [
            f"--n-controls {cfg['n_controls']}",
            f"--n-questions {cfg['n_steer_questions']}",
            f"--max-new-tokens {cfg['max_new_tokens']}",
        ]
    else:
        parts.append("--no-steer")
    return " ".join([*parts, f"--out {out.as_posix()}"])


def _fmt_ci(row: dict[str, Any], key: str) -> str:
    return f"{row[key]:.3f} [{row[f'{key}_lo']:.3f}, {row[f'{key}_hi']:.3f}]"


def write_summary(out: str | os.PathLike[str]) -> Path:
    """``summary.md`` built only from the saved results in `out`."""
    out = Path(out)
    demo = read_config(out, KIND)
    sweep = load_result(out / "sweep")
    cfg = demo["demo"]
    lines = [
        f"# Reading-route directions on `{demo['model']}`",
        "",
        f"Regenerate: `{regenerate_command(cfg, out)}`",
        "",
        f"- model: `{demo['model']}` (revision `{demo.get('model_revision')}`, width {demo['width']}, "
        f"{demo['n_layers']} layers; layer i = output of decoder block i)",
    ]
    lines += _cross_domain_lines(sweep, cfg) if isinstance(sweep, CrossDomainResult) else _split_lines(sweep, cfg)
    if cfg["steer"] and (out / "steering" / "config.json").is_file():
        lines += _steering_lines(out)
    else:
        lines += ["", "Steering: not run (`--no-steer`)."]
    path = out / "summary.md"
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
    return path


def _split_lines(sweep: SweepResult, cfg: dict[str, Any]) -> list[str]:
    best_row = next(r for r in sweep.rows() if r["layer"] == sweep.best_layer)
    lines = [
        f"- data: built-in contrast pairs, {sweep.config['n_pos']} questions x (aligned, misaligned) answers, read "
        f"with teacher forcing, mean over answer tokens; fingerprint `{sweep.config['dataset_fingerprint']}`",
        f"- method: `{sweep.method}`, held-out split {cfg['test_frac']:.0%} of the pairs (seed {cfg['seed']}), "
        f"{cfg['n_boot']} bootstrap resamples of the held-out rows for the 95% intervals",
        f"- best layer rule: {sweep.rule}",
        f"- **best layer {sweep.best_layer}**: held-out accuracy {_fmt_ci(best_row, 'accuracy')}, "
        f"AUROC {_fmt_ci(best_row, 'auroc')}, Cohen's d {_fmt_ci(best_row, 'cohens_d')}",
        "",
        "![layer sweep](sweep/sweep.png)",
        "",
        "| layer | held-out accuracy [95% CI] | held-out AUROC [95% CI] | Cohen's d [95% CI] |",
        "|---:|---|---|---|",
    ]
    return lines + [
        f"| {r['layer']} | {_fmt_ci(r, 'accuracy')} | {_fmt_ci(r, 'auroc')} | {_fmt_ci(r, 'cohens_d')} |"
        for r in sweep.rows()
    ]


def _cross_domain_lines(sweep: CrossDomainResult, cfg: dict[str, Any]) -> list[str]:
    c, q = sweep.chosen, sweep.random_split_choice
    row, qrow = sweep.row(c), sweep.row(q)
    lines = [
        f"- data: the labelled corpus, {sweep.config['n_pairs']} pairs over {sweep.config['n_domains']} domains "
        f"(styles {', '.join(sweep.styles)}), read with teacher forcing; fingerprint "
        f"`{sweep.config['dataset_fingerprint']}`",
        f"- candidates: methods {', '.join(sweep.config['methods'])} x poolings {', '.join(sweep.config['pools'])} "
        f"x {len(sweep.config['layers'])} layers; {cfg['n_boot']} bootstrap resamples per held-out domain",
        f"- choice rule: {sweep.rule}",
        f"- **chosen {c.describe()}**: held-out-domain AUROC {_fmt_ci(row, 'heldout_domain_auroc')} (worst "
        f"domain {row['worst_domain']} {row['worst_domain_auroc']:.3f}; no-hindsight estimate "
        f"{sweep.nested['mean_auroc']:.3f}); within-distribution split AUROC {_fmt_ci(row, 'within_split_auroc')}",
        f"- the random split would have chosen {q.describe()}: within-split AUROC "
        f"{_fmt_ci(qrow, 'within_split_auroc')}, held-out-domain AUROC {_fmt_ci(qrow, 'heldout_domain_auroc')}",
        "",
        "![layers](sweep/layers.png) ![domains](sweep/domains.png) ![styles](sweep/styles.png)",
        "",
        "Style x style (rows fitted on, columns scored on, held-out domains):",
        "",
        "| fit \\ score | " + " | ".join(sweep.styles) + " |",
        "|---|" + "---:|" * len(sweep.styles),
    ]
    lines += [
        f"| {s} | " + " | ".join(f"{v:.3f}" for v in values) + " |"
        for s, values in zip(sweep.styles, sweep.style_matrix, strict=True)
    ]
    lines += [
        "",
        f"Every layer ({c.method}, {c.pool} pooling):",
        "",
        "| layer | held-out-domain AUROC [95% CI] | worst domain | within split AUROC [95% CI] |",
        "|---:|---|---|---|",
    ]
    lines += [
        f"| {r['layer']} | {_fmt_ci(r, 'heldout_domain_auroc')} | {r['worst_domain']} {r['worst_domain_auroc']:.3f} "
        f"| {_fmt_ci(r, 'within_split_auroc')} |"
        for r in sweep.rows
        if r["method"] == c.method and r["pool"] == c.pool
    ]
    return lines


def _steering_lines(out: Path) -> list[str]:
    from emscope.interventions.dose_response import DoseResponse

    dr = DoseResponse.load(out / "steering")
    meta = dr.meta
    lines = [
        "",
        "## Steering the model along the direction (no system prompt)",
        "",
        f"Layer {meta['layer']}, alpha = multiple x {meta['direction_norm']:.2f} (the norm of the class-mean difference), "
        f"added at every position. Measure: mean projection on the unit direction of the answers "
        f"({len(meta['questions'])} held-out questions, greedy), read back by the unmodified model. "
        f"Baseline (no steering): {dr.baseline:+.3f}. Controls: {dr.comparisons[0].n_controls} norm-matched "
        "directions (random and orthogonal to the target).",
        "",
        "![steering](steering.png)",
        "",
        "| alpha multiple | target shift | controls mean ± std | controls range | verdict |",
        "|---:|---:|---|---|---|",
    ]
    for mult, c in zip(meta["alpha_multiples"], dr.comparisons, strict=True):
        verdict = c.verdict.split("; ", 1)[-1]
        lines.append(
            f"| {mult:+g} | {c.target:+.3f} | {c.control_mean:+.3f} ± {c.control_std:.3f} | "
            f"{c.control_min:+.3f}..{c.control_max:+.3f} | {verdict} |"
        )
    samples = out / "steering" / "samples.jsonl"
    if samples.is_file():
        lines += ["", "Sample answers (greedy, first held-out questions):", ""]
        for r in read_jsonl(samples):
            answer = " ".join(r["answer"].split())[:300]
            lines.append(f"- alpha x{r['alpha_multiple']:+g} | *{r['question']}* -> {answer}")
    return lines
