"""Every ``ValueError`` the serving, playground and chat paths raise for bad input says how to
fix it (issue 29, item 7: "some 400s lack the Fix part"): the server answers these with 400 and
the page shows them in its status line, so each message carries ``Fix:``. Read from the source,
so a new message without it fails here before a user sees it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import recllm

ROOT = Path(recllm.__file__).parent
FILES = [
    *sorted((ROOT / "apps").glob("*.py")),
    ROOT / "decode" / "think.py",
    ROOT / "decode" / "vllm_beam.py",
    ROOT / "decode" / "vllm_processor.py",
]


def _value_errors(path: Path) -> list[tuple[int, str]]:
    """``(line, message text)`` of each ``raise ValueError(...)`` (f-string parts joined)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Raise) or not isinstance(node.exc, ast.Call):
            continue
        func = node.exc.func
        if not (isinstance(func, ast.Name) and func.id == "ValueError"):
            continue
        text = "".join(
            part.value
            for arg in node.exc.args
            for part in ast.walk(arg)
            if isinstance(part, ast.Constant) and isinstance(part.value, str)
        )
        found.append((node.lineno, text))
    return found


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_value_error_has_a_fix(path: Path):
    missing = [f"{line}: {text[:80]!r}" for line, text in _value_errors(path) if "Fix" not in text]
    assert not missing, f"{path.name}: ValueError messages without a Fix part:\n" + "\n".join(
        missing
    )


def test_the_reader_sees_messages():
    """Control: the reader finds the messages (a broken reader would pass every file)."""
    found = _value_errors(ROOT / "apps" / "recommender.py")
    assert len(found) >= 8
    assert any("history is empty; Fix:" in text for _, text in found)
