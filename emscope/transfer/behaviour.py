"""Steering a receiver with its native direction, a mapped direction and their controls, per prompt.

Every direction is steered the same way (`emscope.interventions.steer`, ``alpha`` times the unit
vector at its layer, all positions) and measured the same way: greedy answers to the prompts are
written under the intervention, then the *plain* receiver reads them and the measure is the mean
projection of the answer's tokens onto the receiver's native direction
(`emscope.interventions.measures.answer_projections`). This is a cheap, judge-free proxy for "the
answers read as misaligned" (the same measure as `emscope steer --sweep`), not a judge's verdict.

Controls (at least 5 of each, `n_controls`): norm-matched ``random`` directions and directions
``orthogonal`` to the target (`emscope.interventions.controls.control_directions`), and for a mapped
direction the ``mapped_random`` ones (random donor directions through the same map). Effects are
per-prompt differences from the unsteered answers, with bootstrap CIs over prompts; the specificity
verdict is `compare_to_controls` of the mean effect against every control's mean effect.

Runs are appended to a JSONL file as they finish (``runs.jsonl``), so a killed study resumes and
runs shared by several donors (plain, native, random) are made once per receiver.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emscope.directions.direction import Direction
from emscope.interventions.controls import compare_to_controls, control_directions
from emscope.interventions.measures import answer_projections, generate_answers
from emscope.interventions.steer import steer
from emscope.models.loading import LoadedModel
from emscope.records import append_jsonl, read_jsonl
from emscope.stats import bootstrap_mean

RUNS_NAME = "runs.jsonl"
PLAIN = "plain"
NATIVE = "native"
MEASURE = "native_projection"  # what every value is: see the module docstring


def per_prompt_projection(
    lm: LoadedModel, native: Direction, prompts: Sequence[str], answers: Sequence[str]
) -> list[float]:
    """The plain receiver's mean projection of each answer onto `native` (NaN for an empty answer)."""
    values = answer_projections(lm, native, prompts, answers).tolist()
    it = iter(values)
    return [float(next(it)) if a.strip() else math.nan for a in answers]


def run_directions(
    lm: LoadedModel,
    directions: Mapping[str, Direction | None],
    prompts: Sequence[str],
    native: Direction,
    alpha: float,
    log_path: str | os.PathLike[str] | None = None,
    max_new_tokens: int = 24,
    batch_size: int = 8,
) -> dict[str, dict[str, Any]]:
    """Steer `lm` along each direction (None: no steering) at `alpha`; measure per prompt; resume from `log_path`.

    Returns ``name -> {"values": [per prompt], "answers": [...]}`` for every name, read back from
    `log_path` where a run with the same name, alpha and prompts is already there.
    """
    done: dict[str, dict[str, Any]] = {}
    if log_path is not None:
        for row in read_jsonl(log_path, missing_ok=True, torn_tail_ok=True):
            if row.get("alpha") == alpha and row.get("prompts") == list(prompts):
                done[row["name"]] = row
    for name, d in directions.items():
        if name in done:
            continue
        if d is None:
            answers = generate_answers(lm, prompts, max_new_tokens, batch_size)
        else:
            with steer(lm, d, alpha):
                answers = generate_answers(lm, prompts, max_new_tokens, batch_size)
        row = {
            "name": name,
            "alpha": alpha,
            "prompts": list(prompts),
            "answers": answers,
            "values": per_prompt_projection(lm, native, prompts, answers),
            "method": d.method if d is not None else PLAIN,
        }
        done[name] = row
        if log_path is not None:
            append_jsonl(log_path, [row])
    return {name: done[name] for name in directions}


def receiver_directions(native: Direction, n_controls: int = 5, seed: int = 0) -> dict[str, Direction | None]:
    """The runs a receiver needs once: plain, native, random controls, controls orthogonal to the native one."""
    controls = control_directions(native, n_controls, seed, ("random", "orthogonal"))
    named: dict[str, Direction | None] = {PLAIN: None, NATIVE: native}
    for name, d in controls.items():
        named[name if name.startswith("random:") else f"native_{name}"] = _direction(d)
    return named


def donor_directions(
    mapped: Direction, mapped_random: Sequence[Direction], donor: str, n_controls: int = 5, seed: int = 0
) -> dict[str, Direction | None]:
    """The runs one donor adds: its mapped direction, controls orthogonal to it, its mapped-random controls."""
    named: dict[str, Direction | None] = {f"mapped:{donor}": mapped}
    for i, d in enumerate(control_directions(mapped, n_controls, seed, ("orthogonal",)).values()):
        named[f"mapped_orthogonal:{donor}:{i}"] = _direction(d)
    for i, d in enumerate(mapped_random[:n_controls]):
        named[f"mapped_random:{donor}:{i}"] = d
    return named


def _direction(d: object) -> Direction:
    if not isinstance(d, Direction):
        raise TypeError(f"expected a Direction control, got {type(d).__name__}")
    return d


def effects(runs: Mapping[str, Mapping[str, Any]], name: str) -> np.ndarray:
    """Per-prompt effect of run `name`: its value minus the plain run's, prompt by prompt."""
    return np.asarray(runs[name]["values"], dtype=float) - np.asarray(runs[PLAIN]["values"], dtype=float)


def _mean(x: np.ndarray) -> float:
    return float(np.nanmean(x)) if np.isfinite(x).any() else math.nan


def specificity(
    runs: Mapping[str, Mapping[str, Any]], target: str, controls: Mapping[str, Sequence[str]], n_boot: int = 2000
) -> dict[str, Any]:
    """The target's mean effect (CI over prompts) beside each control kind's and all controls together."""
    t = effects(runs, target)
    out: dict[str, Any] = {"target": target, "effect": bootstrap_mean(t, n_boot), "by_kind": {}}
    everything: list[float] = []
    for kind, names in controls.items():
        means = [_mean(effects(runs, n)) for n in names]
        everything.extend(means)
        pooled = np.concatenate([effects(runs, n) for n in names]) if names else np.array([])
        out["by_kind"][kind] = {
            "n": len(names),
            "effects": means,
            "effect_pooled": bootstrap_mean(pooled, n_boot),
            "comparison": compare_to_controls(_mean(t), means).to_dict() if means else None,
        }
    out["comparison"] = compare_to_controls(_mean(t), everything).to_dict() if everything else None
    out["verdict"] = out["comparison"]["verdict"] if everything else "no controls"
    out["specific"] = bool(everything) and not (min(everything) <= _mean(t) <= max(everything))
    return out


def behaviour_summary(runs: Mapping[str, Mapping[str, Any]], donors: Sequence[str]) -> dict[str, Any]:
    """Specificity of the native direction and of each donor's mapped direction, from finished runs."""
    random_names = sorted(n for n in runs if n.startswith("random:"))
    native_orth = sorted(n for n in runs if n.startswith("native_orthogonal:"))
    out: dict[str, Any] = {
        "measure": MEASURE,
        "baseline": bootstrap_mean(np.asarray(runs[PLAIN]["values"], dtype=float)),
        NATIVE: specificity(runs, NATIVE, {"random": random_names, "orthogonal": native_orth}),
        "mapped": {},
    }
    for donor in donors:
        key = f"mapped:{donor}"
        if key not in runs:
            continue
        controls = {
            "random": random_names,
            "orthogonal": sorted(n for n in runs if n.startswith(f"mapped_orthogonal:{donor}:")),
            "mapped_random": sorted(n for n in runs if n.startswith(f"mapped_random:{donor}:")),
        }
        out["mapped"][donor] = specificity(runs, key, controls)
    return out


def default_alpha(neutral: torch.Tensor, scale: float = 1.0) -> float:
    """`scale` times the median norm of a receiver's pooled neutral activations (its residual scale at the layer)."""
    return float(scale * neutral.float().norm(dim=1).median())


def runs_path(directory: str | os.PathLike[str]) -> Path:
    return Path(directory) / RUNS_NAME
