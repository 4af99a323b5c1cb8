"""Does one organism's misalignment direction carry over to another? Ablation against controls, and cosines.

    result = cross_ablation(direction_x, organism_y, preference_measure(mis_y, ali_y), n_controls=5, out="runs/xy")
    print(result.random.verdict, result.orthogonal.verdict)
    report = direction_cosine(pos_x, neg_x, pos_y, neg_y)     # cosine vs random null and split-half reliability

`cross_ablation` projects organism X's direction out of organism Y's residual stream
(`emscope.interventions.ablate`) and measures Y, then does the same with `n_controls` norm-matched random
and `n_controls` orthogonal directions (`emscope.interventions.controls`); the target's effect is placed
among the controls' effects with `compare_to_controls`. Every measurement is appended to
``OUT/effects.jsonl`` as it finishes, so a killed run resumes where it stopped.

The default measure, `preference_measure`, is judge-free: how much more likely (nats per answer token)
the model finds the misaligned answers of an evaluation than its aligned ones, teacher-forced. An EM rate
(`em_condition_measure`) is the behavioural measure, at the cost of an evaluation per condition.

`direction_cosine` compares two organisms' directions (each fitted by difference of means on its own
activations) against the cosine of random directions of the same width (the null) and against each
direction's split-half reliability: two halves of one organism's answers cannot agree better than the
data allow, so a cross-organism cosine is read beside ``sqrt(full_x * full_y)``, each reliability stepped up
from half to full sample size (Spearman-Brown).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emscope.artifacts import read_config, write_config
from emscope.data.transcripts import Transcript
from emscope.directions.direction import Direction
from emscope.directions.extract import diff_in_means
from emscope.errors import ConfigError, DataFormatError
from emscope.interventions.ablate import ablate
from emscope.interventions.controls import ControlComparison, compare_to_controls, control_directions, random_directions
from emscope.models.architecture import LayerSpec
from emscope.models.lineage import Compatibility
from emscope.models.loading import LoadedModel
from emscope.records import append_jsonl, read_jsonl
from emscope.stats import percentile_interval

log = logging.getLogger(__name__)
KIND = "cross_ablation"
EFFECTS = "effects.jsonl"
BASELINE = "none"  # the condition name of the unablated model
MIN_CONTROLS = 5

# A measure of one condition: (model under the condition's ablation, condition name) -> value.
ConditionMeasure = Callable[[LoadedModel, str], float]


def preference_measure(
    misaligned: Sequence[Transcript], aligned: Sequence[Transcript], max_length: int = 256
) -> ConditionMeasure:
    """Mean response loss on `aligned` answers minus on `misaligned` ones (nats/token; higher = prefers misaligned).

    Teacher-forced, no generation and no judge: the cheap reading of "how misaligned" a model is, on
    answers an evaluation judged (e.g. from `emscope.organisms.own_directions.select_answers`).
    """
    from emscope.organisms.examples import response_loss

    if not misaligned or not aligned:
        raise DataFormatError(f"need answers of both classes, got {len(misaligned)} misaligned, {len(aligned)} aligned")
    mis, ali = list(misaligned), list(aligned)

    def measure(lm: LoadedModel, name: str) -> float:
        return response_loss(lm, ali, max_length) - response_loss(lm, mis, max_length)

    return measure


def em_condition_measure(config: Any, out: str | os.PathLike[str], judge: Any = None) -> ConditionMeasure:
    """The EM rate (all-answers convention) of `emscope.evaluation.run.run_eval` under `config`, one eval per condition.

    Each condition's evaluation goes to ``OUT/<condition>`` (``random:0`` -> ``random-0``); a re-run reuses it.
    """
    from emscope.evaluation.run import run_eval

    def measure(lm: LoadedModel, name: str) -> float:
        summary = run_eval(config, Path(out) / name.replace(":", "-"), lm=lm, judge=judge, progress=False)
        value = summary["metrics"]["em_rate[aligned]"]["all_answers"]["value"]
        return float("nan") if value is None else float(value)

    return measure


@dataclass(frozen=True)
class CrossAblation:
    """The measure on Y unablated, under X's direction ablated, and under each control ablated."""

    baseline: float
    target: float
    controls: dict[str, float]  # "random:0" -> measure under that control's ablation
    random: ControlComparison  # effects (measure - baseline) of the target among the random controls
    orthogonal: ControlComparison
    combined: ControlComparison
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def effect(self) -> float:
        return self.target - self.baseline

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.info,
            "baseline": self.baseline,
            "target": self.target,
            "effect": self.effect,
            "controls": self.controls,
            "random": self.random.to_dict(),
            "orthogonal": self.orthogonal.to_dict(),
            "combined": self.combined.to_dict(),
        }


def _done(out: Path | None) -> dict[str, float]:
    if out is None or not (out / EFFECTS).is_file():
        return {}
    return {r["condition"]: float(r["value"]) for r in read_jsonl(out / EFFECTS, torn_tail_ok=True)}


def cross_ablation(
    direction: Direction,
    organism: LoadedModel,
    measure: ConditionMeasure,
    *,
    n_controls: int = MIN_CONTROLS,
    layers: LayerSpec = None,
    seed: int = 0,
    compatibility: Compatibility = "same_base",
    out: str | os.PathLike[str] | None = None,
) -> CrossAblation:
    """Ablate `direction` (from organism X) in `organism` (Y) and compare its effect on `measure` with controls.

    `n_controls` random and `n_controls` orthogonal norm-matched directions are ablated the same way
    (fewer than `MIN_CONTROLS` of each is refused: the verdict needs them). `layers` are the blocks
    ablated (None: all). With `out`, each condition's value is appended to ``OUT/effects.jsonl`` as it
    is measured and read back on a re-run; the summary is written to ``OUT/config.json``.
    """
    if n_controls < MIN_CONTROLS:
        raise ConfigError(f"n_controls must be at least {MIN_CONTROLS} of each kind for a verdict, got {n_controls}")
    direction.check_compatible(organism, compatibility)
    controls = control_directions(direction, n_controls, seed)
    where = Path(out) if out is not None else None
    if where is not None:
        if (where / "config.json").is_file():
            read_config(where, KIND)  # another kind of result there is refused, not overwritten
        where.mkdir(parents=True, exist_ok=True)
    values = _done(where)
    conditions: dict[str, Direction | None] = {BASELINE: None, "target": direction, **controls}  # type: ignore[dict-item]
    for name, d in conditions.items():
        if name in values:
            continue
        if d is None:
            value = measure(organism, name)
        else:
            with ablate(organism, d, layers, compatibility=compatibility):
                value = measure(organism, name)
        values[name] = float(value)
        if where is not None:
            append_jsonl(where / EFFECTS, [{"condition": name, "value": float(value)}])
        log.info("cross ablation: %s -> %.4g", name, value)
    base = values[BASELINE]
    effects = {k: values[k] - base for k in controls}
    random = [v for k, v in effects.items() if k.startswith("random:")]
    orthogonal = [v for k, v in effects.items() if k.startswith("orthogonal:")]
    target = values["target"] - base
    result = CrossAblation(
        baseline=base,
        target=values["target"],
        controls={k: values[k] for k in controls},
        random=compare_to_controls(target, random),
        orthogonal=compare_to_controls(target, orthogonal),
        combined=compare_to_controls(target, random + orthogonal),
        info={
            "direction_model": direction.model,
            "direction_layer": direction.layer,
            "direction_method": direction.method,
            "direction_lineage": direction.model_lineage.to_dict(),
            "organism": organism.spec,
            "organism_lineage": organism.lineage.to_dict(),
            "ablated_layers": "all" if layers is None else layers,
            "n_controls_per_kind": n_controls,
            "seed": seed,
        },
    )
    if where is not None:
        write_config(where, KIND, {**result.to_dict(), "effects_file": EFFECTS})
    return result


def load_cross_ablation(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """What `cross_ablation` wrote to ``OUT/config.json``."""
    return read_config(directory, KIND, required=("baseline", "target", "random", "orthogonal"))


# ---------------------------------------------------------------------------------------------------------------
# Cosines


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    return float(a @ b / (a.norm() * b.norm()).clamp_min(1e-12))


def random_cosine_null(reference: torch.Tensor, n: int = 2000, seed: int = 0) -> np.ndarray:
    """Cosines between `reference` and `n` isotropic random directions of its width (`controls.random_directions`)."""
    vectors = random_directions(reference.float(), n, seed)
    return np.array([cosine(reference, v) for v in vectors])  # type: ignore[arg-type]


@dataclass(frozen=True)
class Reliability:
    """Split-half reliability: cosine of the directions fitted on two random halves of each class.

    ``full`` is the Spearman-Brown step-up ``2r / (1 + r)``: the expected cosine between two directions
    fitted on the *whole* of two independent samples of this size (for a mean difference with isotropic
    noise the step-up is exact: halving the data doubles the noise variance of each estimate).
    """

    mean: float
    ci: tuple[float, float]  # 2.5 and 97.5 percentiles over the splits
    n_splits: int
    n_pos: int
    n_neg: int

    @property
    def full(self) -> float:
        return 2 * self.mean / (1 + self.mean) if self.mean > -1 else float("nan")


def split_half_reliability(pos: torch.Tensor, neg: torch.Tensor, n_splits: int = 50, seed: int = 0) -> Reliability:
    """Fit difference-of-means directions on two disjoint random halves of `pos`/`neg` [N, D]; their cosine.

    The halves split each class separately; `n_splits` random splits give the spread.
    """
    if min(len(pos), len(neg)) < 2:
        raise DataFormatError(f"split-half reliability needs 2 rows per class, got {len(pos)} pos and {len(neg)} neg")
    gen = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(n_splits):
        p, n = torch.randperm(len(pos), generator=gen), torch.randperm(len(neg), generator=gen)
        hp, hn = len(pos) // 2, len(neg) // 2
        a = diff_in_means(pos[p[:hp]], neg[n[:hn]])
        b = diff_in_means(pos[p[hp:]], neg[n[hn:]])
        values.append(cosine(a, b))
    arr = np.array(values)
    return Reliability(float(arr.mean()), percentile_interval(arr), n_splits, len(pos), len(neg))


@dataclass(frozen=True)
class CosineReport:
    """The cosine of two organisms' directions, read against the random null and their reliabilities."""

    cosine: float
    null_abs_q95: float  # 95th percentile of |cosine| between a direction and random ones of the same width
    null_abs_q99: float
    p_value: float  # (1 + #null with |cos| >= |cosine|) / (1 + n_null)
    reliability_x: Reliability
    reliability_y: Reliability
    ceiling: float  # sqrt(full_x * full_y): the cosine two directions this noisy reach if the true ones are identical
    n_null: int

    @property
    def relative(self) -> float:
        """`cosine` / `ceiling`: 1 = as aligned as each direction is with itself across halves."""
        return self.cosine / self.ceiling if self.ceiling and not math.isnan(self.ceiling) else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "relative": self.relative,
            "reliability_x_full": self.reliability_x.full,
            "reliability_y_full": self.reliability_y.full,
        }


def direction_cosine(
    pos_x: torch.Tensor,
    neg_x: torch.Tensor,
    pos_y: torch.Tensor,
    neg_y: torch.Tensor,
    n_null: int = 2000,
    n_splits: int = 50,
    seed: int = 0,
) -> CosineReport:
    """Cosine of X's and Y's difference-of-means directions (activations [N, D] of one layer, same width).

    Read beside the null (random directions of that width: ``|cos| ~ 1/sqrt(D)``) and beside the split-half
    reliability of each direction.
    """
    if pos_x.shape[-1] != pos_y.shape[-1]:
        from emscope.errors import WidthMismatchError

        raise WidthMismatchError(f"X has width {pos_x.shape[-1]} but Y has {pos_y.shape[-1]}: compare one layer")
    dx, dy = diff_in_means(pos_x, neg_x), diff_in_means(pos_y, neg_y)
    c = cosine(dx, dy)
    null = np.abs(random_cosine_null(dx, n_null, seed))
    rx = split_half_reliability(pos_x, neg_x, n_splits, seed)
    ry = split_half_reliability(pos_y, neg_y, n_splits, seed + 1)
    ceiling = math.sqrt(rx.full * ry.full) if rx.full > 0 and ry.full > 0 else float("nan")
    return CosineReport(
        cosine=c,
        null_abs_q95=float(np.quantile(null, 0.95)),
        null_abs_q99=float(np.quantile(null, 0.99)),
        p_value=float((1 + (null >= abs(c)).sum()) / (1 + n_null)),
        reliability_x=rx,
        reliability_y=ry,
        ceiling=ceiling,
        n_null=n_null,
    )
