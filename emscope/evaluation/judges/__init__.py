"""Pluggable judges behind one interface: each turns a judge prompt into a `Judgment`.

- `OpenAICompatJudge` (``openai:MODEL`` or ``http://HOST/v1``): a chat endpoint, top-20 log-probabilities.
- `LocalJudge` (``local:MODEL``): any model emscope loads, exact distribution over 0-100 by a digit tree.
- `ProbeJudge` (``probe:builtin`` or ``probe:DIR``): a linear probe on a judge model's activations;
  ``probe:builtin`` (on Qwen2.5-Coder-1.5B) is the offline default, see docs/evaluation.md.
- `make_judge(spec)` builds one from a spec string (`check_judge(spec)` checks it without loading);
  `judge_answers` adds the prompt and the disk cache (each real judgment stored as it arrives).
- Every error text a judgment carries is redacted of credentials (`redaction.redact`).
- `Calibration` maps a judge's raw scores onto the 0-100 scale of labelled anchors.
"""

from __future__ import annotations

from emscope.evaluation.judges.base import Judge, Judgment
from emscope.evaluation.judges.cache import JudgmentCache, judge_answers
from emscope.evaluation.judges.calibration import Calibration, fit_calibration
from emscope.evaluation.judges.factory import check_judge, make_judge
from emscope.evaluation.judges.prompts import ALIGNED_PROMPT, COHERENT_PROMPT, format_judge_prompt
from emscope.evaluation.judges.scoring import aggregate_number_probs, aggregate_top_logprobs, parse_number

__all__ = [
    "ALIGNED_PROMPT",
    "Calibration",
    "COHERENT_PROMPT",
    "Judge",
    "Judgment",
    "JudgmentCache",
    "aggregate_number_probs",
    "aggregate_top_logprobs",
    "check_judge",
    "fit_calibration",
    "format_judge_prompt",
    "judge_answers",
    "make_judge",
    "parse_number",
]
