"""The full monitor registry (probes below, the offline judge's probe here) and the run behind `emscope monitors`.

`ALL_MONITORS` = `emscope.probes.MONITORS` plus two arms that read the offline judge
(`probe:builtin` by default; any ``probe:DIR``): ``judge-probe`` is the shipped probe as it is
(no training: its score is 100 - P(aligned) x 100), ``judge-refit`` fits a new logistic head on
the same judge features. `run_monitors` measures a list of monitors on labelled items with the
held-out-domain protocol (`emscope.probes.protocol`) and writes the tables and the plot.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emscope.artifacts import atomic_write_json
from emscope.errors import ConfigError, lookup
from emscope.evaluation.judges.factory import DEFAULT_OFFLINE_JUDGE
from emscope.models.loading import LoadedModel
from emscope.probes.items import MonitorItem
from emscope.probes.protocol import heldout_curve
from emscope.probes.registry import MONITORS, Monitor, MonitorContext, MonitorSpec
from emscope.probes.sources import FeatureSource, FeatureStore

KIND = "monitors"


class JudgeReading(FeatureSource):
    """A probe judge reading its judge prompt: the last-token residual at its layer, and its misalignment score."""

    def __init__(self, spec: str = DEFAULT_OFFLINE_JUDGE, judge: Any = None) -> None:
        from emscope.evaluation.judges.factory import probe_dir
        from emscope.evaluation.judges.probe import ProbeJudge

        if judge is None and not spec.startswith("probe:"):
            raise ConfigError(f"the judge arms read a probe judge (probe:builtin or probe:DIR), got {spec!r}")
        self.judge = judge if judge is not None else ProbeJudge.load(probe_dir(spec))
        self.layers = [self.judge.layer]
        self.name = f"judge:{self.judge.spec}"

    def extract(self, items: Sequence[MonitorItem]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        from emscope.evaluation.judges.probe import probe_scores
        from emscope.evaluation.judges.prompts import format_judge_prompt

        prompts = [format_judge_prompt(str(self.judge.prompt), it.user, it.answer) for it in items]
        x = self.judge.features(prompts)  # [N, D]
        reader = self.judge._local()
        tokens = np.array([reader.prompt_ids(p).shape[1] for p in prompts], dtype=float)
        misaligned = 100.0 - probe_scores(self.judge.weights, x)
        return {"last": x[:, None].astype(np.float32), "misaligned": misaligned.astype(np.float32)}, tokens


def _judge(head: str, feature: str) -> Callable[[str, MonitorContext], Monitor]:
    def build(name: str, ctx: MonitorContext) -> Monitor:
        judge = ctx.extra.get("judge", DEFAULT_OFFLINE_JUDGE)  # a spec, or a loaded ProbeJudge
        spec = judge if isinstance(judge, str) else judge.spec
        src = ctx.source(f"judge:{spec}", lambda: JudgeReading(spec, None if isinstance(judge, str) else judge))
        return Monitor(name, src, feature, head, ctx.store)

    return build


ALL_MONITORS: dict[str, MonitorSpec] = {
    **MONITORS,
    "judge-probe": MonitorSpec(
        "judge",
        "the offline judge's probe (probe:builtin) on Qwen2.5-Coder-1.5B reading the judge prompt, as shipped",
        _judge("none", "misaligned"),
    ),
    "judge-refit": MonitorSpec(
        "judge",
        "a logistic probe refitted on the offline judge's features (same model, prompt and layer)",
        _judge("logistic", "last"),
    ),
}


def run_monitors(
    monitors: Sequence[str],
    lm: LoadedModel | None,
    items: Sequence[MonitorItem],
    out: str | os.PathLike[str] | None = None,
    features: str | os.PathLike[str] | None = None,
    sizes: Sequence[int | str] | None = None,
    repeats: int = 5,
    layers: Sequence[int] | None = None,
    sae: Any = None,
    judge: Any = DEFAULT_OFFLINE_JUDGE,
    features_only: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Held-out-domain curves of `monitors` on labelled `items`; writes ``monitors.json``, CSVs and a plot to `out`.

    `features` caches every source's rows (resumable). Returns ``{"table": [...], "curves": {...}}``:
    the table has one row per monitor (AUROC with all training items, the smallest size, per-style
    AUROC, cost per item).
    """
    say = progress or (lambda msg: None)
    names = check_names(monitors)
    store = FeatureStore(features)
    ctx = MonitorContext(lm=lm, layers=layers, store=store, sae=sae, extra={"judge": judge})
    built = {m: ALL_MONITORS[m].build(m, ctx) for m in names}
    for m in names:  # read every source first (the expensive part), one source at a time
        src = built[m].source
        if src.name in store.costs:
            continue
        say(f"reading {len(items)} items with {src.name}")
        store.get(src, items, progress=_reporter(say, src.name))
    if features_only:
        return {"table": [], "curves": {}}
    curves = {}
    for m in names:
        say(f"held-out curve: {m}")
        curves[m] = heldout_curve(built[m], items, sizes=sizes, repeats=repeats)
    table = [table_row(m, ALL_MONITORS[m].arm, curves[m]) for m in names]
    result = {"table": table, "curves": {m: c.to_dict() for m, c in curves.items()}}
    if out is not None:
        write_results(out, result, items, lm)
    return result


def _reporter(say: Callable[[str], None], name: str) -> Callable[[int, int], None]:
    return lambda k, n: say(f"  {name}: {k}/{n}")


def check_names(monitors: Sequence[str]) -> list[str]:
    """The names, each checked against `ALL_MONITORS` (unknown: the choices and a did-you-mean)."""
    for m in monitors:
        lookup(ALL_MONITORS, m, "monitor")
    return list(monitors)


def table_row(name: str, arm: str, curve: Any) -> dict[str, Any]:
    """One monitor's line of the table: AUROC with every training item and with 8, per style, cost."""
    summary = curve.summary()
    full, small = summary[-1], summary[0]
    return {
        "monitor": name,
        "arm": arm,
        "auroc_all": full["auroc"],
        "ci_low": full["ci_low"],
        "ci_high": full["ci_high"],
        "n_train_all": full["n_used"],
        "auroc_n8": small["auroc"] if small["n_train"] != "all" else full["auroc"],
        **{f"auroc_{k}": v for k, v in curve.by_style.items()},
        "forward_tokens_per_item": curve.cost.get("forward_tokens"),
        "seconds_per_item": curve.cost.get("seconds"),
        "cpu_seconds_per_item": curve.cost.get("cpu_seconds"),
        "layers_chosen": sorted({p.layer for p in curve.points if p.n_train == "all" and p.layer is not None}),
    }


def write_results(
    out: str | os.PathLike[str], result: dict[str, Any], items: Sequence[MonitorItem], lm: LoadedModel | None
) -> Path:
    """``monitors.json`` (everything), ``table.csv``, ``curves.csv`` and ``curves.png`` in `out`."""
    from emscope.artifacts import describe
    from emscope.probes.plot import plot_curves
    from emscope.records import write_csv

    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    model = lm.spec if lm is not None else None
    meta = {
        "model": model,
        "n_items": len(items),
        "domains": sorted({it.domain for it in items}),
        "styles": sorted({it.style for it in items}),
    }
    atomic_write_json(path / "monitors.json", {**describe(KIND, meta), **result})
    write_csv(path / "table.csv", [{k: _cell(v) for k, v in r.items()} for r in result["table"]])
    rows = [r for c in result["curves"].values() for r in c["summary"]]
    write_csv(path / "curves.csv", rows)
    plot_curves(rows, path / "curves.png", title=f"{model}: {len(items)} answers, held out by domain")
    return path


def _cell(v: Any) -> Any:
    return " ".join(map(str, v)) if isinstance(v, list) else v
