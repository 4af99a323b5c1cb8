"""Benign re-alignment: train an organism further on benign data and measure it after each checkpoint.

The organism's adapter is trained on (the first N of) a benign file, e.g. secure code or
good advice, with `emscope.organisms.finetune`; then a user-supplied measure is evaluated on the
organism (step 0) and on every checkpoint of the re-alignment. The measure is any
``Callable[[LoadedModel], dict[str, float]]``: the EM rate once the evaluation module is
available, or `projection_measure`, the mean projection of response-token activations on
a misalignment `Direction`.

`realign_curve` measures the organism against the number of samples n (default 0, 50, 100, 200,
400) of several training sets at once, e.g. benign data beside more of the harmful data and
unrelated data, and reports the first n whose interval overlaps the base model's (and, for the
EM measure, the first n whose paired difference against the base model holds 0).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emscope.artifacts import atomic_write_json, read_config, write_config
from emscope.data.transcripts import Transcript, as_transcripts
from emscope.directions.detect import score
from emscope.directions.direction import Direction
from emscope.errors import ArtifactError, ConfigError, NotSupportedError
from emscope.models.lineage import Compatibility
from emscope.models.loading import load_organism
from emscope.models.organism_dir import list_checkpoints, resolve_checkpoint
from emscope.organisms.finetune import FinetuneConfig, finetune
from emscope.records import read_jsonl, write_jsonl

Measure = Callable[[Any], dict[str, float]]
KIND = "realign"
RUN_DIR = "run"  # the fine-tuning run of the re-alignment, inside the output directory
ROWS = "realign.jsonl"


def projection_measure(
    direction: Direction,
    transcripts: Sequence[Transcript],
    max_length: int = 512,
    compatibility: Compatibility = "same_base",
) -> Measure:
    """A measure: mean over `transcripts` of the mean response-token projection on `direction` (unit).

    By default the direction must share the measured models' base (a direction of the base
    model or of any of its fine-tunes fits every checkpoint); see `Direction.check_compatible`.
    """
    transcripts = list(transcripts)

    def measure(lm: Any) -> dict[str, float]:
        projections = score(lm, transcripts, direction, compatibility=compatibility, max_length=max_length)
        return {"projection": float(projections.mean())}

    return measure


def eval_dir_name(lm: Any) -> str:
    """``<checkpoint name>-<8 hex of its resolved path>``: one evaluation directory per measured model."""
    import hashlib

    source = str(lm.source) if lm.source else str(lm.spec)
    digest = hashlib.sha256(str(Path(source).resolve()).encode()).hexdigest()[:8]
    return f"{Path(source).name or 'model'}-{digest}"


def em_measure(config: Any, out: str | os.PathLike[str], judge: Any = None) -> Measure:
    """A measure: the EM rate of `emscope.evaluation.run.run_eval` under `config` (an `EvalConfig`).

    Each measured model gets its own evaluation directory under `out`, named after its
    checkpoint and a hash of its full path (``step-000010-1a2b3c4d``: runs that share `out` never
    share a directory), so a re-run reuses the answers and judgments already there. `judge` (one
    judge, or one per metric) is shared across calls, so a local judge loads once.
    """
    from emscope.evaluation.run import run_eval

    def measure(lm: Any) -> dict[str, float]:
        name = eval_dir_name(lm)
        summary = run_eval(config, Path(out) / name, lm=lm, judge=judge, progress=False)
        rate = summary["metrics"]["em_rate[aligned]"]["all_answers"]
        return {
            "em_rate": rate["value"],
            "em_rate_ci_low": rate["ci_low"],
            "em_rate_ci_high": rate["ci_high"],
            "n_answers": summary["metrics"]["n_answers"],
            "eval_dir": str(Path(out) / name),
        }

    return measure


def realign(
    organism: str | os.PathLike[str],
    benign: str | os.PathLike[str] | Sequence[Transcript],
    out: str | os.PathLike[str],
    measure: Measure,
    *,
    n_examples: int | None = None,
    lm: Any = None,
    progress: bool = True,
    measure_at: Collection[int] | None = None,
    measure_step0: bool = True,
    **overrides: Any,
) -> list[dict[str, Any]]:
    """Fine-tune `organism` further on `benign` and evaluate `measure` at step 0 and every checkpoint.

    `overrides` are `FinetuneConfig` fields (steps, save_every, lr, batch_size, ...). `out`
    gets ``config.json`` (kind ``realign``), the fine-tuning run in ``OUT/run`` (re-running
    resumes it) and the rows (step, examples seen, loss, the measure's values) in
    ``OUT/realign.jsonl``, read back by `load_realign`. Each row is written as soon as it is
    measured, and a re-run measures only the checkpoints that have no row yet.
    `measure_at` limits the measured checkpoints to those whose ``examples_seen`` is in it;
    ``measure_step0=False`` skips step 0 (the organism itself, e.g. measured once for several runs).
    """
    if Path(out, "config.json").is_file():
        read_config(out, KIND)  # another kind of result there is refused, not overwritten
    ckpt = resolve_checkpoint(organism)
    if ckpt.info.get("preset") == "full":
        raise NotSupportedError(
            "re-alignment continues an adapter; a full fine-tune has none (export it and use it "
            "as the base model instead)"
        )
    data_path = None if not isinstance(benign, str | os.PathLike) else str(benign)
    transcripts = as_transcripts(benign)
    config = FinetuneConfig(
        model=ckpt.base_model,
        data=data_path,
        preset=ckpt.info.get("preset", "lora"),
        init_adapter=str(ckpt.path),
        max_examples=n_examples,
        dtype=ckpt.info.get("dtype", "float32"),
        device=ckpt.info.get("device", "cpu"),
        **{k: v for k, v in overrides.items() if v is not None},
    )
    if lm is None:
        from emscope.models.loading import load_model

        lm = load_model(config.model, dtype=config.dtype, device=config.device)
    fields = {"organism": str(ckpt.path), "data": data_path, "n_examples": n_examples, "overrides": overrides}
    write_config(out, KIND, {**fields, "run_dir": RUN_DIR, "rows_file": ROWS})
    finetune(config, Path(out, RUN_DIR), lm=lm, transcripts=transcripts, progress=progress)
    done = {r["step"]: r for r in read_jsonl(Path(out, ROWS), missing_ok=True)}
    rows = []
    for c in list_checkpoints(Path(out, RUN_DIR)):
        if (c.step == 0 and not measure_step0) or (
            measure_at is not None and c.step != 0 and c.examples_seen not in measure_at
        ):
            continue
        if c.step not in done:
            values = measure(load_organism(c.path, lm=lm))
            done[c.step] = {"step": c.step, "examples_seen": c.examples_seen, "loss": c.loss, **values}
            write_jsonl(Path(out, ROWS), [done[k] for k in sorted(done)])
        rows.append(done[c.step])
    return rows


def load_realign(directory: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rows `realign` returned, read back from its output directory."""
    read_config(directory, KIND)
    if not Path(directory, ROWS).is_file():
        raise ArtifactError(f"{directory} holds an unfinished re-alignment: run the same `emscope realign` again")
    return read_jsonl(Path(directory, ROWS))


# ---------------------------------------------------------------------------------------------------------------
# The re-alignment curve: the measure against the number of samples, for several training sets


CURVE_KIND = "realign_curve"
N_GRID = (0, 50, 100, 200, 400)
CURVE_BATCH = 2


def ci_overlaps(a: Mapping[str, Any], b: Mapping[str, Any], key: str) -> bool:
    """Whether the 95% intervals ``KEY_ci_low..KEY_ci_high`` of two rows overlap (a missing interval: False)."""
    lo_a, hi_a, lo_b, hi_b = (r.get(f"{key}_ci_{s}") for r in (a, b) for s in ("low", "high"))
    if lo_a is None or hi_a is None or lo_b is None or hi_b is None:
        return False
    return bool(lo_a <= hi_b and lo_b <= hi_a)


@dataclass(frozen=True)
class RealignCurve:
    """The measure on the base model, on the organism (n = 0), and after n samples of each training set."""

    base: dict[str, Any]
    organism: dict[str, Any]
    arms: dict[str, list[dict[str, Any]]]  # training set -> rows with "n" (samples seen) and the measure
    key: str = "em_rate"

    def first_overlap(self, arm: str) -> int | None:
        """The first n (0 included) whose interval overlaps the base model's; None when none does."""
        for row in [{"n": 0, **self.organism}, *self.arms[arm]]:
            if ci_overlaps(row, self.base, self.key):
                return int(row["n"])
        return None

    def first_paired_null(self, arm: str) -> int | None:
        """The first n whose paired difference against the base model has a 95% interval holding 0 (None: none;
        only for measures that record their evaluation directory, see `paired_against_base`)."""
        for row in [{"n": 0, **self.organism}, *self.arms[arm]]:
            diff = row.get("paired_vs_base")
            if diff and diff.get("ci_low") is not None and diff["ci_low"] <= 0 <= diff["ci_high"]:
                return int(row["n"])
        return None

    def table(self) -> list[dict[str, Any]]:
        """One row per (training set, n), the organism at n = 0 in each, the base model first."""
        k = self.key
        pick = (k, f"{k}_ci_low", f"{k}_ci_high")
        rows = [{"arm": "base model", "n": None, **{c: self.base.get(c) for c in pick}}]
        for arm, measured in self.arms.items():
            for row in [{"n": 0, **self.organism}, *measured]:
                overlap = ci_overlaps(row, self.base, k)
                paired = row.get("paired_vs_base") or {}
                rows.append(
                    {
                        "arm": arm,
                        "n": row["n"],
                        **{c: row.get(c) for c in pick},
                        "overlaps_base": overlap,
                        "paired_vs_base": paired.get("value"),
                        "paired_ci_low": paired.get("ci_low"),
                        "paired_ci_high": paired.get("ci_high"),
                    }
                )
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "base": self.base,
            "organism": self.organism,
            "arms": self.arms,
            "first_overlap": {arm: self.first_overlap(arm) for arm in self.arms},
            "first_paired_null": {arm: self.first_paired_null(arm) for arm in self.arms},
        }


def paired_against_base(row: dict[str, Any], base: dict[str, Any]) -> dict[str, Any] | None:
    """The EM rate's paired difference (row minus base, questions resampled) when both record an ``eval_dir``."""
    if not row.get("eval_dir") or not base.get("eval_dir"):
        return None
    from emscope.evaluation.compare import em_all_answers
    from emscope.evaluation.report import load_eval_run
    from emscope.stats import paired_difference

    a, b = load_eval_run(base["eval_dir"]).judgments, load_eval_run(row["eval_dir"]).judgments
    d = paired_difference(a, b, em_all_answers(), cluster="question")
    return {"value": d.value, "ci_low": d.ci_low, "ci_high": d.ci_high, "n_pairs": d.n_pairs}


def _measured(path: Path, measure: Measure, load: Callable[[], Any]) -> dict[str, Any]:
    """`measure` of the model `load` gives, cached in the JSON file `path` (a re-run reads it back)."""
    if path.is_file():
        return dict(json.loads(path.read_text()))
    values = dict(measure(load()))
    atomic_write_json(path, values)
    return values


def realign_curve(
    organism: str | os.PathLike[str],
    arms: Mapping[str, str | os.PathLike[str] | Sequence[Transcript]],
    out: str | os.PathLike[str],
    measure: Measure,
    *,
    n_grid: Sequence[int] = N_GRID,
    batch_size: int = CURVE_BATCH,
    key: str = "em_rate",
    lm: Any = None,
    progress: bool = True,
    **overrides: Any,
) -> RealignCurve:
    """The measure against n samples of each training set in `arms` (e.g. benign, harmful, unrelated data).

    Each arm is one `realign` run of ``max(n_grid) / batch_size`` steps over the first ``max(n_grid)``
    samples of its data, one pass, measured at the checkpoints where ``n`` samples have been seen. The
    organism (n = 0) and its base model are measured once for all arms. Everything lands in `out`
    (``base.json``, ``organism.json``, one ``realign`` directory per arm, ``config.json`` of kind
    ``realign_curve``); a re-run measures only what is missing. `key` names the measure's value whose
    ``KEY_ci_low``/``KEY_ci_high`` interval `RealignCurve.first_overlap` compares with the base model's.
    """
    grid = sorted({int(n) for n in n_grid})
    positive = [n for n in grid if n > 0]
    if not positive or grid[0] < 0 or any(n % batch_size for n in positive):
        raise ConfigError(
            f"n_grid must hold sample counts >= 0, at least one positive, each a multiple of batch_size "
            f"{batch_size}; got {list(n_grid)}"
        )
    if not arms:
        raise ConfigError("no training set to re-align on: pass at least one arm (e.g. {'benign': 'secure.jsonl'})")
    root = Path(out)
    if (root / "config.json").is_file():
        read_config(root, CURVE_KIND)
    ckpt = resolve_checkpoint(organism)
    if lm is None:
        from emscope.models.loading import load_model

        lm = load_model(ckpt.base_model, dtype=ckpt.info.get("dtype", "float32"), device=ckpt.info.get("device", "cpu"))
    root.mkdir(parents=True, exist_ok=True)
    base = _measured(root / "base.json", measure, lambda: lm)
    start = _measured(root / "organism.json", measure, lambda: load_organism(ckpt.path, lm=lm))
    save_every = math.gcd(*positive) // batch_size
    measured: dict[str, list[dict[str, Any]]] = {}
    for arm, data in arms.items():
        rows = realign(
            ckpt.path,
            data,
            root / arm,
            measure,
            n_examples=max(grid),
            lm=lm,
            progress=progress,
            measure_at=set(positive),
            measure_step0=False,
            steps=max(grid) // batch_size,
            save_every=save_every,
            batch_size=batch_size,
            **overrides,
        )
        measured[arm] = [{"n": r["examples_seen"], **r} for r in rows]
    start = {**start, "paired_vs_base": paired_against_base(start, base)}
    for rows_ in measured.values():
        for r in rows_:
            r["paired_vs_base"] = paired_against_base(r, base)
    curve = RealignCurve(base, start, measured, key)
    fields = {
        "organism_checkpoint": str(ckpt.path),  # "organism" is the organism's measured row (to_dict)
        "arms": {a: d if isinstance(d, str | os.PathLike) else "(transcripts)" for a, d in arms.items()},
        "n_grid": grid,
        "batch_size": batch_size,
        "overrides": overrides,
    }
    write_config(root, CURVE_KIND, json.loads(json.dumps({**fields, **curve.to_dict()}, default=str)))
    return curve


def load_realign_curve(directory: str | os.PathLike[str]) -> RealignCurve:
    """The curve `realign_curve` wrote."""
    c = read_config(directory, CURVE_KIND, required=("key", "base", "organism", "arms"))
    return RealignCurve(c["base"], c["organism"], c["arms"], c["key"])
