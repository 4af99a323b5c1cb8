"""Neutral transcripts to fit maps on: chats that share nothing with the labelled contrast data.

A map fitted on the contrast corpus itself would be fitted on the very difference it is asked to carry,
and a mapped direction would then agree with the receiver's native one by construction. So maps are
fitted on other transcripts: any JSONL chats given (e.g. the secure / educational coding chats of the
public emergent-misalignment data), plus emscope's own answers to its evaluation questions that are
labelled aligned or coherent (`resources/judge/*.jsonl`). `check_disjoint` refuses a set that shares a
user message or an answer with the contrast corpus.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence

from emscope.data.transcripts import Transcript, load_transcripts
from emscope.directions.contrast import ContrastPair
from emscope.errors import DataFormatError
from emscope.records import iter_jsonl
from emscope.runtime import RESOURCES

ANSWER_FILES = ("judge/labelled_answers.jsonl", "judge/coherence_answers.jsonl")
NEUTRAL_LABELS = ("aligned", "coherent")


def builtin_answers() -> list[Transcript]:
    """emscope's answers to its own questions labelled aligned or coherent (no misaligned or incoherent one)."""
    out: list[Transcript] = []
    for name in ANSWER_FILES:
        for where, obj in iter_jsonl(str(RESOURCES / name)):
            if obj.get("label") in NEUTRAL_LABELS:
                out.append(Transcript.from_pair(obj["question"], obj["answer"], label="neutral", source=where))
    return out


def neutral_transcripts(
    files: Sequence[str | os.PathLike[str]] = (),
    n: int = 300,
    seed: int = 0,
    include_builtin: bool = True,
    max_chars: int = 600,
) -> list[Transcript]:
    """Up to `n` neutral transcripts: the built-in answers, then a seeded sample spread evenly over `files`.

    Transcripts whose text is longer than `max_chars` are skipped (pooled activations of the first few
    hundred tokens are what a map needs; long code files only cost time).
    """
    if n < 4:
        raise DataFormatError(f"a map needs at least 4 neutral transcripts, asked for {n}")
    chosen = builtin_answers()[:n] if include_builtin else []
    pools = []
    for path in files:
        rows = [t for t in load_transcripts(path) if t.has_assistant and _chars(t) <= max_chars]
        random.Random(seed).shuffle(rows)
        pools.append(rows)
    i = 0
    while len(chosen) < n and any(i < len(p) for p in pools):
        chosen.extend(p[i] for p in pools if i < len(p) and len(chosen) < n)
        i += 1
    if len(chosen) < 4:
        raise DataFormatError(
            f"only {len(chosen)} neutral transcripts found; pass chat files (--neutral FILE.jsonl) with more"
        )
    return chosen


def _chars(t: Transcript) -> int:
    return sum(len(m["content"]) for m in t.messages)


def check_disjoint(neutral: Sequence[Transcript], pairs: Sequence[ContrastPair]) -> None:
    """Raise if a neutral transcript repeats a question or an answer of the contrast pairs."""
    held = {text.strip() for p in pairs for text in (p.question, p.aligned, p.misaligned)}
    for t in neutral:
        for m in t.messages:
            if m["content"].strip() in held:
                raise DataFormatError(
                    f"neutral transcript {t.where()} repeats text of the contrast data ({m['content'][:60]!r}); "
                    "maps must be fitted on transcripts that share nothing with it: drop it from the neutral set"
                )
