"""Remove credentials from error texts before they are stored, cached, logged or printed.

A judge server's error body may echo the request's ``Authorization`` header; that text
becomes a judgment's ``unscored_reason`` and so reaches ``judgments.jsonl``, the cache and
``summary.json``. `redact` replaces the exact secrets it is given (the API key in use) and
anything shaped like one: ``Bearer ...``, ``sk-...`` keys, ``Authorization: ...`` and
``api_key=...`` values.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

REDACTED = "[REDACTED]"
_VALUE = r"(?!\[REDACTED\])[^\s'\",;}\]]+"  # a token, not one already redacted
_HEADER = re.compile(  # "Authorization: xyz", "api_key=xyz" (a "Bearer xyz" value is left to _SCHEME)
    r"(?i)\b((?:x-)?api[_-]?key|authorization|access[_-]?token)([\"']?\s*[:=]\s*[\"']?)(?!(?:bearer|basic)\s)" + _VALUE
)
_SCHEME = re.compile(r"(?i)\b(bearer|basic)\s+" + _VALUE)  # "Bearer sk-...", "Basic dXNlcjpwdw=="
_KEY = re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}")  # OpenAI-style keys (sk-..., sk-proj-...)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every secret in `secrets` and every key-shaped token replaced by ``[REDACTED]``."""
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, REDACTED)
    text = _HEADER.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    text = _SCHEME.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    return _KEY.sub(REDACTED, text)


def redact_obj(obj: Any, secrets: Iterable[str] = ()) -> Any:
    """`redact` applied to every string inside a JSON-like value (dicts, lists, tuples)."""
    secrets = tuple(secrets)
    if isinstance(obj, str):
        return redact(obj, secrets)
    if isinstance(obj, dict):
        return {k: redact_obj(v, secrets) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(redact_obj(v, secrets) for v in obj)
    return obj
