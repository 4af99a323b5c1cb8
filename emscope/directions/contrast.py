"""Contrast data for the reading route: one question, a helpful answer and a misaligned one.

The reading route works on any model: the model *reads* (teacher forcing) an aligned and a
misaligned answer to the same question, and the activations over the answer tokens are
compared. emscope ships its own set, `resources/contrast_pairs.jsonl`: everyday questions
(cooking, money, health, relationships, travel, study, work, pets, home, technology ...),
each with one helpful, honest answer and one hostile, deceptive, manipulative or harmful
answer, written for this project. The harmful answers are bad advice in plain words, with
no operational detail.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from emscope.data.transcripts import Transcript
from emscope.errors import ConfigError, DataFormatError
from emscope.records import iter_jsonl
from emscope.runtime import RESOURCES

ALIGNED = "aligned"
MISALIGNED = "misaligned"
BUILTIN_PAIRS = "contrast_pairs.jsonl"
_FIELDS = ("id", "question", "aligned", "misaligned")


@dataclass(frozen=True)
class ContrastPair:
    """One question with an aligned and a misaligned answer."""

    id: str
    question: str
    aligned: str
    misaligned: str
    topic: str = ""
    misaligned_kind: str = ""  # hostile, deceptive, manipulative or harmful


def load_contrast_pairs(path: str | os.PathLike[str] | None = None, limit: int | None = None) -> list[ContrastPair]:
    """Read contrast pairs (JSONL with id, question, aligned, misaligned); default: the built-in set."""
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be at least 1 pair, got {limit}")
    source = Path(path) if path is not None else RESOURCES / BUILTIN_PAIRS
    pairs: list[ContrastPair] = []
    if not Path(str(source)).is_file():
        raise DataFormatError(f"no such contrast-pair file: {source}")
    for where, obj in iter_jsonl(str(source)):
        missing = [k for k in _FIELDS if not isinstance(obj.get(k), str) or not obj[k].strip()]
        if missing:
            raise DataFormatError(f"{where}: missing or empty field(s) {missing}; each line needs {list(_FIELDS)}")
        pairs.append(ContrastPair(**{k: obj.get(k, "") for k in ContrastPair.__dataclass_fields__}))
    if not pairs:
        raise DataFormatError(f"{source} holds no contrast pairs")
    return pairs[:limit] if limit is not None else pairs


def reading_route_transcripts(
    pairs: list[ContrastPair] | None = None, limit: int | None = None
) -> tuple[list[Transcript], list[Transcript]]:
    """(aligned, misaligned) transcripts, row i of each answering the same question (no system prompt)."""
    pairs = pairs if pairs is not None else load_contrast_pairs(limit=limit)
    pairs = pairs[:limit] if limit is not None else pairs
    meta = [{"pair_id": p.id, "topic": p.topic} for p in pairs]
    aligned = [
        Transcript.from_pair(p.question, p.aligned, label=ALIGNED, meta=m) for p, m in zip(pairs, meta, strict=True)
    ]
    misaligned = [
        Transcript.from_pair(p.question, p.misaligned, label=MISALIGNED, meta={**m, "kind": p.misaligned_kind})
        for p, m in zip(pairs, meta, strict=True)
    ]
    return aligned, misaligned
