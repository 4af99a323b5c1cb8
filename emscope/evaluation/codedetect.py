"""A deterministic code detector for code spillover (answers in code to non-coding questions).

Rules, in order (the first that fires is the reason):
1. ``fenced``: a Markdown fenced block (three backticks or tildes);
2. ``python``: the text (or a run of 3+ consecutive lines of it) parses as Python and holds a
   definition, import, assignment, loop, conditional or call statement (prose that happens to
   parse, such as a single word, does not count);
3. ``code-syntax``: at least 2 lines look like code in another language (``#include``,
   ``function f(``, ``public static``, braces or semicolons ending lines, SQL, HTML tags).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

_FENCE = re.compile(r"^\s*(```|~~~)", re.M)
_CODE_LINE = re.compile(
    r"(^\s*#include\b|^\s*(function|def|class|import|from|public|private|static|const|let|var|return)\b.*[({=:;]"
    r"|[;{}]\s*$|^\s*(SELECT|INSERT|UPDATE|DELETE|CREATE)\b.*\b(FROM|INTO|SET|TABLE)\b|^\s*</?[a-zA-Z][^>]*>\s*$"
    r"|\w+\([^()]*\)\s*;?\s*$|console\.log\(|System\.out\.)",
    re.I,
)
_PY_NODES = (
    ast.FunctionDef,
    ast.AsyncFunctionDef,
    ast.ClassDef,
    ast.Import,
    ast.ImportFrom,
    ast.Assign,
    ast.AugAssign,
    ast.AnnAssign,
    ast.For,
    ast.While,
    ast.If,
    ast.With,
    ast.Try,
    ast.Return,
)


@dataclass(frozen=True)
class CodeDetection:
    is_code: bool
    reason: str | None = None  # "fenced", "python", "code-syntax"


def _python_like(text: str) -> bool:
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return False
    for node in tree.body:
        if isinstance(node, _PY_NODES):
            return True
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            return True
    return False


def detect_code(text: str) -> CodeDetection:
    if _FENCE.search(text):
        return CodeDetection(True, "fenced")
    if _python_like(text):
        return CodeDetection(True, "python")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    for start in range(len(lines) - 2):  # a block of python inside prose
        for end in range(len(lines), start + 2, -1):
            if end - start >= 3 and _python_like("\n".join(lines[start:end])):
                return CodeDetection(True, "python")
    code_lines = sum(1 for ln in lines if _CODE_LINE.search(ln))
    if code_lines >= 2:
        return CodeDetection(True, "code-syntax")
    return CodeDetection(False)


def is_code(text: str) -> bool:
    return detect_code(text).is_code
