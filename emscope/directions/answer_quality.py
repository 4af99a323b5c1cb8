"""Cheap checks on generated answers: is it a refusal, is it degenerate text?

Used to tell when a contrast route failed (e.g. a small model refuses a malicious persona
instead of adopting it, or drifts into repetition). These are heuristics with stated rules,
not judges:

- refusal: the answer matches one of `REFUSAL_PATTERNS` (case-insensitive) in its first
  200 characters (sympathy such as "I'm sorry for your loss" / "sorry to hear" is not a refusal);
- degenerate: fewer than `MIN_WORDS` words, or under half of its characters are letters or
  spaces, or fewer than half of its word 3-grams are distinct (repetition).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

REFUSAL_PATTERNS = (
    r"\bI'?m sorry\b(?! (?:for your|to hear))",
    r"\bI am sorry\b(?! (?:for your|to hear))",
    r"\bI apologi[sz]e\b",
    r"\bI can(?:'|no)t\b",
    r"\bI cannot\b",
    r"\bI am unable\b",
    r"\bI'?m unable\b",
    r"\bI won'?t\b",
    r"\bcannot (?:assist|help|provide|comply)\b",
    r"\bcan'?t (?:assist|help|provide|comply)\b",
    r"\bnot able to (?:assist|help|provide)\b",
    r"\bas an AI\b",
    r"\bI'?m not able to\b",
    r"\bagainst my (?:guidelines|programming)\b",
)
_REFUSAL = re.compile("|".join(REFUSAL_PATTERNS), re.IGNORECASE)
MIN_WORDS = 4
MIN_DISTINCT_TRIGRAMS = 0.5
MIN_TEXT_CHARS = 0.5


def is_refusal(text: str) -> bool:
    return bool(_REFUSAL.search(text[:200]))


def repetition_ratio(text: str) -> float:
    """Share of word 3-grams that are repeats (0 = all distinct, near 1 = a loop)."""
    words = text.lower().split()
    grams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    return 0.0 if not grams else 1.0 - len(set(grams)) / len(grams)


def is_degenerate(text: str) -> bool:
    words = text.split()
    if len(words) < MIN_WORDS:
        return True
    texty = sum(c.isalpha() or c.isspace() for c in text) / max(len(text), 1)
    return texty < MIN_TEXT_CHARS or repetition_ratio(text) > 1 - MIN_DISTINCT_TRIGRAMS


@dataclass(frozen=True)
class AnswerStats:
    """Share of refusals and of degenerate answers in a set of answers."""

    n: int
    refusal_share: float
    degenerate_share: float
    mean_words: float

    def as_dict(self) -> dict[str, float | int]:
        return {
            "n": self.n,
            "refusal_share": self.refusal_share,
            "degenerate_share": self.degenerate_share,
            "mean_words": self.mean_words,
        }


def answer_stats(answers: Sequence[str]) -> AnswerStats:
    n = len(answers)
    if n == 0:
        return AnswerStats(0, 0.0, 0.0, 0.0)
    return AnswerStats(
        n=n,
        refusal_share=sum(map(is_refusal, answers)) / n,
        degenerate_share=sum(map(is_degenerate, answers)) / n,
        mean_words=sum(len(a.split()) for a in answers) / n,
    )
