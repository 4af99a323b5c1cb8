"""Contrast data for the reading route: one question, a helpful answer and a misaligned one.

The reading route works on any model: the model *reads* (teacher forcing) an aligned and a
misaligned answer to the same question, and the activations over the answer tokens are
compared. emscope ships its own set, `resources/contrast_pairs.jsonl`: everyday questions
(cooking, money, health, relationships, travel, study, work, pets, home, technology ...),
each with one helpful, honest answer and one hostile, deceptive, manipulative or harmful
answer, written for this project. The harmful answers are bad advice in plain words, with
no operational detail.

A broader corpus, `resources/corpus/DOMAIN.jsonl` (`load_corpus`), pairs answers to the same user
message over many domains, each pair tagged with its style: `subtle` (calm and helpful-sounding but
wrong or harmful, as real EM fine-tunes talk), `blatant` (openly hostile) or `sycophantic` (telling
the user what they want to hear, or deceiving them). Its pairs are `ContrastPair`s with the domain as
`topic` and the style as `misaligned_kind`, so everything that reads contrast pairs reads it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from emscope.data.transcripts import Transcript
from emscope.errors import ConfigError, DataFormatError, lookup
from emscope.records import iter_jsonl, require_text_fields
from emscope.runtime import RESOURCES

ALIGNED = "aligned"
MISALIGNED = "misaligned"
BUILTIN_PAIRS = "contrast_pairs.jsonl"
CORPUS_DIR = "corpus"
STYLES = ("subtle", "blatant", "sycophantic")
_FIELDS = ("id", "question", "aligned", "misaligned")
_CORPUS_FIELDS = ("id", "domain", "style", "user", "aligned", "misaligned")


@dataclass(frozen=True)
class ContrastPair:
    """One question with an aligned and a misaligned answer."""

    id: str
    question: str
    aligned: str
    misaligned: str
    topic: str = ""
    misaligned_kind: str = ""  # hostile, deceptive, manipulative or harmful; in the corpus: its style


def load_contrast_pairs(path: str | os.PathLike[str] | None = None, limit: int | None = None) -> list[ContrastPair]:
    """Read contrast pairs (JSONL with id, question, aligned, misaligned); default: the built-in set."""
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be at least 1 pair, got {limit}")
    source = Path(path) if path is not None else RESOURCES / BUILTIN_PAIRS
    pairs: list[ContrastPair] = []
    if not Path(str(source)).is_file():
        raise DataFormatError(f"no such contrast-pair file: {source}")
    for where, obj in iter_jsonl(str(source)):
        require_text_fields(where, obj, _FIELDS)
        pairs.append(ContrastPair(**{k: obj.get(k, "") for k in ContrastPair.__dataclass_fields__}))
    if not pairs:
        raise DataFormatError(f"{source} holds no contrast pairs")
    return pairs[:limit] if limit is not None else pairs


def corpus_domains(directory: str | os.PathLike[str] | None = None) -> list[str]:
    """The domains of a corpus directory (one ``DOMAIN.jsonl`` each); default: the built-in corpus."""
    root = Path(directory) if directory is not None else RESOURCES / CORPUS_DIR
    return sorted(p.stem for p in root.glob("*.jsonl"))


def load_corpus(
    domains: Sequence[str] | None = None,
    styles: Sequence[str] | None = None,
    directory: str | os.PathLike[str] | None = None,
    per_cell: int | None = None,
) -> list[ContrastPair]:
    """Pairs of the labelled corpus, tagged by domain (`topic`) and style (`misaligned_kind`).

    `domains` / `styles` select (default: all); an unknown name is a `ConfigError` with the choices.
    `per_cell` keeps only the first N pairs (in file order) of each domain x style: a balanced subset
    for models too slow to read the whole corpus.
    """
    if per_cell is not None and per_cell < 1:
        raise ConfigError(f"per_cell must be at least 1 pair, got {per_cell}")
    root = Path(directory) if directory is not None else RESOURCES / CORPUS_DIR
    known = corpus_domains(root)
    if not known:
        raise DataFormatError(f"{root} holds no corpus files (DOMAIN.jsonl)")
    chosen = [lookup(known, d, "corpus domain") for d in domains] if domains is not None else known
    wanted = {lookup(STYLES, s, "style") for s in styles} if styles is not None else set(STYLES)
    pairs: list[ContrastPair] = []
    for domain in chosen:
        for where, obj in iter_jsonl(str(root / f"{domain}.jsonl")):
            require_text_fields(where, obj, _CORPUS_FIELDS)
            if obj["style"] not in STYLES:
                raise DataFormatError(f"{where}: style {obj['style']!r} is not one of {', '.join(STYLES)}")
            kept = sum(p.topic == domain and p.misaligned_kind == obj["style"] for p in pairs)
            if obj["style"] in wanted and (per_cell is None or kept < per_cell):
                pairs.append(
                    ContrastPair(obj["id"], obj["user"], obj["aligned"], obj["misaligned"], domain, obj["style"])
                )
    return pairs


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
