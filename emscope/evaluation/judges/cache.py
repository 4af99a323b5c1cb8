"""A disk cache of judgments keyed by (judge spec, prompt hash, question, answer hash).

One append-only JSONL file per cache directory; a truncated last line (a killed run) is
ignored. `judge_answers` fills prompts, looks each one up and pays only for the misses.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from emscope.evaluation.judges.base import Judge, Judgment
from emscope.evaluation.judges.prompts import format_judge_prompt, prompt_hash

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """``$EMSCOPE_JUDGMENT_CACHE``, else ``$EMSCOPE_CACHE/judgments`` (default ``~/.cache/emscope/judgments``)."""
    from emscope.runtime import cache_root

    env = os.environ.get("EMSCOPE_JUDGMENT_CACHE")
    return Path(env) if env else cache_root() / "judgments"


def cache_key(judge_spec: str, template: str, question: str, answer: str) -> str:
    answer_hash = hashlib.sha256(answer.encode()).hexdigest()
    raw = json.dumps([judge_spec, prompt_hash(template), question, answer_hash], ensure_ascii=False)
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


class JudgmentCache:
    """``judgments.cache.jsonl`` under `directory`: {"key": ..., "judgment": {...}} per line."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.path = Path(directory) / "judgments.cache.jsonl"
        self._lock = threading.Lock()
        self._mem: dict[str, Judgment] = {}
        if self.path.is_file():
            with self.path.open(encoding="utf-8") as f:
                for line in f:
                    try:
                        obj = json.loads(line)
                        self._mem[obj["key"]] = Judgment.from_json(obj["judgment"])
                    except (json.JSONDecodeError, KeyError, TypeError):
                        continue  # a line cut short by a killed run

    def __len__(self) -> int:
        return len(self._mem)

    def get(self, key: str) -> Judgment | None:
        return self._mem.get(key)

    def put(self, key: str, judgment: Judgment) -> None:
        with self._lock:
            self._mem[key] = judgment
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps({"key": key, "judgment": judgment.to_json()}, ensure_ascii=False) + "\n")
                f.flush()


def judge_answers(
    judge: Judge,
    template: str,
    pairs: Sequence[tuple[str, str]],
    cache: JudgmentCache | None = None,
    *,
    cache_transient: bool = False,
) -> list[Judgment]:
    """Judge (question, answer) pairs with `template`; cached verdicts are reused, new ones stored.

    A failed request (``unscored_reason`` starting with ``"request failed"``) is not cached
    unless `cache_transient`, so a re-run tries it again.
    """
    keys = [cache_key(judge.spec, template, q, a) for q, a in pairs]
    out: list[Judgment | None] = [cache.get(k) if cache else None for k in keys]
    todo = [i for i, j in enumerate(out) if j is None]
    if todo:
        log.info("judging %d answers with %s (%d cached)", len(todo), judge.spec, len(pairs) - len(todo))
        new = judge.score_prompts([format_judge_prompt(template, *pairs[i]) for i in todo])
        for i, j in zip(todo, new, strict=True):
            out[i] = j
            transient = (j.unscored_reason or "").startswith("request failed")
            if cache is not None and (cache_transient or not transient):
                cache.put(keys[i], j)
    return [j for j in out if j is not None]
