"""What a latent does: steer along its decoder row or ablate it, against controls, read on a projection.

The effect of an intervention is the change of a model's mean projection onto a readout
direction (e.g. the misalignment direction at a later layer) over the response tokens of
transcripts, intervened minus plain, paired by transcript, with a 95% bootstrap interval.

- steering adds ``alpha * unit(decoder row)`` at the SAE's site (`emscope.interventions.steer`);
  its controls are frequency-matched other latents (the latents whose firing rate is
  closest to the target's), and norm-matched random and orthogonal directions
  (`emscope.interventions.controls`), all with the same alpha;
- ablation subtracts the latent's own contribution ``z_i(x) * W_dec[i]`` at the site on every
  token; its controls are the frequency-matched latents, ablated the same way.

`compare_to_controls` then says where the target's effect falls among the controls'.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from emscope.activations.capture import capture_activations
from emscope.activations.sites import Site, hook_site
from emscope.data.transcripts import Transcript
from emscope.directions.direction import Direction
from emscope.errors import ConfigError
from emscope.interventions.controls import ControlComparison, compare_to_controls, control_directions
from emscope.interventions.handle import Intervention, attach
from emscope.interventions.steer import steer
from emscope.models.loading import LoadedModel
from emscope.sae.model import SparseAutoencoder
from emscope.stats import bootstrap_mean


def ablate_latent(lm: LoadedModel, sae: SparseAutoencoder, latent: int) -> Intervention:
    """Remove `latent`'s contribution ``z_latent(x) * W_dec[latent]`` from the SAE's site on every token."""
    local = sae.to(lm.device)
    row = local.W_dec[latent]

    def hook(hidden: torch.Tensor) -> torch.Tensor:
        z = local.encode(hidden.to(local.dtype))[..., latent] * local.in_domain(hidden)
        return (hidden - (z.unsqueeze(-1) * row).to(hidden.dtype)).to(hidden.dtype)

    return attach([lambda: hook_site(lm, Site(sae.site, sae.layer), hook)], f"ablate sae latent {latent}")


def projections(
    lm: LoadedModel, transcripts: Sequence[Transcript], readout: Direction, max_length: int | None = 256
) -> np.ndarray:
    """[N]: each transcript's mean response-token activation at the readout's layer, projected on its unit vector."""
    acts = capture_activations(
        lm, list(transcripts), layers=[readout.layer], pool="mean", max_length=max_length, progress=False
    )
    return (acts.pooled[readout.layer].float() @ readout.unit).numpy()


def frequency_matched(rates: torch.Tensor, latent: int, n: int) -> list[int]:
    """The `n` latents other than `latent` whose firing rate is closest to its rate (alive latents only)."""
    gap = (rates - rates[latent]).abs()
    gap[latent] = float("inf")
    gap[rates <= 0] = float("inf")
    return [int(i) for i in torch.argsort(gap)[:n] if torch.isfinite(gap[i])]


@dataclass(frozen=True)
class InterventionEffect:
    """One intervention's effect on the readout projection (intervened - plain), mean over transcripts."""

    name: str
    kind: str  # "target", "latent", "random", "orthogonal"
    value: float
    ci_low: float | None
    ci_high: float | None
    n: int


@dataclass(frozen=True)
class LatentEffects:
    latent: int
    operation: str  # "steer" or "ablate"
    alpha: float | None
    readout: str
    target: InterventionEffect
    controls: list[InterventionEffect]
    comparison: ControlComparison

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["comparison"] = self.comparison.to_dict()
        return out


def _effect(
    name: str, kind: str, plain: np.ndarray, make: Callable[[], Intervention], measure: Callable[[], np.ndarray]
) -> InterventionEffect:
    with make():
        moved = measure()
    ci = bootstrap_mean(moved - plain)
    return InterventionEffect(name, kind, float(ci["value"] or 0.0), ci["ci_low"], ci["ci_high"], len(plain))  # type: ignore[arg-type]


def latent_effects(
    lm: LoadedModel,
    sae: SparseAutoencoder,
    latent: int,
    transcripts: Sequence[Transcript],
    readout: Direction,
    rates: torch.Tensor,
    operation: str = "steer",
    alpha: float = 8.0,
    n_matched: int = 5,
    n_directions: int = 3,
    seed: int = 0,
    max_length: int | None = 256,
) -> LatentEffects:
    """The effect of steering (``alpha``) or ablating `latent` on the `readout` projection, with its controls.

    `rates` [n_latents] are the latents' firing rates (e.g. ``LatentDiff.rate_base``), used to
    pick the frequency-matched control latents.
    """
    if readout.layer < sae.layer:
        raise ConfigError(
            f"the readout is at layer {readout.layer}, before the SAE's layer {sae.layer}, so no intervention can move "
            "it: use a readout direction at the SAE's layer or later"
        )

    def measure() -> np.ndarray:
        return projections(lm, transcripts, readout, max_length)

    plain = measure()
    matched = frequency_matched(rates, latent, n_matched)
    if operation == "ablate":

        def make_latent(i: int) -> Callable[[], Intervention]:
            return lambda: ablate_latent(lm, sae, i)

        target = _effect(f"latent:{latent}", "target", plain, make_latent(latent), measure)
        controls = [_effect(f"latent:{i}", "latent", plain, make_latent(i), measure) for i in matched]
    else:

        def make_steer(d: Any) -> Callable[[], Intervention]:
            return lambda: steer(lm, d, alpha, layers=sae.layer, site=sae.site)

        own = sae.decoder_direction(latent)
        target = _effect(f"latent:{latent}", "target", plain, make_steer(own), measure)
        controls = [
            _effect(f"latent:{i}", "latent", plain, make_steer(sae.decoder_direction(i)), measure) for i in matched
        ]
        for name, d in control_directions(own, n=n_directions, seed=seed).items():
            controls.append(_effect(name, name.split(":")[0], plain, make_steer(d), measure))
    return LatentEffects(
        latent=latent,
        operation=operation,
        alpha=alpha if operation == "steer" else None,
        readout=f"{readout.method}@{readout.site}.{readout.layer}",
        target=target,
        controls=controls,
        comparison=compare_to_controls(target.value, [c.value for c in controls]),
    )
