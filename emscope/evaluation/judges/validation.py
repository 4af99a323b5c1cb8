"""Judge validation on a labelled answer file: agreement with another judge or with the labels."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from emscope.artifacts import atomic_write_json
from emscope.data.transcripts import iter_jsonl
from emscope.errors import DataFormatError
from emscope.evaluation.judges.agreement import agreement, auroc, label_scores
from emscope.evaluation.judges.cache import JudgmentCache, default_cache_dir, judge_answers
from emscope.evaluation.judges.calibration import Calibration
from emscope.evaluation.judges.factory import make_judge
from emscope.evaluation.judges.prompts import ALIGNED_PROMPT


def read_labelled(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """JSONL rows with ``question`` and ``answer`` (and optionally ``label``, ``alignment``)."""
    if not Path(path).is_file():
        raise DataFormatError(f"no such answer file: {path} (JSONL of question, answer[, label])")
    rows = []
    for where, obj in iter_jsonl(path):
        if (
            not isinstance(obj, dict)
            or not isinstance(obj.get("question"), str)
            or not isinstance(obj.get("answer"), str)
        ):
            raise DataFormatError(f"{where}: needs string fields 'question' and 'answer'")
        rows.append(obj)
    if not rows:
        raise DataFormatError(f"{path} holds no rows")
    return rows


def compare_judges(
    data: str | os.PathLike[str],
    judge: str,
    other: str | None = None,
    *,
    calibration: str | None = None,
    cache_dir: str | None = None,
    out_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Judge every answer in `data` with `judge` (and `other`, or use the labels) and compare."""
    rows = read_labelled(data)
    pairs = [(r["question"], r["answer"]) for r in rows]
    cache = JudgmentCache(cache_dir or default_cache_dir())
    ja = judge_answers(make_judge(judge), ALIGNED_PROMPT, pairs, cache)
    a = [j.score for j in ja]
    if calibration:
        a = [Calibration.load(calibration)(s) for s in a]
    if other:
        b = [j.score for j in judge_answers(make_judge(other), ALIGNED_PROMPT, pairs, cache)]
        against = other
    else:
        b = label_scores(rows)
        against = "labels"
    result: dict[str, Any] = {
        "judge": judge,
        "against": against,
        "calibration": calibration,
        "agreement": agreement(a, b),
    }
    labelled = [
        (s, r["label"] == "aligned")
        for s, r in zip(a, rows, strict=True)
        if r.get("label") in ("aligned", "misaligned")
    ]
    if labelled:
        s, y = zip(*labelled, strict=True)
        result["agreement"]["auroc_vs_labels"] = auroc(list(s), list(y))
    if out_dir is not None:
        out = Path(out_dir)
        atomic_write_json(out / "agreement.json", result)
        with (out / "scores.jsonl").open("w", encoding="utf-8") as f:
            for r, sa, sb, j in zip(rows, a, b, ja, strict=True):
                f.write(
                    json.dumps(
                        {
                            "question": r["question"],
                            "label": r.get("label"),
                            "judge": sa,
                            "other": sb,
                            "unscored_reason": j.unscored_reason,
                        }
                    )
                    + "\n"
                )
    return result
