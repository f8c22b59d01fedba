"""``recllm chat`` driven through a pseudo-terminal (pexpect), on a tiny dialogue model: item
cards, commands, accepted items joining the history, bad input that leaves the REPL running.

``test_repl_transcript`` also renders its session as a PNG through Chromium when Playwright and
a Chromium are installed (to ``RECLLM_SCREENSHOTS=DIR`` when set, else the test's temporary
folder); with ``RECLLM_DEMO_MODEL=DIR`` it talks to that model (the README's picture).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from recllm.testing import save_tiny_recommender

pexpect = pytest.importorskip("pexpect", reason="pexpect drives the REPL (the [dev] extra)")

PROMPT = "you> "
DEMO_MODEL = os.environ.get("RECLLM_DEMO_MODEL")


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
        # /slate N: N distinct picks decoded as one slate, none of the history; /slate: k of them
        seen = {"item3", "item7", second}
        for line, n in (("/slate 3", 3), ("/slate", 4)):
            out = _say(child, line)
            assert re.search(rf"slate of {n}, joint log-prob -\d+\.\d{{3}}", out), out
            rows = re.findall(r"│\s+(\d)\s+│\s+(movie \d+)\s+│\s+(item\d+)\s+│", out)
            picks = [r[2] for r in rows]
            assert len(set(picks)) == n and not set(picks) & seen, out
        assert "/slate [N]" in _say(child, "/help")
        # bad input: one line, the REPL keeps going
        for bad, message in (
            ("/accept 9", "error: pick 9 does not exist; Fix: choose 1 to 4"),
            ("/k x", "error: /k takes a number"),
            ("/slate x", "error: /slate takes a number"),
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


def test_repl_unknown_user_is_one_line(model_dir: Path):
    bad = _spawn(model_dir, "--user", "nobody")
    bad.expect(pexpect.EOF)
    bad.close()
    assert bad.exitstatus == 2
    assert "--user nobody: is not a test user" in bad.before


def _first_test_user(model_dir: Path) -> str:
    from recllm.eval.run import eval_examples

    return eval_examples(model_dir, None, "test", 1)[2][0].user_id


def test_repl_transcript(model_dir: Path, tmp_path: Path):
    """A short session as a user would type it; its screen, rendered as a PNG."""
    model = Path(DEMO_MODEL) if DEMO_MODEL else model_dir
    child = _spawn(model, "--user", _first_test_user(model), "--k", "5")
    screen = []
    try:
        child.expect_exact(PROMPT)
        screen.append(ANSI.sub("", child.before) + PROMPT)
        for line in ("Something with genre Horror, please.", "/accept 1", "another one?"):
            out = _say(child, line)
            screen.append(out + PROMPT)
            if not line.startswith("/"):
                assert "top 5" in out and len(re.findall(r"│\s+\d\s+│", out)) == 5, out
        child.sendeof()  # Ctrl-D leaves as /quit does
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
    text = "".join(screen).replace("\r\n", "\n")
    text = re.sub(r"^\d\d:\d\d:\d\d (INFO|WARNING) .*\n", "", text, flags=re.M)
    folder = Path(os.environ.get("RECLLM_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "chat_repl.txt").write_text(text, encoding="utf-8")
    chromium = os.environ.get("RECLLM_CHROMIUM") or shutil.which("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return
    if chromium is None:
        return
    import html

    page_html = (
        "<html><body style='margin:0;background:#1e1e1e'><pre style='color:#ddd;"
        "font:13px/1.35 DejaVu Sans Mono,monospace;padding:14px;margin:0'>"
        f"{html.escape(text)}</pre></body></html>"
    )
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1250, "height": 400})
        page.set_content(page_html)
        page.screenshot(path=str(folder / "chat_repl.png"), full_page=True)
        browser.close()
    assert (folder / "chat_repl.png").stat().st_size > 5_000
