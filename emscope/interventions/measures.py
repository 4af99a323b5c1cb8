"""Measurements of a model's behaviour, for `emscope.interventions.dose_response` and the `steer` command.

A measure is either a callable ``measure(lm) -> float``, run entirely under the
intervention, or a two-phase measure (`TwoPhaseMeasure`): ``generate(lm)`` runs under the
intervention and ``score(lm, outputs)`` runs on the unmodified model. The default,
`AnswerProjection`, is two-phase: the intervened model writes greedy answers, and the
plain model reads them, reporting the mean projection of the answers' activations onto
the direction (a cheap, judge-free proxy for "the answers look like the target class").
Reading the answers with the plain model keeps the number about *what was said*, not
about the vector the intervention itself added to the stream.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from emscope.data.transcripts import Transcript
from emscope.directions.detect import score
from emscope.directions.direction import Direction
from emscope.models.generation import SamplingConfig, generate
from emscope.models.lineage import Compatibility
from emscope.models.loading import LoadedModel

Measure = Callable[[LoadedModel], float]  # may also return one value per prompt (see run_measure_values)


@runtime_checkable
class TwoPhaseMeasure(Protocol):
    def generate(self, lm: LoadedModel) -> Any: ...

    def score(self, lm: LoadedModel, outputs: Any) -> float: ...


def generate_answers(
    lm: LoadedModel, prompts: Sequence[str], max_new_tokens: int = 32, batch_size: int = 8
) -> list[str]:
    """Greedy answers to single-turn chat `prompts` (batched generation of `emscope.models.generation`)."""
    config = SamplingConfig(temperature=0.0, max_new_tokens=max_new_tokens, batch_size=batch_size)
    return generate(lm, [[{"role": "user", "content": p}] for p in prompts], config)


def answer_projections(
    lm: LoadedModel,
    direction: Direction,
    prompts: Sequence[str],
    answers: Sequence[str],
    compatibility: Compatibility = "same_base",
) -> torch.Tensor:
    """Per answer, the mean over its tokens of the projection onto `direction` at its layer, as `lm` reads it.

    Empty answers are left out (they have no token to read). `lm` may be any model sharing the
    direction's base (e.g. the base model reading an organism's answers); see `Direction.check_compatible`.
    """
    pairs = [Transcript.from_pair(p, a) for p, a in zip(prompts, answers, strict=True) if a.strip()]
    if not pairs:
        return torch.empty(0)
    return score(lm, pairs, direction, compatibility=compatibility)


@dataclass
class AnswerProjection:
    """Mean projection onto `direction` (at its layer) of the answers' tokens, read by the plain model."""

    prompts: Sequence[str]
    direction: Direction
    max_new_tokens: int = 32
    batch_size: int = 8
    compatibility: Compatibility = "same_base"  # which models may read along `direction`

    def generate(self, lm: LoadedModel) -> list[str]:
        return generate_answers(lm, self.prompts, self.max_new_tokens, self.batch_size)

    def score(self, lm: LoadedModel, outputs: list[str]) -> float:
        values = answer_projections(lm, self.direction, self.prompts, outputs, self.compatibility)
        return float(values.mean()) if len(values) else float("nan")

    def score_values(self, lm: LoadedModel, outputs: list[str]) -> list[float]:
        """Per prompt, its answer's mean projection (NaN for an empty answer): `score` is their mean."""
        read = iter(answer_projections(lm, self.direction, self.prompts, outputs, self.compatibility).tolist())
        return [next(read) if a.strip() else float("nan") for a in outputs]

    def __call__(self, lm: LoadedModel) -> float:
        return self.score(lm, self.generate(lm))


def run_measure_values(
    lm: LoadedModel, measure: Measure | TwoPhaseMeasure, intervene: Callable[[], Any]
) -> list[float]:
    """Like `run_measure`, but per prompt where the measure can say (a two-phase measure with
    ``score_values``, or a callable that returns a sequence); otherwise its one value in a list."""
    if isinstance(measure, TwoPhaseMeasure):
        with intervene():
            outputs = measure.generate(lm)
        per_prompt = getattr(measure, "score_values", None)
        result: Any = per_prompt(lm, outputs) if per_prompt is not None else measure.score(lm, outputs)
    else:
        with intervene():
            result = measure(lm)
    if isinstance(result, torch.Tensor):
        result = result.tolist()
    return [float(x) for x in result] if isinstance(result, Sequence) else [float(result)]


def run_measure(lm: LoadedModel, measure: Measure | TwoPhaseMeasure, intervene: Callable[[], Any]) -> float:
    """Run `measure` with the intervention `intervene()` returns (a context manager) in place."""
    if isinstance(measure, TwoPhaseMeasure):
        with intervene():
            outputs = measure.generate(lm)
        return float(measure.score(lm, outputs))
    with intervene():
        return float(measure(lm))
