"""The Gradio page of ``recllm playground`` over a :class:`recllm.apps.playground.Playground`:
its layout, its event handlers and the HTML of item cards and marked generations.

Event handlers that take numbers or choices (run, chat, accept) receive the raw values the
browser or an API caller sent (``preprocess=False``): Gradio's own range checks would reject
an out-of-range value with a traceback on the server console, while the playground's checks
answer with one line in the status bar that says what to change.
"""

from __future__ import annotations

import html
import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from recllm.apps.playground import Playground
    from recllm.decode.generate import Recommendation
    from recllm.decode.text import SpanView

__all__ = ["CSS", "build_app", "cards_html", "rationales_html", "spans_html"]

CSS = """
.rl-cards { display: flex; flex-wrap: wrap; gap: 6px; }
.rl-card { border: 1px solid #ccc; border-radius: 6px; padding: 6px 8px; min-width: 150px; }
.rl-card.invalid { border-color: #c0392b; background: #fdecea; }
.rl-rank { font-weight: bold; margin-right: 4px; }
.rl-sid { font-family: monospace; font-size: 11px; color: #666; word-break: break-all; }
.rl-raw { font-family: monospace; white-space: pre-wrap; font-size: 12px; }
.rl-span.exact { background: #d5f5e3; }
.rl-span.prefix { background: #fcf3cf; }
.rl-span.invalid { background: #fadbd8; }
.rl-meta { color: #666; font-size: 12px; }
"""
#: Largest beams and k the Recommend tab's sliders offer (and the page accepts).
MAX_BEAMS = 50
#: Largest k of the Chat tab.
MAX_CHAT_K = 20


# -- HTML --------------------------------------------------------------------------------------


def cards_html(
    items: Sequence[Recommendation],
    sid_map: Any,
    seconds: float | None = None,
    slate_score: float | None = None,
) -> str:
    """Item cards: rank, title, item id, SID and score; an invalid answer gets a red card.

    ``slate_score``: the items are one slate (cards in answer order, each score the item's
    part); the summary says so and gives the joint log-prob (also as ``data-slate-score``).
    """
    from recllm.vocab import SID_FORMAT

    cards = []
    for n, r in enumerate(items, 1):
        if r.item_id is None:
            cards.append(
                f'<div class="rl-card invalid" data-rank="{n}"><span class="rl-rank">{n}</span>'
                "invalid answer (no catalog item)</div>"
            )
            continue
        sid = SID_FORMAT.render(sid_map.code(r.item_id))
        cards.append(
            f'<div class="rl-card" data-rank="{n}" data-item="{html.escape(r.item_id)}">'
            f'<span class="rl-rank">{n}</span> <span class="rl-title">'
            f"{html.escape(r.title or r.item_id)}</span><br>"
            f'<span class="rl-meta">{html.escape(r.item_id)} · score {r.score:.3f}</span><br>'
            f'<span class="rl-sid">{html.escape(sid)}</span></div>'
        )
    invalid = sum(r.item_id is None for r in items)
    meta = f"{len(items)} items, {invalid} invalid"
    attrs = ""
    if slate_score is not None:
        meta = f"slate of {len(items)} distinct items, joint log-prob {slate_score:.3f}"
        attrs = f' data-slate-score="{slate_score!r}"'
    if seconds is not None:
        meta += f", {seconds * 1000:.0f} ms"
    return (
        f'<div class="rl-meta rl-summary"{attrs}>{meta}</div>'
        f'<div class="rl-cards">{"".join(cards)}</div>'
    )


def spans_html(text: str, spans: Sequence[SpanView]) -> str:
    """``text`` escaped, each SID span marked (exact / prefix / invalid) and followed by its
    label."""
    out, at = [], 0
    for s in spans:
        out.append(html.escape(text[at : s.start]))
        out.append(
            f'<span class="rl-span {s.match}" title="{html.escape(s.text)}">'
            f"{html.escape(s.text)}</span> <b>→ {html.escape(s.label)}</b>"
        )
        at = s.end
    out.append(html.escape(text[at:]))
    return f'<div class="rl-raw">{"".join(out)}</div>'


def rationales_html(rationales: Sequence[str]) -> str:
    return "".join(
        f'<details class="rl-thought"><summary>thought {n}</summary>'
        f'<div class="rl-raw">{html.escape(r)}</div></details>'
        for n, r in enumerate(rationales, 1)
    )


# -- raw values from the page ------------------------------------------------------------------


def whole_number(value: Any, name: str, low: int, high: int) -> int:
    """``value`` as an int in ``low..high``; ``ValueError`` with the fix otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise ValueError(
            f"{name} must be a whole number, got {value!r:.40}; Fix: {low} <= {name} <= {high}"
        )
    if not low <= int(value) <= high:
        raise ValueError(f"{name}={int(value)} is out of range; Fix: {low} <= {name} <= {high}")
    return int(value)


def real_number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise ValueError(f"{name} must be a number, got {value!r:.40}; Fix: move the slider")
    return float(value)


# -- layout ------------------------------------------------------------------------------------


@dataclass
class Side:
    """The widgets of one configuration (A or B) of the Recommend tab."""

    template: Any
    preview: Any
    folder: Any
    save: Any
    constrained: Any
    think: Any
    mode: Any
    beams: Any
    k: Any
    temperature: Any
    top_p: Any
    results: Any
    raw: Any
    hide_history: Any
    output: Any
    slate_mode: Any

    def settings_inputs(self) -> list[Any]:
        """The inputs of a run, in the order :meth:`Playground.settings` reads them."""
        s = self
        return [
            s.template, s.constrained, s.think, s.mode, s.beams, s.k, s.temperature, s.top_p,
            s.hide_history, s.output, s.slate_mode,
        ]  # fmt: skip


def _side(gr: Any, pg: Playground, side: str, template: str, start: str) -> Side:
    gr.Markdown(f"### configuration {side}")
    with gr.Accordion("prompt template (Jinja)", open=side == "A"):
        tpl = gr.Code(template, lines=10, elem_id=f"template-{side}")
        preview = gr.Textbox(
            pg.preview(start, None),
            label="rendered prompt",
            lines=8,
            interactive=False,
            elem_id=f"preview-{side}",
        )
        with gr.Row():
            folder = gr.Textbox("prompts_edited", label="prompts folder", elem_id=f"folder-{side}")
            save = gr.Button("save template", elem_id=f"save-{side}")
    with gr.Row():
        constrained = gr.Checkbox(True, label="SID constraint", elem_id=f"constrained-{side}")
        can_think = pg.rec.spec.think is not None
        think = gr.Checkbox(
            False, label="think first", interactive=can_think, elem_id=f"think-{side}"
        )
        mode = gr.Radio(["beam", "sample"], value="beam", label="mode", elem_id=f"mode-{side}")
        hide_history = gr.Checkbox(
            False, label="hide items in the history", elem_id=f"hide-history-{side}"
        )
    with gr.Row():
        output = gr.Radio(
            ["top k", "slate"],
            value="top k",
            label="output",
            info="slate: k distinct items decoded as one answer",
            elem_id=f"output-{side}",
        )
        slate_mode = gr.Radio(
            ["beam", "greedy", "sample"],
            value="beam",
            label="slate decoding",
            elem_id=f"slate-mode-{side}",
        )
    with gr.Row():
        beams = gr.Slider(1, MAX_BEAMS, 10, step=1, label="beams", elem_id=f"beams-{side}")
        k = gr.Slider(
            1, MAX_BEAMS, 10 if side == "A" else 5, step=1, label="k", elem_id=f"k-{side}"
        )
    with gr.Row():
        temperature = gr.Slider(0.05, 2.0, 1.0, label="temperature", elem_id=f"temperature-{side}")
        top_p = gr.Slider(0.05, 1.0, 1.0, label="top-p", elem_id=f"top-p-{side}")
    results = gr.HTML(elem_id=f"results-{side}")
    raw = gr.HTML(elem_id=f"raw-{side}")
    return Side(
        tpl, preview, folder, save, constrained, think, mode, beams, k, temperature, top_p,
        results, raw, hide_history, output, slate_mode,
    )  # fmt: skip


@dataclass
class Chat:
    """The widgets of the Chat tab."""

    chatbot: Any
    message: Any
    send: Any
    picks: Any
    pick: Any
    accept: Any
    k: Any
    think: Any
    reset: Any
    session: Any  # the ChatSession (gr.State)
    log: Any  # the conversation shown, as {"role", "content"} messages (gr.State)


def _chat_tab(gr: Any, pg: Playground) -> Chat:
    mode_note = (
        "dialogue model: your words steer the picks"
        if pg.rec.spec.dialogue is not None
        else "this model was not trained on conversations: picks follow the history"
    )
    gr.Markdown(f"Starts from the Recommend tab's history. {mode_note}.")
    chatbot = gr.Chatbot(elem_id="chatbot", height=320)
    with gr.Row():
        message = gr.Textbox(label="message", elem_id="chat-input", scale=4)
        send = gr.Button("send", elem_id="chat-send", scale=1)
    picks = gr.HTML(elem_id="chat-picks")
    with gr.Row():
        pick = gr.Number(1, label="pick #", precision=0, elem_id="chat-pick")
        accept = gr.Button("accept pick", elem_id="chat-accept")
        k = gr.Slider(1, MAX_CHAT_K, 5, step=1, label="k", elem_id="chat-k")
        can_think = pg.rec.spec.think is not None
        think = gr.Checkbox(False, label="think", interactive=can_think, elem_id="chat-think")
        reset = gr.Button("reset", elem_id="chat-reset")
    return Chat(
        chatbot, message, send, picks, pick, accept, k, think, reset, gr.State(None), gr.State([])
    )


# -- events ------------------------------------------------------------------------------------


def _wire_history(gr: Any, pg: Playground, w: dict[str, Any], note: Callable[[str], str]) -> None:
    """Test user, title search and "add to history"."""

    def on_user(u):
        text = ", ".join(pg.users.get(u, []))
        return text, pg.history_markdown(text)

    w["user"].change(on_user, [w["user"]], [w["history"], w["history_view"]])
    w["history"].change(pg.history_markdown, [w["history"]], [w["history_view"]])

    def on_search(q):
        hits = pg.search(q)
        choices = [(f"{t} ({i})", i) for i, t in hits]
        return gr.update(choices=choices, value=choices[0][1] if choices else None)

    w["query"].change(on_search, [w["query"]], [w["found"]])

    def on_add(item, text):
        if not item:
            return text, note("error: nothing to add: search a title and pick a match first")
        items = [t for t in re.split(r"[\s,]+", text or "") if t] + [str(item)]
        try:
            pg.parse_history(", ".join(items))
        except ValueError as e:
            return text, note(f"error: {e}")
        return ", ".join(items), note(f"added {pg.rec.catalog.title(str(item))}")

    w["add"].click(on_add, [w["found"], w["history"]], [w["history"], w["status"]])


def _wire_recommend(
    pg: Playground, w: dict[str, Any], sides: list[Side], template: str, note: Callable
) -> None:
    """Template previews and saving per side, and the A/B run."""
    for side in sides:
        side.template.change(pg.preview, [w["history"], side.template], [side.preview])
        w["history"].change(pg.preview, [w["history"], side.template], [side.preview])

        def on_save(text, where):
            try:
                path = pg.save_template(text, where)
            except (ValueError, OSError) as e:
                return note(f"error: {e}")
            return note(f"saved {path.relative_to(pg.prompts_root)}")

        side.save.click(on_save, [side.template, side.folder], [w["status"]])

    def on_run(text, *values):
        outputs, notes = [], []
        per_side = len(values) // 2
        for n, name in enumerate(("A", "B")):
            try:
                part = values[per_side * n : per_side * (n + 1)]
                settings = pg.settings(part, default_template=template)
                res = pg.run(text, settings)
            except ValueError as e:
                notes.append(f"error ({name}): {e}")
                outputs += [f'<div class="rl-error">{html.escape(str(e))}</div>', ""]
                continue
            outputs.append(cards_html(res.items, pg.rec.sid_map, res.seconds, res.score))
            outputs.append(rationales_html(res.rationales) + spans_html(res.raw, res.spans))
        return [note(" · ".join(notes) if notes else "ok"), *outputs]

    inputs = [w["history"]] + [x for s in sides for x in s.settings_inputs()]
    outputs = [w["status"]] + [x for s in sides for x in (s.results, s.raw)]
    w["run"].click(on_run, inputs, outputs, preprocess=False, api_name="on_run")


def _shown_reply(reply: Any) -> str:
    """The assistant's words with each SID span replaced by its label, thoughts folded."""
    shown = reply.reply
    for s in sorted(reply.spans, key=lambda s: -s.start):
        shown = shown[: s.start] + f"**[{s.label}]**" + shown[s.end :]
    thoughts = "".join(
        f"<details><summary>thought</summary>{html.escape(r)}</details>" for r in reply.rationales
    )
    return thoughts + shown


def _wire_chat(gr: Any, pg: Playground, w: dict[str, Any], c: Chat, note: Callable) -> None:
    from recllm.apps.chat import ChatSession

    def chat_send(text, sess, hist_text, k_value, think_on, log):
        log = list(log or [])
        try:
            k = whole_number(k_value, "k", 1, MAX_CHAT_K)
            if sess is None:
                sess = ChatSession(pg.rec, pg.parse_history(hist_text), k=k)
            sess.set_k(k)
            sess.set_think(bool(think_on))
            with pg.lock:
                reply = sess.ask(str(text or ""))
        except ValueError as e:
            return sess, gr.update(), log, gr.update(), note(f"error: {e}"), gr.update()
        log += [
            {"role": "user", "content": str(text or "")},
            {"role": "assistant", "content": _shown_reply(reply)},
        ]
        cards = cards_html(reply.picks, pg.rec.sid_map, reply.seconds)
        return sess, log, log, "", note("ok"), cards

    io = (
        [c.message, c.session, w["history"], c.k, c.think, c.log],
        [c.session, c.chatbot, c.log, c.message, w["status"], c.picks],
    )
    c.send.click(chat_send, *io, preprocess=False)
    c.message.submit(chat_send, *io, preprocess=False)

    def chat_accept(n, sess):
        try:
            if sess is None:
                raise ValueError("nothing to accept yet; Fix: send a message first")
            item = sess.accept(whole_number(n, "pick #", 1, MAX_CHAT_K))
        except ValueError as e:
            return sess, note(f"error: {e}")
        return sess, note(f"added {pg.rec.catalog.title(item)} ({item}) to the history")

    c.accept.click(chat_accept, [c.pick, c.session], [c.session, w["status"]], preprocess=False)

    def chat_reset(hist_text):
        return None, [], [], "", note("chat reset")

    outputs = [c.session, c.chatbot, c.log, c.picks, w["status"]]
    c.reset.click(chat_reset, [w["history"]], outputs)


# -- the page ----------------------------------------------------------------------------------


def build_app(pg: Playground) -> Any:
    """The Gradio page over ``pg`` (see :mod:`recllm.apps.playground`)."""
    import gradio as gr

    rec = pg.rec
    template = pg.template_text()
    user_choices = [(f"user {u} ({len(h)} items)", u) for u, h in pg.users.items()]
    first_user = next(iter(pg.users), None)
    start = ", ".join(pg.users[first_user]) if first_user else ""
    counter = itertools.count(1)

    def note(text: str) -> str:
        """A status line, numbered so that each answer is new even when its words repeat."""
        return f"[{next(counter)}] {text}"

    with gr.Blocks(title="recllm playground") as app:
        gr.Markdown(f"## recllm playground · `{rec.model_dir}` · engine {rec.engine}")
        w: dict[str, Any] = {"status": gr.Markdown("", elem_id="status")}
        with gr.Tab("Recommend"):
            with gr.Row():
                w["user"] = gr.Dropdown(
                    user_choices, value=first_user, label="test user", elem_id="user"
                )
                w["query"] = gr.Textbox(label="search titles", elem_id="search")
                w["found"] = gr.Dropdown(
                    [], label="matches", elem_id="found", allow_custom_value=True
                )
                w["add"] = gr.Button("add to history", elem_id="add")
            w["history"] = gr.Textbox(
                start, label="history (item ids, oldest first)", lines=2, elem_id="history"
            )
            w["history_view"] = gr.Markdown(pg.history_markdown(start), elem_id="history-view")
            w["run"] = gr.Button("recommend (A and B)", variant="primary", elem_id="run")
            sides = []
            with gr.Row():
                for side in ("A", "B"):
                    with gr.Column():
                        sides.append(_side(gr, pg, side, template, start))
        with gr.Tab("Chat"):
            chat = _chat_tab(gr, pg)
        _wire_history(gr, pg, w, note)
        _wire_recommend(pg, w, sides, template, note)
        _wire_chat(gr, pg, w, chat, note)
    return app
