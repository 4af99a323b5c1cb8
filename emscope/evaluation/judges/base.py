"""The judge interface: a prompt in, a `Judgment` (a score, or "unscored" with its reason) out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from emscope.evaluation.judges.redaction import redact_obj

# Unscored reasons that are the judge's verdict on the answer (it replied, with a word instead of a
# number): cached and final. Every other unscored reason (a failed request, a malformed reply) is a
# failure of the judge, never cached, and tried again by the next run.
VERDICT_REASONS = ("code", "refusal", "non-numeric")


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

    def __post_init__(self) -> None:  # error texts may echo credentials: none is ever stored
        object.__setattr__(self, "unscored_reason", redact_obj(self.unscored_reason))
        object.__setattr__(self, "detail", redact_obj(self.detail))

    @property
    def scored(self) -> bool:
        return self.score is not None

    @property
    def is_verdict(self) -> bool:
        """A real judgment (a score, or CODE / REFUSAL / a non-numeric reply), not a failure to judge."""
        return self.score is not None or self.unscored_reason in VERDICT_REASONS

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
    """Scores fully formatted judge prompts. `spec` names the judge in caches and results.

    `prompt` is the one judge-prompt template the judge can read (a probe judge reads the
    prompt its probe was trained on), or None when any template will do.
    """

    spec: str
    prompt: str | None = None

    @abstractmethod
    def score_prompts(self, prompts: Sequence[str]) -> list[Judgment]:
        """One `Judgment` per prompt, in order. Never raises for one bad reply: it is unscored."""

    def iter_scores(self, prompts: Sequence[str], chunk: int = 32) -> Iterator[tuple[int, Judgment]]:
        """``(index, judgment)`` pairs, as each judgment is ready (in any order), so a caller can store each.

        This default scores `chunk` prompts per `score_prompts` call; judges that can hand
        over judgments one by one (all of emscope's) override it.
        """
        for start in range(0, len(prompts), max(1, chunk)):
            yield from enumerate(self.score_prompts(prompts[start : start + chunk]), start)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (threads, clients)."""
