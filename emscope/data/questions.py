"""Evaluation questions: the public EM YAML format, plain JSONL, and emscope's built-in sets.

YAML (as in the public EM evaluation files): a list of entries with ``id``, ``paraphrases``,
``samples_per_paraphrase``, optional ``system`` and ``judge_prompts`` (``aligned``,
``coherent``); other keys (``type``, ``judge``, ``category``) are kept as metadata.
JSONL: one object a line with ``id`` and either ``paraphrases`` (a list) or ``question``.
Built-in sets (``builtin`` or ``builtin:NAME``): ``em_core`` (26 free-form questions in the
EM style) and ``spillover`` (12 plain non-coding questions), both written for emscope.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emscope.errors import DataFormatError, lookup
from emscope.records import iter_jsonl
from emscope.runtime import RESOURCES

BUILTIN_SETS = ("em_core", "spillover")
QUESTIONS_DIR = RESOURCES / "questions"


@dataclass(frozen=True)
class Question:
    id: str
    paraphrases: tuple[str, ...]
    samples_per_paraphrase: int = 1
    system: str | None = None
    judge_prompts: dict[str, str] = field(default_factory=dict, compare=False)
    meta: dict[str, Any] = field(default_factory=dict, compare=False)


def _parse_entry(obj: Any, where: str) -> Question:
    if not isinstance(obj, dict) or "id" not in obj:
        raise DataFormatError(f"{where}: expected an object with an 'id', got {str(obj)[:100]!r}")
    paraphrases = obj.get("paraphrases")
    if paraphrases is None and "question" in obj:
        paraphrases = [obj["question"]]
    if not isinstance(paraphrases, list) or not paraphrases or not all(isinstance(p, str) for p in paraphrases):
        raise DataFormatError(f"{where} (id {obj['id']!r}): 'paraphrases' must be a non-empty list of strings")
    spp = obj.get("samples_per_paraphrase", 1)
    if not isinstance(spp, int) or spp < 1:
        raise DataFormatError(f"{where} (id {obj['id']!r}): 'samples_per_paraphrase' must be a positive integer")
    prompts = obj.get("judge_prompts") or {}
    if not isinstance(prompts, dict):
        raise DataFormatError(f"{where} (id {obj['id']!r}): 'judge_prompts' must map a metric name to a template")
    known = {"id", "paraphrases", "question", "samples_per_paraphrase", "system", "judge_prompts"}
    return Question(
        id=str(obj["id"]),
        paraphrases=tuple(paraphrases),
        samples_per_paraphrase=spp,
        system=obj.get("system"),
        judge_prompts={str(k): str(v) for k, v in prompts.items()},
        meta={k: v for k, v in obj.items() if k not in known},
    )


def _from_yaml_text(text: str, where: str) -> list[Question]:
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise DataFormatError(f"{where}: not valid YAML ({e})") from None
    if not isinstance(data, list):
        raise DataFormatError(f"{where}: expected a YAML list of question entries")
    return [_parse_entry(obj, f"{where} entry {i}") for i, obj in enumerate(data)]


def load_questions(source: str | os.PathLike[str]) -> list[Question]:
    """Questions from a ``.yaml``/``.yml`` or ``.jsonl`` file, or ``builtin[:NAME]``."""
    s = str(source)
    if s == "builtin" or s.startswith("builtin:"):
        name = s.partition(":")[2] or "em_core"
        lookup(BUILTIN_SETS, name, "built-in question set")
        text = (QUESTIONS_DIR / f"{name}.yaml").read_text("utf-8")
        qs = _from_yaml_text(text, f"builtin:{name}")
    else:
        path = Path(s)
        if not path.is_file():
            raise DataFormatError(f"no such question file: {path} (or use 'builtin', 'builtin:spillover')")
        if path.suffix in (".yaml", ".yml"):
            try:
                text = path.read_text("utf-8")
            except UnicodeDecodeError as e:
                raise DataFormatError(f"{path}: not UTF-8 text (byte {e.start}); save it as UTF-8") from None
            qs = _from_yaml_text(text, str(path))
        elif path.suffix == ".jsonl":
            qs = [_parse_entry(obj, where) for where, obj in iter_jsonl(path)]
        else:
            raise DataFormatError(f"{path}: expected a .yaml, .yml or .jsonl question file")
    ids = [q.id for q in qs]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise DataFormatError(f"{source}: duplicate question ids {dup}")
    if not qs:
        raise DataFormatError(f"{source} holds no questions")
    return qs
