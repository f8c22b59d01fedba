"""``recllm playground`` in a real headless Chromium (Debian's ``chromium`` package, driven by
Playwright with the system browser: nothing is downloaded), on a tiny dialogue model served by
the real CLI in a child process.

Skipped with the reason when no Chromium or no Playwright is installed; ``.ci/run`` installs both.
Screenshots go to the test's temporary folder (``RECLLM_SCREENSHOTS=DIR`` keeps them). With
``RECLLM_DEMO_MODEL=DIR`` the page serves that model instead of the tiny one (the README's
screenshots: the quickstart model), and the checks that only a random model makes true (its
unconstrained answers are invalid, its titles are "movie N") are left out.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from recllm.testing import save_tiny_recommender
from tests.serving import free_port, wait_for_http

CHROMIUM = os.environ.get("RECLLM_CHROMIUM") or shutil.which("chromium")
playwright = pytest.importorskip("playwright.sync_api", reason="Playwright drives the browser")
pytest.importorskip("gradio", reason="the playground needs Gradio (the [apps] extra)")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium: apt-get install chromium (or set RECLLM_CHROMIUM)"
)
TIMEOUT_MS = 120_000
REAL_MODEL = os.environ.get("RECLLM_DEMO_MODEL")


#: The served page's working folder (where "save template" writes a relative prompts folder).
SERVED: dict[str, Path] = {}


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("pg")
    SERVED["root"] = root
    model = REAL_MODEL or save_tiny_recommender(root / "tiny", dialogue=True)
    port = free_port()
    log = root / "playground.log"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
    }
    cmd = [
        sys.executable,
        "-m",
        "recllm.cli",
        "playground",
        "--model",
        str(model),
        "--port",
        str(port),
    ]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(proc, base, log, seconds=180)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("RECLLM_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _open(browser, url: str):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    page.wait_for_selector("#run")
    return page


STATUS = "#status [data-testid=markdown]"  # the status text, not Gradio's progress timer


def _status_text(page) -> str:
    return page.evaluate(
        "sel => { const e = document.querySelector(sel); return e ? e.innerText.trim() : ''; }",
        STATUS,
    )


def _status(page, before: str = "") -> str:
    """Wait for a new status line (each is numbered: "[n] text"); return its text unnumbered."""
    page.wait_for_function(
        "([sel, old]) => { const e = document.querySelector(sel);"
        " const t = e ? e.innerText.trim() : ''; return /^\\[\\d+\\]/.test(t) && t !== old; }",
        arg=[STATUS, before],
    )
    return re.sub(r"^\[\d+\]\s*", "", _status_text(page))


def _run(page) -> str:
    before = _status_text(page)
    page.click("#run")
    return _status(page, before)


def _cards(page, side: str) -> list[str]:
    return page.locator(f"#results-{side} .rl-card").evaluate_all(
        "els => els.map(e => e.innerText.replace(/\\s+/g, ' ').trim())"
    )


def _set_code(page, side: str, text: str) -> None:
    editor = page.locator(f"#template-{side} .cm-content")
    editor.click()
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    page.keyboard.insert_text(text)


def test_recommend_ab_constraint_and_template(browser, url: str, shots: Path):
    page = _open(browser, url)
    # the first test user's history is loaded and the prompt preview shows SID tokens
    assert "<|sid_begin|>" in page.locator("#preview-A textarea").input_value()
    assert _run(page) == "ok"
    a, b = _cards(page, "A"), _cards(page, "B")
    assert len(a) == 10 and len(b) == 5  # k = 10 (A), 5 (B)
    card = r"^\d+ .+ \S+ · score -?\d" if REAL_MODEL else r"^\d+ movie \d+ item\d+ · score -?\d"
    assert all(re.match(card, c) for c in a), a
    assert a[:5] == b  # same model and settings but k: the same top 5
    raw = page.locator("#raw-A .rl-span.exact")
    assert raw.count() >= 1  # the raw generation's SID spans are marked and named
    page.screenshot(path=str(shots / "playground_recommend.png"), full_page=True)

    # B without the constraint: the tiny random model's answers are not catalog SIDs
    page.click("#constrained-B input")
    assert _run(page) == "ok"
    assert len(_cards(page, "A")) == 10
    invalid_b = page.locator("#results-B .rl-card.invalid").count()
    assert REAL_MODEL or invalid_b > 0, _cards(page, "B")
    assert " invalid" in page.locator("#results-B .rl-summary").inner_text()
    page.screenshot(path=str(shots / "playground_unconstrained.png"), full_page=True)

    # a template that does not render: the preview and the status say so, B still runs
    template = page.locator("#template-A .cm-content").inner_text()
    _set_code(page, "A", "{% block user %}{{ history | nonsense }}{% endblock %}")
    page.wait_for_function(
        "() => document.querySelector('#preview-A textarea').value.startsWith('error:')"
    )
    status = _run(page)
    assert status.startswith("error (A): template"), status
    assert len(_cards(page, "B")) > 0
    # an edited template that renders: the preview shows the edit; results follow it
    edited = template.replace("Which item", "EDITED. Which item")
    assert edited != template
    _set_code(page, "A", edited)
    page.wait_for_function(
        "() => document.querySelector('#preview-A textarea').value.includes('EDITED. Which')"
    )
    assert _run(page) == "ok" and len(_cards(page, "A")) == 10
    # save it back to a prompts folder (relative to where the playground runs)
    before = _status_text(page)
    page.click("#save-A")
    assert _status(page, before) == "saved prompts_edited/rec.jinja"
    assert "EDITED. Which item" in (SERVED["root"] / "prompts_edited" / "rec.jinja").read_text()
    page.close()


def test_bad_input_keeps_the_page_working(browser, url: str):
    page = _open(browser, url)
    history = page.locator("#history textarea")
    saved = history.input_value()
    history.fill("")
    assert _run(page).startswith("error (A): history is empty")
    first = saved.split(",")[0].strip()
    history.fill(f"{first}, no-such-item")
    assert "unknown item ids ['no-such-item']" in _run(page)
    history.fill(saved)
    page.locator("#k-B input[type=number]").fill("20")
    page.locator("#k-B input[type=number]").press("Enter")
    status = _run(page)
    assert "error (B): k (20) > beams (10)" in status and len(_cards(page, "A")) == 10
    # search a title (the history's first item's, as the page lists it) and add it again
    listed = page.locator("#history-view li").first.inner_text()
    title = re.sub(r"\s*\(\s*" + re.escape(first) + r"\s*\)\s*$", "", listed).strip()
    page.locator("#search textarea, #search input").first.fill(title)
    page.wait_for_function(
        "t => document.querySelector('#found input').value.includes(t)", arg=title
    )
    before = _status_text(page)
    page.click("#add")
    assert _status(page, before) == f"added {title}"
    assert history.input_value().endswith(f", {first}")
    page.close()


def test_chat_tab(browser, url: str, shots: Path):
    page = _open(browser, url)
    page.get_by_role("tab", name="Chat").click()
    page.locator("#chat-input textarea").fill("Something with genre Horror?")
    page.click("#chat-send")
    page.wait_for_selector("#chat-picks .rl-card")
    assert page.locator("#chat-picks .rl-card").count() == 5
    bubbles = page.locator("#chatbot .message")
    page.wait_for_function("() => document.querySelectorAll('#chatbot .message').length >= 2")
    if not REAL_MODEL:  # the tiny dialogue model's reply: its SID span shown as the title
        assert "movie" in bubbles.last.inner_text()
    first = page.locator("#chat-picks .rl-card").first.get_attribute("data-item")
    before = _status_text(page)
    page.click("#chat-accept")
    assert re.fullmatch(rf"added .+ \({first}\) to the history", _status(page, before))
    page.screenshot(path=str(shots / "playground_chat.png"), full_page=True)
    page.close()


def test_slate_mode(browser, url: str, shots: Path):
    """Issue 32 item 5: side A switched to "output: slate" with the history hidden shows k (10)
    distinct items in answer order under the slate's joint log-prob, none of the history;
    side B (top k) is unchanged."""
    page = _open(browser, url)
    history = {i.strip() for i in page.locator("#history textarea").input_value().split(",")}
    page.locator('#output-A input[value="slate"]').check()
    page.click("#hide-history-A input")
    assert _run(page) == "ok"
    items = page.locator("#results-A .rl-card").evaluate_all(
        "els => els.map(e => [e.dataset.rank, e.dataset.item])"
    )
    assert [int(r) for r, _ in items] == list(range(1, 11))
    picks = [i for _, i in items]
    assert len(set(picks)) == 10 and not set(picks) & history, picks
    summary = page.locator("#results-A .rl-summary")
    assert re.match(r"slate of 10 distinct items, joint log-prob -\d+\.\d{3}", summary.inner_text())
    assert float(summary.get_attribute("data-slate-score")) < 0
    assert len(_cards(page, "B")) == 5  # B still outputs its top k
    assert page.locator("#results-B .rl-summary").get_attribute("data-slate-score") is None
    page.screenshot(path=str(shots / "playground_slate.png"), full_page=True)
    page.close()


def test_eight_concurrent_sessions(url: str):
    """Eight browser contexts (separate sessions) load the page and run A/B at once: every one
    gets its cards and an ok status; none sees another's error."""
    import asyncio

    from playwright.async_api import async_playwright

    async def one(browser, n: int) -> str:
        context = await browser.new_context(viewport={"width": 1400, "height": 1000})
        page = await context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        await page.goto(url)
        await page.wait_for_selector("#run")
        await page.click("#run")
        await page.wait_for_function(
            "sel => { const e = document.querySelector(sel);"
            " return e && /^\\[\\d+\\]/.test(e.innerText.trim()); }",
            arg=STATUS,
        )
        status = re.sub(r"^\[\d+\]\s*", "", (await page.locator(STATUS).inner_text()).strip())
        cards = await page.locator("#results-A .rl-card").count()
        await context.close()
        return status if cards == 10 else f"session {n}: {cards} cards, status {status!r}"

    async def main() -> list[str]:
        async with async_playwright() as p:
            browser = await p.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
            )
            try:
                return await asyncio.gather(*(one(browser, n) for n in range(8)))
            finally:
                await browser.close()

    # a thread of its own: the sync Playwright of the other tests keeps a loop in this one
    with ThreadPoolExecutor(1) as pool:
        statuses = pool.submit(asyncio.run, main()).result()
    assert statuses == ["ok"] * 8, statuses
