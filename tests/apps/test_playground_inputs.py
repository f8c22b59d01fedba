"""The playground page's answers to out-of-range input sent to its API, and where "save
template" may write (issue 29, item 7), on the real Gradio app served in this process and
called through gradio_client (what a script or a tampered page sends).

Out-of-range values (k 0, beams 0, temperature 0, mode "greedy", ...) used to be rejected by
Gradio's own component checks, each printing a traceback on the server console; they now get
the house message in the status line, and the other side still runs.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from recllm.apps.playground import Playground, build_app
from recllm.testing import save_tiny_recommender
from tests.serving import free_port

pytest.importorskip("gradio", reason="the playground needs Gradio (the [apps] extra)")
client_mod = pytest.importorskip("gradio_client", reason="the page is called as an API")
pytestmark = pytest.mark.usefixtures("torch_single_thread")


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Playground, object, Path]]:
    root = tmp_path_factory.mktemp("pg")
    model = save_tiny_recommender(root / "tiny")
    prompts = root / "served"
    prompts.mkdir()
    pg = Playground.from_pretrained(model, prompts_root=prompts)
    app = build_app(pg)
    app.queue()
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield pg, client_mod.Client(f"http://127.0.0.1:{port}/", verbose=False), prompts
    finally:
        app.close()


def _side(pg: Playground, **changes) -> list:
    values = dict(
        template=pg.template_text(),
        constrained=True,
        think=False,
        mode="beam",
        beams=10,
        k=5,
        temperature=1.0,
        top_p=1.0,
        hide_history=False,
        output="top k",
        slate_mode="beam",
    )
    values.update(changes)
    return list(values.values())


def _status(text: str) -> str:
    return re.sub(r"^\[\d+\]\s*", "", text)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"k": 0}, "k=0 is out of range; Fix: 1 <= k <= 50"),
        ({"k": 60}, "k=60 is out of range; Fix: 1 <= k <= 50"),
        ({"k": None}, "k must be a whole number"),
        ({"k": 2.5}, "k must be a whole number"),
        ({"beams": 0}, "beams=0 is out of range; Fix: 1 <= beams <= 50"),
        ({"beams": 100}, "beams=100 is out of range; Fix: 1 <= beams <= 50"),
        ({"mode": "greedy"}, "mode must be beam or sample, got 'greedy'; Fix: "),
        ({"mode": "sample", "temperature": 0}, "sampling needs temperature > 0"),
        ({"mode": "sample", "temperature": "hot"}, "temperature must be a number"),
        ({"mode": "sample", "top_p": 0}, "sampling needs temperature > 0 and 0 < top-p <= 1"),
        ({"mode": "sample", "top_p": 1.5}, "sampling needs temperature > 0 and 0 < top-p <= 1"),
        ({"output": "list"}, "output must be one of ('top k', 'slate')"),
        ({"output": "slate", "slate_mode": "topk"}, "slate decoding must be one of"),
        ({"output": "slate", "constrained": False}, "a slate is decoded inside the SID constraint"),
        ({"output": "slate", "k": 0}, "k=0 is out of range"),
    ],
)
def test_out_of_range_run_input_is_a_status_message_not_a_traceback(page, capfd, changes, message):
    pg, client, _ = page
    history = ", ".join(pg.users["u3"])
    capfd.readouterr()
    cheap = _side(pg, k=2, beams=2)
    out = client.predict(history, *_side(pg, **changes), *cheap, api_name="/on_run")
    status = _status(out[0])
    assert status.startswith("error (A): ") and message in status, status
    assert "Fix: " in status, status
    assert out[3].count('class="rl-card"') == 2  # B still ran
    err = capfd.readouterr().err
    assert "Traceback" not in err, err[-3000:]


def test_in_range_input_runs(page, capfd):
    """Control: the same call with good values answers ok on both sides."""
    pg, client, _ = page
    history = ", ".join(pg.users["u3"])
    out = client.predict(history, *_side(pg, k=4, beams=6), *_side(pg), api_name="/on_run")
    assert _status(out[0]) == "ok"
    assert out[1].count('class="rl-card"') == 4 and out[3].count('class="rl-card"') == 5
    assert "Traceback" not in capfd.readouterr().err


def _slate_of(html: str) -> tuple[list[str], list[str], float]:
    """The cards' items and positions, and the joint log-prob, of a side's results HTML."""
    score = re.search(r'data-slate-score="([^"]+)"', html)
    assert score is not None, html[:500]
    items = re.findall(r'data-item="([^"]+)"', html)
    return items, re.findall(r'data-rank="(\d+)"', html), float(score.group(1))


def test_slate_output_through_the_page_api(page):
    """Issue 32 item 5: "output: slate" answers one slate (Recommender.recommend_slate on the
    same history: items, positions, joint log-prob), the history hidden inside the constraint
    when asked; the control side (history shown) holds a history item."""
    pg, client, _ = page
    rec = pg.rec
    history = [r.item_id for r in rec.recommend(["item2"], 50, num_beams=50)][:4]
    hidden = _side(pg, k=5, beams=6, output="slate", hide_history=True)
    shown = _side(pg, k=5, beams=6, output="slate")
    out = client.predict(", ".join(history), *hidden, *shown, api_name="/on_run")
    assert _status(out[0]) == "ok"
    items, ranks, score = _slate_of(out[1])
    want = rec.recommend_slate(history, 5, num_beams=6, exclude_history=True)
    assert items == [r.item_id for r in want.items] and ranks == ["1", "2", "3", "4", "5"]
    assert score == pytest.approx(want.score) and f"joint log-prob {want.score:.3f}" in out[1]
    assert len(set(items)) == 5 and not set(items) & set(history)
    assert out[2].count('class="rl-span exact"') == 5  # the slate answer, each SID named
    control, _, _ = _slate_of(out[3])
    assert len(set(control)) == 5 and set(control) & set(history), control
    # greedy and seeded sampling decode as the Recommender does
    greedy = _side(pg, k=4, output="slate", slate_mode="greedy")
    drawn = _side(pg, k=4, beams=3, output="slate", slate_mode="sample", temperature=2.0)
    out = client.predict(", ".join(history), *greedy, *drawn, api_name="/on_run")
    want = rec.recommend_slate(history, 4, mode="greedy")
    assert _slate_of(out[1])[0] == [r.item_id for r in want.items]
    want = rec.recommend_slate(history, 4, mode="sample", num_beams=3, temperature=2.0, seed=0)
    assert _slate_of(out[3])[0] == [r.item_id for r in want.items]
    # an edited template is the prompt the slate is decoded from
    edited = pg.template_text().replace("Which item", "EDITED. Which item")
    assert edited != pg.template_text()
    sides = [*_side(pg, k=3, output="slate", template=edited), *_side(pg, k=3, output="slate")]
    out = client.predict(", ".join(history), *sides, api_name="/on_run")
    prompt = pg.messages(history, edited)
    want = rec.recommend_slates([history], 3, num_beams=10, prompts=[prompt])[0][0]
    assert _slate_of(out[1])[2] == pytest.approx(want.score)
    assert _slate_of(out[3])[2] != pytest.approx(want.score)  # the control: the model's prompt


@pytest.mark.parametrize(
    ("k", "message"),
    [(0, "k=0 is out of range; Fix: 1 <= k <= 20"), (25, "k=25 is out of range"), (None, "k")],
)
def test_out_of_range_chat_k_is_a_status_message(page, capfd, k, message):
    pg, client, _ = page
    history = ", ".join(pg.users["u3"])
    capfd.readouterr()
    out = client.predict("hello", history, k, False, api_name="/chat_send")
    status = _status(out[2])
    assert status.startswith("error: ") and message in status and "Fix: " in status, status
    assert "Traceback" not in capfd.readouterr().err
    ok = client.predict("hello", history, 3, False, api_name="/chat_send")  # control
    assert _status(ok[2]) == "ok" and ok[3].count('class="rl-card"') == 3
    assert [m["role"] for m in ok[0]][-2:] == ["user", "assistant"]
    accepted = _status(client.predict(1, api_name="/chat_accept"))
    assert accepted.startswith("added ") and accepted.endswith(" to the history"), accepted
    assert _status(client.predict(0, api_name="/chat_accept")).startswith(
        "error: pick #=0 is out of range; Fix: "
    )


@pytest.mark.parametrize(
    ("folder", "message"),
    [
        ("/tmp/recllm-playground-escape", "an absolute path"),
        ("../escape", "leaves the prompts folder"),
        ("a/../../escape", "leaves the prompts folder"),
        ("", "no folder name"),
    ],
)
def test_save_template_writes_only_inside_the_prompts_folder(page, capfd, folder, message):
    pg, client, prompts = page
    status = _status(client.predict(pg.template_text(), folder, api_name="/on_save"))
    assert status.startswith("error: ") and message in status and "Fix: " in status, status
    assert not Path("/tmp/recllm-playground-escape/rec.jinja").exists()
    assert not (prompts.parent / "escape").exists()
    assert "Traceback" not in capfd.readouterr().err


def test_save_template_inside_the_prompts_folder(page):
    """Control: a relative folder inside the prompts folder is written there."""
    pg, client, prompts = page
    edited = pg.template_text().replace("Which item", "SAVED. Which item")
    status = _status(client.predict(edited, "mine/v1", api_name="/on_save"))
    assert status == "saved mine/v1/rec.jinja"
    assert (prompts / "mine" / "v1" / "rec.jinja").read_text() == edited
