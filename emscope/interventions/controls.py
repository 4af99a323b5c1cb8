"""Controls for every intervention: norm-matched random directions, directions orthogonal
to the target, and the comparison of a target's effect with the controls' effects.

An effect read without its control is not evidence: steering along *any* direction of the
same norm moves a model's outputs. `compare_to_controls` says where the target's effect
falls in the distribution of control effects (mean, spread, z, rank, empirical p), and
`specificity_verdict` turns an effect with its interval and the controls' effects into one word.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from emscope.directions.direction import Direction
from emscope.errors import NotSupportedError, lookup
from emscope.interventions.handle import DirectionLike


def _vector(like: DirectionLike) -> torch.Tensor:
    return (like.vector if isinstance(like, Direction) else like).detach().float().cpu()


def _wrap(like: DirectionLike, vector: torch.Tensor, kind: str, seed: int, index: int) -> DirectionLike:
    if not isinstance(like, Direction):
        return vector
    meta = {"control": kind, "seed": seed, "index": index, "target_method": like.method}
    return replace(like, vector=vector, method=f"control_{kind}", metrics={}, meta=meta)


def random_directions(like: DirectionLike, n: int = 8, seed: int = 0) -> list[DirectionLike]:
    """`n` isotropic random directions with the norm of `like` (same layer and model when a `Direction`)."""
    target = _vector(like)
    gen = torch.Generator().manual_seed(seed)
    raw = torch.randn(n, target.shape[-1], generator=gen, dtype=torch.float64)
    vectors = (raw / raw.norm(dim=1, keepdim=True) * target.double().norm()).float()
    return [_wrap(like, v, "random", seed, i) for i, v in enumerate(vectors)]


def orthogonal_directions(like: DirectionLike, n: int = 8, seed: int = 0) -> list[DirectionLike]:
    """`n` random directions orthogonal to `like` and to each other, with the norm of `like`."""
    target = _vector(like).double()
    width = target.shape[-1]
    if n > width - 1:
        raise NotSupportedError(
            f"at most {width - 1} directions are orthogonal to a width-{width} target, asked for {n}"
        )
    gen = torch.Generator().manual_seed(seed)
    basis = torch.cat([target.unsqueeze(1), torch.randn(width, n, generator=gen, dtype=torch.float64)], dim=1)
    q, _ = torch.linalg.qr(basis)  # first column spans the target; the rest are orthogonal to it
    vectors = (q[:, 1:].T * target.norm()).float()
    return [_wrap(like, v, "orthogonal", seed, i) for i, v in enumerate(vectors)]


CONTROL_KINDS: dict[str, Callable[[DirectionLike, int, int], list[DirectionLike]]] = {
    "random": random_directions,
    "orthogonal": orthogonal_directions,
}


def control_directions(
    like: DirectionLike, n: int = 4, seed: int = 0, kinds: Sequence[str] = ("random", "orthogonal")
) -> dict[str, DirectionLike]:
    """`n` controls of each kind, named ``"random:0"``, ``"orthogonal:0"``, ..."""
    makers = {kind: lookup(CONTROL_KINDS, kind, "control kind") for kind in kinds}
    return {f"{kind}:{i}": d for kind, make in makers.items() for i, d in enumerate(make(like, n, seed))}


@dataclass(frozen=True)
class ControlComparison:
    """Where a target's effect falls among control effects."""

    target: float
    n_controls: int
    control_mean: float
    control_std: float  # sample standard deviation (ddof=1)
    control_min: float
    control_max: float
    z: float  # (target - mean) / std; inf when the controls do not vary
    percentile: float  # % of controls below the target (ties count half)
    n_as_extreme: int  # controls at least as far from the control mean as the target
    p_value: float  # (1 + n_as_extreme) / (1 + n): two-sided empirical p; its floor is 1/(n+1)
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return self.verdict


def compare_to_controls(target_effect: float, control_effects: Sequence[float]) -> ControlComparison:
    """Compare `target_effect` with `control_effects` (same measurement, control directions)."""
    t = float(target_effect)
    c = [float(x) for x in control_effects]
    n = len(c)
    if n == 0:
        raise NotSupportedError("compare_to_controls needs at least one control effect")
    mean = sum(c) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in c) / (n - 1)) if n > 1 else float("nan")
    dev = t - mean
    if n > 1 and std > 0:
        z = dev / std
    else:
        z = 0.0 if dev == 0 else math.copysign(math.inf, dev)
    percentile = 100.0 * (sum(x < t for x in c) + 0.5 * sum(x == t for x in c)) / n
    n_extreme = sum(abs(x - mean) >= abs(dev) for x in c)
    p = (1 + n_extreme) / (1 + n)
    return ControlComparison(
        target=t,
        n_controls=n,
        control_mean=mean,
        control_std=std,
        control_min=min(c),
        control_max=max(c),
        z=z,
        percentile=percentile,
        n_as_extreme=n_extreme,
        p_value=p,
        verdict=_verdict(t, mean, std, min(c), max(c), z, p, n),
    )


def _verdict(t: float, mean: float, std: float, lo: float, hi: float, z: float, p: float, n: int) -> str:
    head = f"target {t:+.4g} vs controls {mean:+.4g} ± {std:.3g} (n={n}, range {lo:+.4g}..{hi:+.4g}); "
    if n < 3:
        return head + "too few controls to judge: use at least 5"
    if lo <= t <= hi:
        return head + f"within the control range (z={z:+.2f}): not distinguishable from a control direction"
    side = "above" if t > hi else "below"
    return (
        head
        + f"{side} every control (z={z:+.2f}, empirical p={p:.3g}; n={n} controls cannot give p < {1 / (n + 1):.3g})"
    )


VERDICTS = ("specific", "real but not specific", "none", "undefined")


def specificity_verdict(
    effect: float | None, ci_low: float | None, ci_high: float | None, control_effects: Sequence[float]
) -> str:
    """One of `VERDICTS` for a target's effect (with its 95% interval) beside the same effect of control directions.

    "specific": the interval excludes 0 and the effect lies outside the controls' range (strictly
    above the largest or below the smallest); "real but not specific": the interval excludes 0
    but a control moved the metric as far; "none": the interval includes 0; "undefined": no
    effect or interval (nothing scored), or no control effect to compare with while the
    interval excludes 0. With few controls the range is a weak bar: use at least 3 of each kind.
    """
    if effect is None or ci_low is None or ci_high is None:
        return "undefined"
    if ci_low <= 0.0 <= ci_high:
        return "none"
    controls = [float(x) for x in control_effects if x is not None and not math.isnan(float(x))]
    if not controls:
        return "undefined"
    return "specific" if effect > max(controls) or effect < min(controls) else "real but not specific"
