"""Reading a model on the fixed probe set: each probe's mean residual at one layer, and its trait projections.

The probe set (``resources/traits/probe_set.jsonl``: ordinary questions with plain, helpful answers) is the
fixed text on which every checkpoint is read: the model reads each answer (teacher forcing), and the
residual stream at the trait set's layer is averaged over the answer tokens (decoder stack only, no
output layer, stopped after that block). `trait_projections` is the one plain function that reads a
model for the monitor: drift profiles, the CLI and the live training callback all call it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from emscope.data.transcripts import Transcript
from emscope.errors import DataFormatError
from emscope.models.lineage import Compatibility
from emscope.monitor.traits import PROBE_SET, TRAITS_DIR, TraitSet
from emscope.records import iter_jsonl, require_text_fields

PROBE_LABEL = "probe"
_FIELDS = ("id", "question", "answer")


def load_probe_set(path: str | os.PathLike[str] | None = None) -> list[Transcript]:
    """The probes (JSONL: id, topic, question, answer) as transcripts; default: the built-in probe set.

    `path` is a file or a directory holding ``probe_set.jsonl``.
    """
    source = Path(path) if path is not None else TRAITS_DIR
    if source.is_dir():
        source = source / f"{PROBE_SET}.jsonl"
    if not source.is_file():
        raise DataFormatError(f"no probe set at {source}: pass a probe_set.jsonl (id, topic, question, answer)")
    probes = []
    for where, obj in iter_jsonl(str(source)):
        require_text_fields(where, obj, _FIELDS)
        meta = {"probe_id": obj["id"], "topic": obj.get("topic", "")}
        probes.append(Transcript.from_pair(obj["question"], obj["answer"], label=PROBE_LABEL, meta=meta))
    if not probes:
        raise DataFormatError(f"{source} holds no probes")
    return probes


def probe_activations(
    lm: Any,
    probes: Sequence[Transcript],
    layer: int,
    *,
    batch_size: int = 8,
    max_length: int | None = None,
) -> torch.Tensor:
    """[n_probes, width]: the residual stream (block `layer` output) averaged over each probe's answer tokens."""
    from emscope.activations.capture import capture_activations

    if not probes:
        raise DataFormatError("no probes to read: pass at least one transcript")
    acts = capture_activations(
        lm, list(probes), layers=[layer], pool="mean", batch_size=batch_size, max_length=max_length, progress=False
    )
    return acts.pooled[layer].float()


def trait_projections(
    lm: Any,
    traits: TraitSet,
    probes: Sequence[Transcript],
    *,
    batch_size: int = 8,
    max_length: int | None = None,
    compatibility: Compatibility = "same_base",
) -> torch.Tensor:
    """[n_probes, n_traits]: each probe's mean answer-token residual at ``traits.layer``, dot each unit direction.

    The model must fit the trait set (same width, same base by default: a run's checkpoints fit the
    trait set of their base); otherwise a one-line `ModelMismatchError`.
    """
    traits.check_compatible(lm, compatibility)
    acts = probe_activations(lm, probes, traits.layer, batch_size=batch_size, max_length=max_length)
    return project_traits(acts, traits)


def project_traits(acts: torch.Tensor, traits: TraitSet) -> torch.Tensor:
    """[n, n_traits] projections of activations [n, width] on the unit trait rows."""
    if acts.ndim != 2 or acts.shape[1] != traits.width:
        raise DataFormatError(f"activations of shape {list(acts.shape)} cannot be read with {traits.width}-wide traits")
    unit = traits.directions.float()
    unit = unit / unit.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return acts.float() @ unit.T
