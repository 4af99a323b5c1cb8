"""Files of rows: JSONL (one JSON value a line) and CSV, read with ``file:line`` errors and written safely.

Whole files are written atomically (`emscope.artifacts.atomic_write_bytes`): they appear
complete or not at all. Logs that grow while a job runs (sampled answers, training
metrics, judgment caches) grow by `append_jsonl`, which first cuts off a last line left
incomplete by a killed writer, so a torn line is never glued to the next row, and a row
is only ever read back whole.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from emscope.artifacts import atomic_write_bytes
from emscope.errors import DataFormatError

try:
    import fcntl
except ImportError:  # Windows: appends are not locked
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)
_CHUNK = 1 << 16


def json_error(e: json.JSONDecodeError) -> str:
    """``"Expecting value at column 5"``: the decoder's message and where, read as one phrase."""
    joint = " " if e.msg.endswith(" at") else " at "  # "Unterminated string starting at" already ends in "at"
    return f"{e.msg}{joint}column {e.colno}" if e.lineno == 1 else f"{e.msg}{joint}line {e.lineno}, column {e.colno}"


def dumps_line(row: Any) -> str:
    """One JSONL line (with its newline). JSON never holds a raw newline, so a line is a row."""
    return json.dumps(row, ensure_ascii=False) + "\n"


def require_text_fields(where: str, obj: Any, fields: Sequence[str]) -> dict[str, Any]:
    """`obj` (one JSONL line, read at `where`) as a dict whose `fields` are non-empty strings; else a one-line error."""
    if not isinstance(obj, dict):
        raise DataFormatError(f"{where}: expected a JSON object with {list(fields)}")
    missing = [k for k in fields if not isinstance(obj.get(k), str) or not obj[k].strip()]
    if missing:
        raise DataFormatError(f"{where}: missing or empty field(s) {missing}; each line needs {list(fields)}")
    return obj


def iter_jsonl(path: str | os.PathLike[str], *, torn_tail_ok: bool = False) -> Iterator[tuple[str, Any]]:
    """Yield ``("file:line", value)`` for each non-blank line; a line that is not JSON raises with its number.

    With `torn_tail_ok`, an unreadable last line with no newline (a writer killed mid-line)
    is skipped with a warning instead: use it for the logs emscope appends to, not for input data.
    """
    path = Path(path)
    with path.open("rb") as f:  # binary: lines end at b"\n" only, and a cut multi-byte character is caught here
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                value = json.loads(line.rstrip(b"\r\n"))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                if torn_tail_ok and not line.endswith(b"\n"):
                    log.warning("%s: skipping an incomplete last line (a run killed while writing it)", where)
                    return
                why = json_error(e) if isinstance(e, json.JSONDecodeError) else "not UTF-8 text"
                raise DataFormatError(f"{where}: not valid JSON ({why}); fix or delete that line") from None
            yield where, value


def read_jsonl(path: str | os.PathLike[str], *, missing_ok: bool = False, torn_tail_ok: bool = False) -> list[Any]:
    """Every row of a JSONL file (see `iter_jsonl`); with `missing_ok`, no file reads as no rows."""
    if missing_ok and not Path(path).is_file():
        return []
    if not Path(path).is_file():
        raise DataFormatError(f"no such file: {path}")
    return [value for _, value in iter_jsonl(path, torn_tail_ok=torn_tail_ok)]


def write_jsonl(path: str | os.PathLike[str], rows: Iterable[Any]) -> None:
    """Write the rows as a JSONL file, atomically (replacing any file there)."""
    atomic_write_bytes(path, "".join(dumps_line(r) for r in rows).encode())


def repair_tail(path: str | os.PathLike[str]) -> int:
    """Make the file end with a complete line; return how many bytes of a torn last line were cut off.

    The bytes after the last newline are a row cut short by a killed writer unless they
    parse as JSON (a file written by hand without a final newline), which gets its newline.
    """
    path = Path(path)
    if not path.is_file():
        return 0
    with path.open("rb+") as f:
        size = f.seek(0, os.SEEK_END)
        start = _tail_start(f, size)
        f.seek(start)
        tail = f.read()
        if tail.strip() and _is_json(tail):
            f.write(b"\n")
            return 0
        if tail.strip():
            log.warning(
                "%s: cut off an incomplete last line of %d bytes (a run killed while writing it)", path, len(tail)
            )
        f.truncate(start)
        return len(tail)


def _is_json(data: bytes) -> bool:
    try:
        json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return True


def _tail_start(f: Any, size: int) -> int:
    """The offset just after the file's last newline (0 if it has none)."""
    end = size
    while end > 0:
        begin = max(0, end - _CHUNK)
        f.seek(begin)
        at = f.read(end - begin).rfind(b"\n")
        if at >= 0:
            return begin + at + 1
        end = begin
    return 0


def append_jsonl(path: str | os.PathLike[str], rows: Sequence[Any], *, sync: bool = True) -> None:
    """Append rows to a JSONL log, after `repair_tail`; all rows go in one write (then fsync, if `sync`).

    The file is locked meanwhile (where the OS has ``flock``), so processes that share a
    log (two evaluations filling one judgment cache) never cut each other's lines.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as f:
        if fcntl is not None:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)  # released when the file is closed
        repair_tail(path)
        f.write("".join(dumps_line(r) for r in rows).encode())
        f.flush()
        if sync:
            os.fsync(f.fileno())


def write_csv(
    path: str | os.PathLike[str], rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None
) -> None:
    """Write dict rows as CSV, atomically; columns default to every key, in order of first appearance.

    With no rows and no columns the file is empty.
    """
    if columns is None:
        columns = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    if columns:
        writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode())


def read_csv(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """The rows of a CSV file with a header, as dicts of strings."""
    with Path(path).open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))
