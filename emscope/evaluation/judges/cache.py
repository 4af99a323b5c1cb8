"""A disk cache of judgments keyed by (judge spec, prompt hash, question, answer hash).

One append-only JSONL file per cache directory; a truncated last line (a killed run) is
ignored. `judge_answers` fills prompts, looks each one up, pays only for the misses and
stores each new judgment the moment it arrives. Only real judgments are cached.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from emscope.errors import ConfigError
from emscope.evaluation.judges.base import Judge, Judgment
from emscope.evaluation.judges.prompts import format_judge_prompt, prompt_hash
from emscope.records import append_jsonl, read_jsonl

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
    """``judgments.cache.jsonl`` under `directory`: {"key": ..., "judgment": {...}} per line.

    Only real judgments are kept (`Judgment.is_verdict`): a failed request or a malformed
    reply is tried again by the next run, and such entries left by older versions are ignored.
    Each judgment is appended (and synced) as it is put, so a killed run loses none it received.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.path = Path(directory) / "judgments.cache.jsonl"
        self._lock = threading.Lock()
        self._mem: dict[str, Judgment] = {}
        for obj in read_jsonl(self.path, missing_ok=True, torn_tail_ok=True):
            try:
                j = Judgment.from_json(obj["judgment"])
            except (KeyError, TypeError, AttributeError):
                continue
            if j.is_verdict:
                self._mem[str(obj["key"])] = j

    def __len__(self) -> int:
        return len(self._mem)

    def get(self, key: str) -> Judgment | None:
        return self._mem.get(key)

    def put(self, key: str, judgment: Judgment) -> bool:
        """Store a real judgment (returns True); a failure to judge is not stored (False)."""
        if not judgment.is_verdict:
            return False
        with self._lock:
            self._mem[key] = judgment
            append_jsonl(self.path, [{"key": key, "judgment": judgment.to_json()}])
        return True


def check_template(judge: Judge, template: str) -> None:
    """Refuse a judge prompt that `judge` cannot read (a probe judge reads only the prompt it was trained on)."""
    if judge.prompt is not None and template != judge.prompt:
        raise ConfigError(
            f"the judge {judge.spec} reads only the judge prompt it was trained with (prompt "
            f"{prompt_hash(judge.prompt)}), not prompt {prompt_hash(template)}: judge with its own prompt "
            "(judge.prompt; run_eval does so), or use a judge that reads any prompt (local:MODEL, openai:MODEL)"
        )


def judge_answers(
    judge: Judge,
    template: str,
    pairs: Sequence[tuple[str, str]],
    cache: JudgmentCache | None = None,
    *,
    chunk: int = 32,
    on_judgment: Callable[[Judgment], None] | None = None,
) -> list[Judgment]:
    """Judge (question, answer) pairs with `template`; cached verdicts are reused, new ones stored as they arrive.

    Only real judgments are cached (see `JudgmentCache`). `chunk` bounds how many judgments
    a judge that scores in batches holds before handing them over (emscope's judges hand
    over each one). `on_judgment` is called once per pair, as its judgment is known.
    """
    check_template(judge, template)
    keys = [cache_key(judge.spec, template, q, a) for q, a in pairs]
    out: list[Judgment | None] = [cache.get(k) if cache else None for k in keys]
    todo = [i for i, j in enumerate(out) if j is None]
    if on_judgment is not None:
        for j in out:
            if j is not None:
                on_judgment(j)
    if todo:
        log.info("judging %d answers with %s (%d cached)", len(todo), judge.spec, len(pairs) - len(todo))
        prompts = [format_judge_prompt(template, *pairs[i]) for i in todo]
        for pos, j in judge.iter_scores(prompts, chunk):
            i = todo[pos]
            out[i] = j
            if cache is not None:
                cache.put(keys[i], j)
            if on_judgment is not None:
                on_judgment(j)
    missing = [i for i, j in enumerate(out) if j is None]
    if missing:
        raise RuntimeError(f"the judge {judge.spec} returned no judgment for {len(missing)} of {len(pairs)} prompts")
    return [j for j in out if j is not None]
