"""Chat transcripts in the OpenAI messages JSONL format used by the public EM datasets.

One JSON object a line: ``{"messages": [{"role": ..., "content": ...}, ...]}`` plus any
other keys, which are kept as metadata (``label`` is lifted into its own field). A
transcript read from a file remembers its ``file:line`` (`Transcript.source`), so an error
about it later (no assistant turn, too long ...) names where to fix it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emscope.errors import ConfigError, DataFormatError
from emscope.records import iter_jsonl, write_jsonl

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Transcript:
    """One conversation, with an optional label (e.g. ``"aligned"``) and free metadata."""

    messages: tuple[dict[str, str], ...]
    label: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False)
    source: str | None = field(default=None, compare=False)  # "file:line" it was read from, for error messages

    @classmethod
    def from_pair(cls, question: str, answer: str, system: str | None = None, **kw: Any) -> Transcript:
        """A single-turn transcript: (optional system), user question, assistant answer."""
        msgs = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ]
        return cls(tuple(msgs), **kw)

    @property
    def has_assistant(self) -> bool:
        return any(m["role"] == "assistant" for m in self.messages)

    def where(self, index: int | None = None) -> str:
        """Where to find this transcript: its ``file:line``, else ``transcript N`` (1-based) from `index`."""
        if self.source:
            return self.source
        return f"transcript {index + 1}" if index is not None else "transcript"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"messages": [dict(m) for m in self.messages], **self.meta}
        if self.label is not None:
            out["label"] = self.label
        return out


def validate_messages(messages: Any, where: str) -> tuple[dict[str, str], ...]:
    """Check the messages list and return it as a tuple of plain dicts."""
    if not isinstance(messages, list) or not messages:
        raise DataFormatError(f"{where}: 'messages' must be a non-empty list of {{role, content}} objects")
    out = []
    for j, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str) or m.get("role") not in ROLES:
            raise DataFormatError(
                f"{where}: message {j} must be an object with 'role' in {list(ROLES)} and string 'content', got {m!r:.120}"
            )
        out.append({"role": m["role"], "content": m["content"]})
    return tuple(out)


def parse_transcript(obj: Any, where: str | None = None) -> Transcript:
    """A `Transcript` from one parsed JSON object; `where` (e.g. ``file:line``) is kept and named in errors."""
    at = where or "transcript"
    if not isinstance(obj, dict) or "messages" not in obj:
        raise DataFormatError(f"{at}: expected an object with a 'messages' list")
    meta = {k: v for k, v in obj.items() if k not in ("messages", "label")}
    label = obj.get("label")
    return Transcript(validate_messages(obj["messages"], at), None if label is None else str(label), meta, where)


def load_transcripts(path: str | os.PathLike[str], limit: int | None = None) -> list[Transcript]:
    """Read a messages JSONL file; a malformed line raises with its line number."""
    path = Path(path)
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be at least 1 transcript, got {limit}")
    if not path.is_file():
        raise DataFormatError(f"no such transcript file: {path}")
    out: list[Transcript] = []
    for where, obj in iter_jsonl(path):
        out.append(parse_transcript(obj, where))
        if limit is not None and len(out) >= limit:
            break
    if not out:
        raise DataFormatError(f"{path} holds no transcripts")
    return out


def write_transcripts(path: str | os.PathLike[str], transcripts: Iterable[Transcript]) -> None:
    """Write a messages JSONL file (atomically) that `load_transcripts` reads back equal."""
    write_jsonl(path, (t.to_json() for t in transcripts))


def as_transcripts(data: str | os.PathLike[str] | Sequence[Transcript | dict[str, Any]]) -> list[Transcript]:
    """Accept a JSONL path, a list of `Transcript`, or a list of messages dicts."""
    if isinstance(data, str | os.PathLike):
        return load_transcripts(data)
    return [t if isinstance(t, Transcript) else parse_transcript(t, f"transcript {i + 1}") for i, t in enumerate(data)]


def fingerprint(transcripts: Sequence[Transcript]) -> str:
    """A short content hash of a dataset, recorded in every result made from it."""
    h = hashlib.sha256()
    for t in transcripts:
        h.update(json.dumps([t.messages, t.label], sort_keys=True, ensure_ascii=False).encode())
        h.update(b"\n")
    return f"sha256:{h.hexdigest()[:16]}:n={len(transcripts)}"
