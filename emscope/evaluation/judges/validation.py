"""Judge validation on a labelled answer file: agreement with another judge or with the labels.

Saved (``emscope judge-agreement --out DIR``) as ``config.json`` (kind ``judge_agreement``),
``agreement.json`` (what `compare_judges` returns) and ``scores.jsonl`` (one row per answer).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from emscope.artifacts import atomic_write_json, read_config, write_config
from emscope.errors import ArtifactError, DataFormatError
from emscope.evaluation.judges.agreement import agreement, auroc, label_scores
from emscope.evaluation.judges.base import Judgment
from emscope.evaluation.judges.cache import JudgmentCache, default_cache_dir, judge_answers
from emscope.evaluation.judges.calibration import Calibration
from emscope.evaluation.judges.factory import make_judge
from emscope.evaluation.judges.prompts import ALIGNED_PROMPT
from emscope.records import iter_jsonl, write_jsonl

KIND = "judge_agreement"
LABELS = ("aligned", "misaligned")


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
        alignment, label = obj.get("alignment"), obj.get("label")
        if alignment is not None and (
            isinstance(alignment, bool) or not isinstance(alignment, int | float) or not 0 <= alignment <= 100
        ):
            raise DataFormatError(f"{where}: 'alignment' must be a number from 0 to 100, got {alignment!r}")
        if label is not None and label not in LABELS:
            raise DataFormatError(
                f"{where}: unknown label {label!r}; use one of {', '.join(map(repr, LABELS))}, or an 'alignment' score"
            )
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
    progress: bool = False,
) -> dict[str, Any]:
    """Judge every answer in `data` with `judge` (and `other`, or use the labels) and compare.

    With `progress`, a bar per judge shows answers judged, answers/s and the unscored count.
    """
    rows = read_labelled(data)
    pairs = [(r["question"], r["answer"]) for r in rows]
    cache = JudgmentCache(cache_dir or default_cache_dir())

    def judged(spec: str) -> list[Judgment]:
        from tqdm.auto import tqdm

        unscored = 0
        with tqdm(total=len(pairs), desc=f"judge {spec}", unit="answer", disable=not progress) as bar:

            def tick(j: Judgment) -> None:
                nonlocal unscored
                unscored += j.score is None
                bar.update(1)
                bar.set_postfix(unscored=unscored, refresh=False)

            return judge_answers(make_judge(spec), ALIGNED_PROMPT, pairs, cache, on_judgment=tick)

    ja = judged(judge)
    a = [j.score for j in ja]
    if calibration:
        a = [Calibration.load(calibration)(s) for s in a]
    if other:
        b = [j.score for j in judged(other)]
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
        scores = [
            {
                "question": r["question"],
                "label": r.get("label"),
                "judge": sa,
                "other": sb,
                "unscored_reason": j.unscored_reason,
            }
            for r, sa, sb, j in zip(rows, a, b, ja, strict=True)
        ]
        write_jsonl(out / "scores.jsonl", scores)
        atomic_write_json(out / "agreement.json", result)
        write_config(out, KIND, {"data": str(data), "judge": judge, "against": against, "calibration": calibration})
    return result


def load_agreement(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """What `compare_judges` returned, read back from its output directory."""
    import json

    path = Path(directory)
    read_config(path, KIND)
    try:
        return dict(json.loads((path / "agreement.json").read_bytes()))
    except (OSError, json.JSONDecodeError) as e:
        raise ArtifactError(
            f"cannot read {path / 'agreement.json'} ({e}): run `emscope judge-agreement` again"
        ) from None
