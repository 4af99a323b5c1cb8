"""Geometry and detection of a mapped direction in its receiver, each beside its controls.

For a donor direction mapped into a receiver (`emscope.transfer.mapped.map_direction`):

- geometry: the cosine of the mapped direction with the receiver's native direction, against the
  cosines of mapped-random donor directions (the map's own bias) and of receiver-random directions
  (chance in the receiver's width);
- detection: the mapped direction's AUROC on the receiver's held-out corpus pairs (the same pairs
  the native direction is scored on), beside the native direction's, and against the AUROCs of
  mapped-random directions.

Both need only captured activations (`emscope.transfer.paired.ModelSide`), no model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from emscope.directions.detect import project
from emscope.directions.direction import Direction
from emscope.directions.extract import train_test_split
from emscope.interventions.controls import compare_to_controls, random_directions
from emscope.stats import auroc
from emscope.transfer.mapped import map_direction, mapped_random_directions
from emscope.transfer.maps import ActivationMap
from emscope.transfer.paired import ModelSide


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float(a @ b / (a.norm() * b.norm()).clamp_min(1e-30))


def held_out_auroc(side: ModelSide, vector: torch.Tensor, test: torch.Tensor) -> float:
    """AUROC of `vector`'s projection, misaligned vs aligned, on the corpus rows `test`."""
    return auroc(project(side.pos[test], vector).numpy(), project(side.neg[test], vector).numpy())


@dataclass(frozen=True)
class PairReport:
    """Geometry and detection of one donor direction mapped into one receiver."""

    donor: str
    receiver: str
    map_kind: str
    map_r2_heldout: float
    geometry: dict[str, Any]
    detection: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "donor": self.donor,
            "receiver": self.receiver,
            "map_kind": self.map_kind,
            "map_r2_heldout": self.map_r2_heldout,
            "geometry": self.geometry,
            "detection": self.detection,
        }


def analyse_pair(
    activation_map: ActivationMap,
    donor_direction: Direction,
    receiver: ModelSide,
    receiver_native: Direction,
    *,
    n_random: int = 100,
    test_frac: float = 0.3,
    seed: int = 0,
) -> PairReport:
    """Geometry and detection of `donor_direction` mapped into `receiver`, with their controls.

    The held-out corpus rows are those of `train_test_split(P, P, test_frac, seed)`, the split
    `ModelSide.native_direction` trains on: the native direction never saw them, nor did the map.
    """
    mapped = map_direction(activation_map, donor_direction)
    native = receiver_native.vector
    mapped_random = mapped_random_directions(activation_map, donor_direction, n_random, seed + 1)
    receiver_random = random_directions(receiver_native, n_random, seed + 2)
    cos = cosine(mapped.vector, native)
    cos_mr = [cosine(d.vector, native) for d in mapped_random]
    cos_rr = [cosine(_vec(d), native) for d in receiver_random]
    geometry = {
        "cosine": cos,
        "mapped_random": _summary(cos_mr),
        "receiver_random": _summary(cos_rr),
        "vs_mapped_random": compare_to_controls(cos, cos_mr).to_dict(),
        "vs_receiver_random": compare_to_controls(cos, cos_rr).to_dict(),
        "n_random": n_random,
    }
    split = train_test_split(len(receiver.pos), len(receiver.neg), test_frac, seed)
    test = split.pos_test
    a_mapped = held_out_auroc(receiver, mapped.vector, test)
    a_native = held_out_auroc(receiver, native, test)
    n_det = min(n_random, 20)
    a_mr = [held_out_auroc(receiver, d.vector, test) for d in mapped_random[:n_det]]
    detection = {
        "auroc_mapped": a_mapped,
        "auroc_native": a_native,
        "auroc_mapped_random": _summary(a_mr),
        "vs_mapped_random": compare_to_controls(a_mapped, a_mr).to_dict(),
        "n_test_pairs": int(len(test)),
    }
    return PairReport(
        donor=activation_map.source.model,
        receiver=activation_map.target.model,
        map_kind=activation_map.kind,
        map_r2_heldout=activation_map.r2_heldout,
        geometry=geometry,
        detection=detection,
    )


def _vec(d: Direction | torch.Tensor) -> torch.Tensor:
    return d.vector if isinstance(d, Direction) else d


def _summary(values: list[float]) -> dict[str, float]:
    v = np.asarray(values, dtype=float)
    return {
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)) if len(v) > 1 else float("nan"),
        "abs_p95": float(np.percentile(np.abs(v), 95)),
        "n": int(len(v)),
    }
