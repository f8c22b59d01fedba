"""``recllm chat`` driven through a pseudo-terminal (pexpect), on a tiny dialogue model: item
cards, commands, accepted items joining the history, bad input that leaves the REPL running."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

from recllm.testing import save_tiny_recommender

pexpect = pytest.importorskip("pexpect", reason="pexpect drives the REPL (the [dev] extra)")

PROMPT = "you> "


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_recommender(tmp_path_factory.mktemp("repl") / "tiny", dialogue=True)


def _spawn(model_dir: Path, *extra: str):
    env = {
        **os.environ,
        "NO_COLOR": "1",
        "COLUMNS": "200",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }
    cmd = [sys.executable, "-m", "recllm.cli", "chat", "--model", str(model_dir), *extra]
    child = pexpect.spawn(cmd[0], cmd[1:], env=env, encoding="utf-8", timeout=180)
    child.setwinsize(50, 200)
    return child


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _say(child, line: str) -> str:
    """Send a line; the output until the next prompt, styles removed."""
    child.sendline(line)
    child.expect_exact(PROMPT)
    return ANSI.sub("", child.before)


def test_repl_session(model_dir: Path, tmp_path: Path):
    child = _spawn(model_dir, "--history", "item3", "item7", "--k", "3")
    log = []
    try:
        child.expect_exact(PROMPT)
        assert "dialogue model: your words steer the picks" in child.before
        assert "history: 2 items; k = 3" in child.before
        out = _say(child, "Something with genre Horror?")
        log.append(out)
        assert "top 3" in out
        assert " INFO " not in out  # the chat shows answers, not the library's log
        rows = re.findall(r"│\s+(\d)\s+│\s+(movie \d+)\s+│\s+(item\d+)\s+│", out)
        assert [r[0] for r in rows] == ["1", "2", "3"], out
        assert all(r[1] == "movie " + r[2].removeprefix("item") for r in rows)  # titles match
        # the reply names the top pick by its title, in brackets (its SID span resolved)
        assert re.search(r"model: \[movie \d+\]", out), out
        second = rows[1][2]
        out = _say(child, "/accept 2")
        assert f"added movie {second.removeprefix('item')} ({second}) to your history" in out
        out = _say(child, "/history")
        assert "1. movie 3 (item3)" in out and f"3. movie {second[4:]} ({second})" in out
        out = _say(child, "/k 4")
        assert "k = 4" in out
        out = _say(child, "more please")
        assert "top 4" in out
        # bad input: one line, the REPL keeps going
        for bad, message in (
            ("/accept 9", "error: pick 9 does not exist; Fix: choose 1 to 4"),
            ("/k x", "error: /k takes a number"),
            ("/think on", "was not trained to think"),
            ("/add no-such-title-anywhere", "no item title contains"),
            ("/frobnicate", "error: unknown command /frobnicate; Fix: /help"),
        ):
            assert message in _say(child, bad), bad
        out = _say(child, "/add movie 42")
        assert "added movie 42 (item42)" in out
        out = _say(child, "/reset")
        assert "cleared" in out
        out = _say(child, "hello")
        assert "error: the history is empty; Fix" in out
        out = _say(child, "/search movie 5")
        assert "item5: movie 5" in out
        child.sendline("/quit")
        child.expect(pexpect.EOF)
    finally:
        (tmp_path / "repl.log").write_text("\n----\n".join(log))
        child.close()
    assert child.exitstatus == 0


def test_repl_user_flag_and_eof(model_dir: Path):
    child = _spawn(model_dir, "--user", "u3")
    child.expect_exact(PROMPT)
    assert re.search(r"history: \d+ items", child.before)
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    bad = _spawn(model_dir, "--user", "nobody")
    bad.expect(pexpect.EOF)
    bad.close()
    assert bad.exitstatus == 2
    assert "--user nobody: is not a test user" in bad.before
