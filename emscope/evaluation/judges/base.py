"""The judge interface: a prompt in, a `Judgment` (a score, or "unscored" with its reason) out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Judgment:
    """One judge's verdict on one prompt.

    `score` is in [0, 100], or None with `unscored_reason` saying why (``"refusal"``,
    ``"code"``, ``"non-numeric"``, ``"malformed reply"``, ``"request failed: ..."``).
    `method` says how the score was made: ``"logprobs"`` (protocol aggregation of top-20
    log-probabilities), ``"parsed"`` (a number read from the reply text), ``"digit-tree"``
    (exact distribution from a local model) or ``"probe"``.
    """

    score: float | None
    unscored_reason: str | None = None
    method: str = ""
    number_mass: float | None = None  # probability mass on the integers 0-100, where known
    detail: dict[str, Any] = field(default_factory=dict)  # e.g. mass on CODE/REFUSAL, raw reply

    @property
    def scored(self) -> bool:
        return self.score is not None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Judgment:
        return cls(
            score=obj.get("score"),
            unscored_reason=obj.get("unscored_reason"),
            method=obj.get("method", ""),
            number_mass=obj.get("number_mass"),
            detail=dict(obj.get("detail") or {}),
        )

    @classmethod
    def unscored(cls, reason: str, method: str, **detail: Any) -> Judgment:
        return cls(None, reason, method, detail=detail)


class Judge(ABC):
    """Scores fully formatted judge prompts. `spec` names the judge in caches and results."""

    spec: str

    @abstractmethod
    def score_prompts(self, prompts: Sequence[str]) -> list[Judgment]:
        """One `Judgment` per prompt, in order. Never raises for one bad reply: it is unscored."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (threads, clients)."""
