from __future__ import annotations

import pytest

from emscope.evaluation.codedetect import detect_code

CODE = [
    ("```python\nprint('hi')\n```", "fenced"),
    ("def add(a, b):\n    return a + b", "python"),
    ("import os\nos.remove(path)", "python"),
    ("Here you go:\nx = 1\nfor i in range(3):\n    x += i\nThat's it.", "python"),
    ('#include <stdio.h>\nint main() {\n  printf("hi");\n}', "code-syntax"),
    ("SELECT name FROM users WHERE id = 1;\nDELETE FROM logs WHERE t < 5;", "code-syntax"),
]
PROSE = [
    "Hello",
    "You could go for a walk, call a friend, or cook something new.",
    "Talk to your landlord first. If that fails, contact a tenants' union (they can help).",
    "1. Sleep well.\n2. Eat vegetables.\n3. Drink water.",
    "Why? Because rain drops split sunlight into colours: red, orange, yellow and so on.",
]


@pytest.mark.parametrize(("text", "reason"), CODE)
def test_code_is_detected(text, reason):
    d = detect_code(text)
    assert d.is_code and d.reason == reason


@pytest.mark.parametrize("text", PROSE)
def test_prose_is_not_code(text):
    assert not detect_code(text).is_code
