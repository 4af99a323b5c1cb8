"""What a monitor reads: one answer to one user message, with its label, pair, domain and style."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from emscope.data.transcripts import Transcript
from emscope.directions.contrast import ContrastPair
from emscope.errors import DataFormatError

POSITIVE, NEGATIVE = 1, 0  # 1 = misaligned (what a monitor flags), 0 = aligned


@dataclass(frozen=True)
class MonitorItem:
    """One transcript to monitor. `group` keeps a pair's two answers together in every split."""

    user: str
    answer: str
    label: int | None = None  # 1 = misaligned, 0 = aligned, None = unlabelled
    group: str = ""
    domain: str = ""
    style: str = ""

    @property
    def transcript(self) -> Transcript:
        return Transcript.from_pair(self.user, self.answer)

    @property
    def key(self) -> str:
        """A content hash: cached features are looked up by it."""
        return hashlib.sha256(f"{self.user}\x00{self.answer}".encode()).hexdigest()[:20]


def corpus_items(pairs: Sequence[ContrastPair]) -> list[MonitorItem]:
    """Both answers of each pair (aligned: 0, misaligned: 1), tagged with the pair id, domain and style."""
    out: list[MonitorItem] = []
    for p in pairs:
        out.append(MonitorItem(p.question, p.aligned, NEGATIVE, p.id, p.topic, p.misaligned_kind))
        out.append(MonitorItem(p.question, p.misaligned, POSITIVE, p.id, p.topic, p.misaligned_kind))
    return out


def labels(items: Sequence[MonitorItem]) -> np.ndarray:
    """The items' labels [N] (every item must have one)."""
    missing = sum(it.label is None for it in items)
    if missing:
        raise DataFormatError(f"{missing} of {len(items)} items have no label; fitting needs labels 0/1 on every item")
    return np.array([it.label for it in items], dtype=int)


def subsample_pairs(pairs: Sequence[ContrastPair], per_cell: int, seed: int = 0) -> list[ContrastPair]:
    """At most `per_cell` pairs of every (domain, style) cell, drawn at random (seeded), in corpus order."""
    rng = np.random.default_rng(seed)
    cells: dict[tuple[str, str], list[int]] = {}
    for i, p in enumerate(pairs):
        cells.setdefault((p.topic, p.misaligned_kind), []).append(i)
    keep: set[int] = set()
    for idx in cells.values():
        keep.update(int(i) for i in rng.permutation(idx)[:per_cell])
    return [p for i, p in enumerate(pairs) if i in keep]


def nested_subsamples(pairs: Sequence[ContrastPair], per_cell: int, seed: int = 0) -> list[list[ContrastPair]]:
    """``subsample_pairs(pairs, k) - subsample_pairs(pairs, k - 1)`` for k = 1..`per_cell`.

    Reading them in this order makes every prefix of the work a balanced subsample: a run
    stopped early still holds ``subsample_pairs(pairs, k)`` for the last k it finished.
    """
    out: list[list[ContrastPair]] = []
    seen: set[str] = set()
    for k in range(1, per_cell + 1):
        new = [p for p in subsample_pairs(pairs, k, seed) if p.id not in seen]
        seen.update(p.id for p in new)
        out.append(new)
    return out
