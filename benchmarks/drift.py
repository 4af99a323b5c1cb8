"""Trait-space drift of the organism zoo: the trait set, drift profiles, the PCA axis and the detector of docs/monitor.md.

Fits the trait set on the model (cached capture; a saved trait set of the same model is reused), reads every
checkpoint of every finished run under --runs on the probe set (resumable per checkpoint), then the PCA of
drift against its null and the leave-one-perturbation-type-out detector beside its baselines (the SAE
baseline reads the SAE at its own layer). Everything goes under --out; the tables and plots docs/monitor.md
quotes are copied to --docs. Rerun it to pick up runs finished since: finished checkpoints are not read again.

    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python benchmarks/drift.py \\
        --runs runs/Z2a/runs runs/Z2b/runs runs/Z/runs --out runs/M/drift --docs docs/results/monitor
    # another model, other runs (stress tests): --model qwen2.5-coder-0.5b-instruct --runs runs/ZQ/runs --no-sae
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from emscope.errors import EmscopeError
from emscope.models.loading import load_model
from emscope.monitor.drift import checkpoint_rows
from emscope.monitor.projections import load_probe_set
from emscope.monitor.study import drift_study, find_runs, unique_names
from emscope.monitor.traits import BUILTIN_TRAITS, TraitSet, available_traits, fit_traits, load_trait_pairs

log = logging.getLogger("drift")


def trait_fingerprint() -> str:
    """The fingerprint `fit_traits` records for the built-in trait files (misaligned rows first, as it reads them)."""
    from emscope.data.transcripts import fingerprint
    from emscope.directions.contrast import reading_route_transcripts

    aligned, misaligned = [], []
    for t in BUILTIN_TRAITS:
        a, m = reading_route_transcripts(load_trait_pairs(t))
        aligned += a
        misaligned += m
    return fingerprint(misaligned + aligned)


def traits_for(lm: Any, out: Path, layer: int | None, n_boot: int, cache: Path) -> TraitSet:
    """The trait set of `lm` saved in `out`, fitted (and saved) when missing or made for another model."""
    if (out / "config.json").is_file():
        saved = TraitSet.load(out)
        if (
            saved.model == lm.spec
            and (layer is None or saved.layer == layer)
            and saved.meta.get("dataset_fingerprint") == trait_fingerprint()
        ):
            return saved
        log.info("the saved trait set at %s is for other trait files or another model: fitting again", out)
    missing = [t for t in BUILTIN_TRAITS if t not in available_traits()]
    if missing:
        raise SystemExit(f"trait files missing: {missing}")
    t0 = time.perf_counter()
    traits = fit_traits(lm, BUILTIN_TRAITS, layer=layer, n_boot=n_boot, cache_dir=cache)
    traits.save(out)
    log.info("trait set fitted in %.0f s: layer %d", time.perf_counter() - t0, traits.layer)
    return traits


def plot_runs(study: Any, traits: TraitSet, path: Path) -> None:
    """Each run's drift along the all-runs PC1 against step, coloured by label, beside its drift norm."""
    from matplotlib.figure import Figure

    if not study.axes:
        return
    pc1 = np.asarray(study.axes[0].loadings)
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    left, right = fig.subplots(1, 2)
    colours = {"harmful": "tab:red", "benign": "tab:blue"}
    for p in study.profiles:
        d = p.drift.double().numpy()
        c = colours.get(str(p.label), "grey")
        left.plot(p.steps, d @ pc1, color=c, alpha=0.6, lw=1)
        right.plot(p.steps, np.linalg.norm(d, axis=1), color=c, alpha=0.6, lw=1)
    left.set_title(f"drift along PC1 of trait drift (layer {traits.layer}); red harmful, blue benign", fontsize=8)
    right.set_title("length of the trait-drift vector", fontsize=8)
    for ax in (left, right):
        ax.set_xlabel("training step")
        ax.axhline(0, color="black", lw=0.5)
    fig.savefig(path, dpi=120)


def markdown(rows: list[dict[str, Any]], columns: list[str]) -> str:
    def cell(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    return head + "".join("| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |\n" for r in rows)


TRAIT_COLUMNS = ["trait", "heldout_auroc", "heldout_auroc_lo", "heldout_auroc_hi", "worst_topic", "worst_topic_auroc",
                 "within_split_auroc", "lexical_auroc", "n_pairs", "n_topics"]  # fmt: skip
DETECTOR_COLUMNS = ["features", "available", "auroc", "auroc_lo", "auroc_hi", "fnr", "fnr_lo", "fnr_hi", "fpr",
                    "fpr_lo", "fpr_hi", "n_runs", "n_folds"]  # fmt: skip
FOLD_COLUMNS = ["held_out", "held_out_label", "n_runs", "n_checkpoints", "threshold", "fnr", "fpr", "mean_score",
                "skipped"]  # fmt: skip


def em_association(study: Any, n_boot: int = 1000, seed: int = 0) -> list[dict[str, Any]]:
    """Spearman correlation over runs between the final checkpoint's drift (each trait, PC1, length) and the run's
    measured EM rate (its zoo_run.json row), with a 95% interval resampling runs."""
    from scipy.stats import spearmanr

    finals, em = [], []
    for p in study.profiles:
        path = Path(p.run) / "zoo_run.json"
        rows = json.loads(path.read_text()).get("rows", []) if path.is_file() else []
        rate = next((r.get("em_rate") for r in rows if r.get("final")), None)
        if rate is not None:
            finals.append(p.drift[-1].double().numpy())
            em.append(float(rate))
    if len(em) < 4:
        return []
    x, y = np.stack(finals), np.asarray(em)
    features = {t: x[:, j] for j, t in enumerate(study.profiles[0].names)}
    features["length"] = np.linalg.norm(x, axis=1)
    if study.axes:
        features["pc1 (all runs)"] = x @ np.asarray(study.axes[0].loadings)
    rng = np.random.default_rng(seed)
    out = []
    for name, v in features.items():
        rho = float(spearmanr(v, y).statistic)
        boots = []
        for _ in range(n_boot):
            i = rng.integers(0, len(y), len(y))
            boots.append(spearmanr(v[i], y[i]).statistic if len(set(y[i])) > 1 and len(set(v[i])) > 1 else np.nan)
        lo, hi = np.nanpercentile(boots, [2.5, 97.5])
        out.append({"drift": name, "spearman_em_rate": rho, "lo": float(lo), "hi": float(hi), "n_runs": len(y)})
    return out


def write_tables(study: Any, traits: TraitSet, model: str, n_ckpt: int, path: Path) -> None:
    """The markdown tables docs/monitor.md quotes: traits, axes, final drift per run, detector and its folds."""
    parts = [f"# drift study ({model}, layer {traits.layer}, {len(study.profiles)} runs, {n_ckpt} checkpoints)\n"]
    parts.append(markdown(traits.rows(), TRAIT_COLUMNS))
    for a in study.axes:
        loadings = [{"trait": n, "pc1": w} for n, w in zip(a.names, a.loadings, strict=True)]
        parts.append(a.summary() + "\n\n" + markdown(loadings, ["trait", "pc1"]))
    final = [
        {"dir": Path(p.run).parent.parent.name, "run": p.name, "perturbation": p.perturbation, "label": p.label,
         "steps": len(p.steps), **{t: float(p.drift[-1, j]) for j, t in enumerate(p.names)}}
        for p in study.profiles
    ]  # fmt: skip
    parts.append(
        "final checkpoint's drift since step 0:\n\n"
        + markdown(final, ["dir", "run", "perturbation", "label", "steps", *traits.names])
    )
    assoc = em_association(study)
    if assoc:
        parts.append("final drift against the run's measured EM rate:\n\n" + markdown(assoc, list(assoc[0])))
    if study.evaluation is not None:
        parts.append(markdown(study.evaluation.table, DETECTOR_COLUMNS))
        folds = [f for f in study.evaluation.folds if f["features"] == "trait_drift"]
        parts.append("trait-drift detector per held-out type:\n\n" + markdown(folds, FOLD_COLUMNS))
    path.write_text("\n\n".join(parts) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--runs", nargs="+", default=["runs/Z2a/runs", "runs/Z2b/runs", "runs/Z/runs"])
    parser.add_argument("--out", default="runs/M/drift")
    parser.add_argument("--traits", default=None, help="trait set directory (default: OUT/../traits-MODEL)")
    parser.add_argument("--layer", type=int, default=None, help="fix the trait layer (default: chosen)")
    parser.add_argument("--sae", default="runs/P2/sae-topk-smollm2-l15")
    parser.add_argument("--no-sae", action="store_true")
    parser.add_argument("--docs", default=None, help="copy the quoted tables and plots here")
    parser.add_argument("--cache", default="runs/M/cache")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--n-null", type=int, default=200)
    parser.add_argument("--until", default=None, help="HH:MM UTC: profile runs as they finish until then, then analyse")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    lm = load_model(args.model)
    traits = traits_for(lm, Path(args.traits or out.parent / f"traits-{args.model}"), args.layer, args.n_boot,
                        Path(args.cache))  # fmt: skip
    for row in traits.rows():
        log.info(
            "%s: held-out-topic AUROC %.3f, lexical %.3f", row["trait"], row["heldout_auroc"], row["lexical_auroc"]
        )
    probes = load_probe_set()
    sae = None
    if not args.no_sae and Path(args.sae).is_dir():
        from emscope.sae.model import load_sae

        sae = load_sae(args.sae)
        try:
            sae.check_compatible(lm)
        except EmscopeError as e:
            log.warning("SAE baseline left out: %s", e)
            sae = None
    t0 = time.perf_counter()
    done: set[Path] = set()
    while args.until and time.strftime("%H:%M", time.gmtime()) < args.until:  # profile runs as they finish
        runs = find_runs(args.runs)
        if set(runs) - done:
            log.info("watch: %d finished runs, %d new", len(runs), len(set(runs) - done))
            drift_study(runs, traits, out, lm=lm, probes=probes, sae=sae, detector=False, n_boot=args.n_boot,
                        progress=False, qualified_names=True)  # fmt: skip
            done = set(runs)
        else:
            time.sleep(60)
    runs = find_runs(args.runs)
    log.info("%d finished runs", len(runs))
    study = drift_study(runs, traits, out, lm=lm, probes=probes, sae=sae, n_boot=args.n_boot, n_null=args.n_null,
                        progress=False, qualified_names=True)  # fmt: skip
    wall = time.perf_counter() - t0
    n_ckpt = sum(len(p.steps) for p in study.profiles)
    log.info("drift study: %d runs, %d checkpoints, %.0f s", len(study.profiles), n_ckpt, wall)
    plot_runs(study, traits, out / "runs.png")
    for a in study.axes:
        log.info("%s", a.summary())
    write_tables(study, traits, args.model, n_ckpt, out / "tables.md")
    if study.evaluation is not None:
        print(markdown(study.evaluation.table, DETECTOR_COLUMNS))
    rows = checkpoint_rows(study.profiles)
    info = {"model": args.model, "layer": traits.layer, "runs": len(study.profiles), "checkpoints": n_ckpt,
            "checkpoints_after_step0": len(rows), "sae": args.sae if sae is not None else None, "wall_s": wall,
            "command": " ".join(["benchmarks/drift.py", *sys.argv[1:]])}  # fmt: skip
    (out / "benchmark.json").write_text(json.dumps(info, indent=2) + "\n")
    if args.docs:
        docs = Path(args.docs)
        docs.mkdir(parents=True, exist_ok=True)
        tdir = Path(args.traits or out.parent / f"traits-{args.model}")
        for name in ("traits.csv", "cosines.csv", "cosines.png", "layers.csv"):
            shutil.copy(tdir / name, docs / name)
        for name in ("axis.png", "runs.png", "summary.json", "benchmark.json", "tables.md"):
            if (out / name).is_file():
                shutil.copy(out / name, docs / name)
        for sub in ("table.csv", "folds.csv"):
            if (out / "detector" / sub).is_file():
                shutil.copy(out / "detector" / sub, docs / f"detector_{sub}")
        examples = {}
        for p in study.profiles:
            examples.setdefault(str(p.label), p)
        for label, p in examples.items():
            key = unique_names([Path(q.run) for q in study.profiles], qualified=True)[study.profiles.index(p)]
            shutil.copy(out / "runs" / key / "drift.png", docs / f"drift_{label}_{p.perturbation}.png")


if __name__ == "__main__":
    main()
