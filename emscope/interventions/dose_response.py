"""Dose-response sweeps with controls: the effect of an intervention at several strengths,
measured the same way for the target direction and for every control direction.

    result = dose_response(lm, direction, alphas=[-8, -4, 0, 4, 8], measure=AnswerProjection(prompts, direction))
    result.save("runs/dose")                      # config.json + dose_response.csv
    plot_dose_response(result, "runs/dose/dose_response.png")
    print(result.comparisons[-1])                 # the target beside the control distribution

The effect at each alpha is ``measure(intervened) - measure(plain)``. Controls are
norm-matched random directions and directions orthogonal to the target
(`emscope.interventions.controls`), on by default; a result always carries them.

A measure that reports one value per prompt (`AnswerProjection` does, see
`emscope.interventions.measures.run_measure_values`) also gives each effect a 95% interval
over prompts: the prompts are resampled with replacement, pairing each prompt's plain and
intervened values (`emscope.stats.paired_mean_difference_interval`), and the per-prompt
values are saved. `DoseResponse.verdicts` then reads each alpha as "specific", "real but not
specific" or "none" (`emscope.interventions.controls.specificity_verdict`).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from emscope.artifacts import read_config, write_config
from emscope.directions.direction import Direction
from emscope.errors import ArtifactError, NotSupportedError, lookup
from emscope.interventions.ablate import ablate
from emscope.interventions.controls import (
    ControlComparison,
    compare_to_controls,
    control_directions,
    specificity_verdict,
)
from emscope.interventions.handle import DirectionLike, Intervention
from emscope.interventions.measures import Measure, TwoPhaseMeasure, run_measure_values
from emscope.interventions.steer import steer
from emscope.models.architecture import LayerSpec, resolve_layers
from emscope.models.lineage import Compatibility
from emscope.models.loading import LoadedModel
from emscope.records import write_csv
from emscope.stats import paired_mean_difference_interval

log = logging.getLogger(__name__)
KIND = "dose_response"
CSV_NAME = "dose_response.csv"
CSV_COLUMNS = ["alpha", "direction", "kind", "value", "effect", "effect_ci_low", "effect_ci_high", "n_prompts"]
TARGET = "target"

# (model, direction, strength, layers, positions, compatibility) -> attached intervention
Intervene = Callable[[LoadedModel, DirectionLike, float, LayerSpec, str, Compatibility], Intervention]


def _steer(
    lm: LoadedModel,
    d: DirectionLike,
    alpha: float,
    layers: LayerSpec,
    positions: str = "all",
    compatibility: Compatibility = "same_base",
) -> Intervention:
    return steer(lm, d, alpha, layers, positions, compatibility=compatibility)


def _ablate(
    lm: LoadedModel,
    d: DirectionLike,
    coefficient: float,
    layers: LayerSpec,
    positions: str = "all",
    compatibility: Compatibility = "same_base",
) -> Intervention:
    if positions != "all":
        raise NotSupportedError(f"ablation acts at all positions; positions={positions!r} applies to steering only")
    return ablate(lm, d, "all" if layers is None else layers, coefficient=coefficient, compatibility=compatibility)


# "steer": alpha is the added multiple of the unit vector; "ablate": the projection coefficient (1 = remove)
INTERVENTIONS: dict[str, Intervene] = {"steer": _steer, "ablate": _ablate}


@dataclass
class DoseResponse:
    """Measured values per direction (the target and each control) at each alpha."""

    alphas: list[float]
    baseline: float  # the measure on the unmodified model
    values: dict[str, list[float]]  # "target", "random:0", "orthogonal:0", ... -> one value per alpha
    intervention: str
    layers: list[int] | None
    meta: dict[str, Any] = field(default_factory=dict)
    baseline_values: list[float] = field(default_factory=list)  # the plain model's value per prompt
    prompt_values: dict[str, list[list[float]]] = field(default_factory=dict)  # name -> per alpha -> per prompt

    @property
    def control_names(self) -> list[str]:
        return [k for k in self.values if k != TARGET]

    def effects(self, name: str) -> list[float]:
        return [v - self.baseline for v in self.values[name]]

    def effect_intervals(self, name: str, n_boot: int = 2000, seed: int = 0) -> list[tuple[float | None, float | None]]:
        """Per alpha, the 95% interval of `name`'s effect over prompts; (None, None) without per-prompt values."""
        per_alpha = self.prompt_values.get(name)
        if not per_alpha or len(self.baseline_values) < 2:
            return [(None, None)] * len(self.alphas)
        return [paired_mean_difference_interval(self.baseline_values, v, n_boot, seed) for v in per_alpha]

    @property
    def verdicts(self) -> list[str]:
        """Per alpha: "specific", "real but not specific", "none" or "undefined" (no interval over prompts)."""
        target = self.effects(TARGET)
        controls = [self.effects(n) for n in self.control_names]
        return [
            specificity_verdict(target[i], lo, hi, [c[i] for c in controls])
            for i, (lo, hi) in enumerate(self.effect_intervals(TARGET))
        ]

    @property
    def comparisons(self) -> list[ControlComparison]:
        """The target's effect beside the controls' effects, one comparison per alpha."""
        target = self.effects(TARGET)
        controls = [self.effects(n) for n in self.control_names]
        return [compare_to_controls(target[i], [c[i] for c in controls]) for i in range(len(self.alphas))]

    def rows(self) -> list[dict[str, Any]]:
        return [
            {
                "alpha": a,
                "direction": name,
                "kind": name.split(":")[0],
                "value": v,
                "effect": v - self.baseline,
                "effect_ci_low": lo,
                "effect_ci_high": hi,
                "n_prompts": len(self.baseline_values) or None,
            }
            for name, vals in self.values.items()
            for a, v, (lo, hi) in zip(self.alphas, vals, self.effect_intervals(name), strict=True)
        ]

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """``config.json`` (all numbers, comparisons, provenance) + ``dose_response.csv``."""
        out = Path(directory)
        write_csv(out / CSV_NAME, self.rows(), CSV_COLUMNS)
        write_config(
            out,
            KIND,
            {
                "alphas": self.alphas,
                "baseline": self.baseline,
                "values": self.values,
                "intervention": self.intervention,
                "layers": self.layers,
                "meta": self.meta,
                "comparisons": [c.to_dict() for c in self.comparisons],
                "verdicts": self.verdicts,
                "baseline_values": self.baseline_values,
                "prompt_values": self.prompt_values,
                "csv_file": CSV_NAME,
            },
        )
        return out

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> DoseResponse:
        config = read_config(directory, KIND)
        try:
            return cls(
                alphas=config["alphas"],
                baseline=config["baseline"],
                values=config["values"],
                intervention=config["intervention"],
                layers=config["layers"],
                meta=config.get("meta", {}),
                baseline_values=config.get("baseline_values", []),  # absent in results saved before intervals
                prompt_values=config.get("prompt_values", {}),
            )
        except KeyError as e:
            raise ArtifactError(f"{directory}/config.json lacks the field {e}") from None


def dose_response(
    lm: LoadedModel,
    direction: DirectionLike,
    alphas: Sequence[float],
    measure: Measure | TwoPhaseMeasure,
    *,
    layers: LayerSpec = None,
    intervention: str = "steer",
    positions: str = "all",
    n_controls: int = 4,
    control_kinds: Sequence[str] = ("random", "orthogonal"),
    seed: int = 0,
    progress: bool = True,
    compatibility: Compatibility = "same_base",
) -> DoseResponse:
    """Run `measure` under the intervention at each alpha, for the target and every control direction.

    `intervention` names an entry of `INTERVENTIONS`; `positions` is passed to `steer`. `n_controls` directions of each of
    `control_kinds` (norm-matched, see `emscope.interventions.controls`); at least 1 is required: an
    effect is never reported without its controls. Cost: ``len(alphas) * (1 + n_controls *
    len(control_kinds)) + 1`` measurements. `compatibility`: see `Direction.check_compatible`.
    """
    intervene = lookup(INTERVENTIONS, intervention, "intervention")
    if n_controls < 1 or not control_kinds:
        raise NotSupportedError("dose_response runs controls by design: pass n_controls >= 1 and a control kind")
    directions = {TARGET: direction, **control_directions(direction, n_controls, seed, control_kinds)}
    baseline_values = run_measure_values(lm, measure, nullcontext)
    values: dict[str, list[float]] = {name: [] for name in directions}
    per_prompt: dict[str, list[list[float]]] = {name: [] for name in directions}
    total = len(alphas) * len(directions)
    with tqdm(total=total, desc=f"dose-response ({intervention})", disable=not progress) as bar:
        for alpha in alphas:
            for name, d in directions.items():
                v = run_measure_values(
                    lm, measure, partial(intervene, lm, d, float(alpha), layers, positions, compatibility)
                )
                values[name].append(_mean(v))
                per_prompt[name].append(v)
                bar.update()
    chosen = resolve_layers(layers, lm.n_layers) if layers is not None else None
    if chosen is None and isinstance(direction, Direction) and intervention == "steer":
        chosen = [direction.layer]
    meta = {
        **lm.provenance(),
        "n_controls": n_controls,
        "control_kinds": list(control_kinds),
        "seed": seed,
        "measure": type(measure).__name__,
        "direction_method": getattr(direction, "method", "tensor"),
    }
    several = len(baseline_values) > 1  # one value (a scalar measure): no interval over prompts
    result = DoseResponse(
        [float(a) for a in alphas],
        _mean(baseline_values),
        values,
        intervention,
        chosen,
        meta,
        baseline_values if several else [],
        per_prompt if several else {},
    )
    for a, c, word in zip(result.alphas, result.comparisons, result.verdicts, strict=True):
        log.info("alpha=%g: %s -> %s", a, c.verdict, word)
    return result


def _mean(values: list[float]) -> float:
    """The mean of the measured values (NaN ones left out; NaN when none is measured), as `run_measure` gives."""
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def plot_dose_response(result: DoseResponse, path: str | os.PathLike[str], title: str | None = None) -> Path:
    """Effect vs alpha: the target's curve over the controls' mean ± std band (and min..max)."""
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

    comps = result.comparisons
    x = result.alphas
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    lo = [c.control_min for c in comps]
    hi = [c.control_max for c in comps]
    mean = [c.control_mean for c in comps]
    std = [0.0 if math.isnan(c.control_std) else c.control_std for c in comps]
    ax.fill_between(x, lo, hi, color="tab:gray", alpha=0.15, label=f"controls min..max (n={comps[0].n_controls})")
    ax.fill_between(
        x,
        [m - s for m, s in zip(mean, std, strict=True)],
        [m + s for m, s in zip(mean, std, strict=True)],
        color="tab:gray",
        alpha=0.35,
        label="controls mean ± std",
    )
    ax.plot(x, mean, color="tab:gray", linestyle="--", linewidth=1)
    intervals = result.effect_intervals(TARGET)
    target = result.effects(TARGET)
    if all(lo is not None and hi is not None for lo, hi in intervals):
        below = [t - lo for t, (lo, _) in zip(target, intervals, strict=True) if lo is not None]
        above = [hi - t for t, (_, hi) in zip(target, intervals, strict=True) if hi is not None]
        ax.errorbar(
            x,
            target,
            yerr=[below, above],
            color="tab:red",
            marker="o",
            capsize=3,
            label=f"target direction (95% CI over {len(result.baseline_values)} prompts)",
        )
    else:
        ax.plot(x, target, color="tab:red", marker="o", label="target direction")
    ax.axhline(0.0, color="black", linewidth=0.5)
    ax.set_xlabel("alpha" if result.intervention == "steer" else f"{result.intervention} coefficient")
    ax.set_ylabel("effect (measure - plain model)")
    ax.set_title(title or f"{result.meta.get('model', '')}: {result.intervention} layers={result.layers}")
    ax.legend(fontsize=8)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    return out
