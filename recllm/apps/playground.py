"""``recllm playground``: a web page to poke a recllm model (Gradio, on 127.0.0.1).

The page has two tabs over one model directory:

- **Recommend**: pick a test user of the model's recorded split, or build a history by
  searching titles; edit the recommendation prompt template (Jinja) with a live preview of the
  rendered prompt (chat template applied, SID tokens visible); decode with two configurations
  side by side (A/B: SID constraint on/off, beam or sampling, beams, k, temperature, top-p,
  thinking where the model learned it). Results are item cards (rank, title, SID, score), the
  raw generation with every SID span marked and named (exact item, else longest-prefix match,
  labelled), rationales in collapsible blocks, and the latency. An edited template can be
  saved to a prompts folder.
- **Chat**: a conversation (:class:`recllm.apps.chat.ChatSession`, what ``recllm chat`` runs):
  item cards per answer, accepting a pick adds it to the history.

Why Gradio: it is the ecosystem's tool for ML demos, gives a usable page for the cost of the
layout, queues requests, and its pages are plain HTML a browser test can drive. The logic lives
in :class:`Playground` (no Gradio in it), so it is tested directly and the page only wires it.
Bad input (empty history, unknown items, a template that fails to render, k > beams) shows a
one-line message in the page's status line and nothing else changes.
"""

from __future__ import annotations

import html
import logging
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from recllm.apps.recommender import Recommender
    from recllm.decode.generate import Recommendation
    from recllm.decode.text import SpanView

__all__ = ["DecodeSettings", "Playground", "RunResult", "build_app", "cards_html", "spans_html"]

logger = logging.getLogger(__name__)

#: Tokens of the raw generation shown under the cards.
RAW_TOKENS = 48


@dataclass
class DecodeSettings:
    """One configuration of the Recommend tab (A or B)."""

    constrained: bool = True
    mode: str = "beam"  # "beam" | "sample"
    beams: int = 10
    k: int = 10
    temperature: float = 1.0
    top_p: float = 1.0
    think: bool = False
    template: str | None = None  # edited `rec` template text; None: the model's own
    seed: int = 0

    def check(self, max_k: int) -> None:
        """Raise ``ValueError`` with the fix for settings that cannot run."""
        if self.mode not in ("beam", "sample"):
            raise ValueError(f"mode must be beam or sample, got {self.mode!r}")
        if not 1 <= self.k <= max_k:
            raise ValueError(f"k={self.k} is out of range; Fix: 1 <= k <= {max_k}")
        if self.mode == "beam" and self.k > self.beams:
            raise ValueError(
                f"k ({self.k}) > beams ({self.beams}): a beam search returns at most one item "
                "per beam; Fix: raise beams or lower k"
            )
        if self.mode == "sample" and not (self.temperature > 0 and 0 < self.top_p <= 1):
            raise ValueError("sampling needs temperature > 0 and 0 < top-p <= 1")


@dataclass
class RunResult:
    """What one configuration returned."""

    items: list[Recommendation]
    prompt: str
    raw: str = ""
    spans: list[SpanView] = field(default_factory=list)
    rationales: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def invalid(self) -> int:
        return sum(r.item_id is None for r in self.items)


class Playground:
    """The model-side operations of the page (no Gradio here)."""

    def __init__(self, recommender: Recommender, users: dict[str, list[str]]) -> None:
        self.rec = recommender
        self.users = users
        self.lock = threading.Lock()  # one decode at a time on the shared model

    @classmethod
    def from_pretrained(
        cls, model_dir: str | Path, *, engine: str = "hf", data: str | None = None
    ) -> Playground:
        from recllm.apps.recommender import Recommender
        from recllm.eval.run import eval_examples

        rec = Recommender.from_pretrained(model_dir, engine=engine, data=data)
        users: dict[str, list[str]] = {}
        if rec.spec.data or data:
            _, _, examples = eval_examples(model_dir, data, "test", 0)
            users = {ex.user_id: list(ex.history) for ex in examples}
        return cls(rec, users)

    # -- history -------------------------------------------------------------------------------

    def parse_history(self, text: str) -> list[str]:
        """Item ids separated by commas, spaces or new lines, checked against the catalog."""
        items = [t for t in re.split(r"[\s,]+", text or "") if t]
        return self.rec.check_request(items, 1)

    def history_markdown(self, text: str) -> str:
        try:
            items = self.parse_history(text)
        except ValueError as e:
            return f"*{html.escape(str(e))}*"
        return "\n".join(
            f"{n}. {html.escape(self.rec.catalog.title(i))} (`{i}`)" for n, i in enumerate(items, 1)
        )

    def search(self, query: str, limit: int = 20) -> list[tuple[str, str]]:
        words = (query or "").lower().split()
        if not words:
            return []
        cat = self.rec.catalog
        hits = [
            (i, cat.title(i))
            for i in self.rec.sid_map.item_ids
            if i in cat and all(w in cat.title(i).lower() for w in words)
        ]
        return sorted(hits, key=lambda h: (len(h[1]), h[1]))[:limit]

    # -- prompts -------------------------------------------------------------------------------

    def template_text(self) -> str:
        """The model's recommendation template (saved with it, else the packaged one)."""
        from recllm.tasks.config import PROMPTS_DIR

        folder = Path(self.rec.spec.prompts_dir or PROMPTS_DIR)
        return (folder / "rec.jinja").read_text(encoding="utf-8")

    def messages(self, items: Sequence[str], template: str | None) -> list[dict[str, str]]:
        """The recommendation prompt of ``items`` under ``template``.

        Raises:
            ValueError: The template does not render (the message names the line).
        """
        import jinja2

        from recllm.data.splits import Example
        from recllm.tasks.builders import TaskRenderer
        from recllm.tasks.prompting import task_builder

        if self.rec.spec.style != "chat":
            raise ValueError("this model is a SID-sequence decoder: it has no prompt template")
        builder = task_builder(self.rec.spec, self.rec.sid_map, self.rec.catalog)
        if template is not None:
            builder.renderer = TaskRenderer(builder.config.prompts_dir, {"rec": template})
        cut = self.rec.spec.max_history
        history = tuple(items[-cut:] if cut else items)
        try:
            row = next(builder.rec([Example("playground", history, history[-1])]))
        except jinja2.TemplateSyntaxError as e:
            raise ValueError(f"template line {e.lineno}: {e.message}") from None
        except jinja2.TemplateError as e:
            raise ValueError(f"template: {e}") from None
        return row["prompt"]

    def preview(self, history_text: str, template: str | None) -> str:
        """The rendered prompt as the model reads it (chat template applied), or the error."""
        try:
            items = self.parse_history(history_text)
            messages = self.messages(items, template)
        except ValueError as e:
            return f"error: {e}"
        return self.rec.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )

    def save_template(self, template: str, folder: str | Path) -> Path:
        """Write ``template`` as ``folder/rec.jinja`` (atomically) after checking it renders."""
        from recllm.io import atomic_path

        some = self.rec.sid_map.item_ids[:2]
        self.messages(some, template)  # raises with the line when it does not render
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "rec.jinja"
        with atomic_path(path) as tmp:
            Path(tmp).write_text(template, encoding="utf-8")
        return path

    # -- decoding ------------------------------------------------------------------------------

    def run(self, history_text: str, settings: DecodeSettings) -> RunResult:
        """Decode one configuration (see the module docstring).

        Raises:
            ValueError: Bad history, template or settings; the message says what to change.
        """
        items = self.parse_history(history_text)
        settings.check(self.rec.max_k)
        messages = self.messages(items, settings.template)
        prompt = self.rec.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        with self.lock:
            t0 = time.perf_counter()
            if settings.think:
                result = self._think(items, settings, prompt)
            else:
                result = RunResult(self._items(messages, settings), prompt)
                result.raw = self._raw(messages, settings)
            result.seconds = time.perf_counter() - t0
        from recllm.decode.text import resolve_spans

        result.spans = resolve_spans(result.raw, self.rec.sid_map, self.rec.catalog)
        return result

    def _think(self, items: list[str], s: DecodeSettings, prompt: str) -> RunResult:
        from recllm.decode.think import ThinkOptions

        if s.mode != "beam" or not s.constrained:
            raise ValueError(
                "thinking decodes its SIDs by constrained beam search; Fix: beam mode with the "
                "SID constraint on"
            )
        options = ThinkOptions(1, 192, 0.0, 1.0, s.seed)  # one greedy rationale
        out = self.rec.recommend(items, s.k, num_beams=s.beams, think=True, think_options=options)
        raw = "\n".join(f"<think>\n{r}\n</think>" for r in out.rationales)
        return RunResult(list(out.recommendations), prompt, raw, rationales=list(out.rationales))

    def _items(self, messages: list[dict[str, str]], s: DecodeSettings) -> list[Recommendation]:
        rec = self.rec
        if s.constrained and s.mode == "beam":
            return rec.recommend_prompts([messages], s.k, num_beams=s.beams)[0]
        if rec.engine != "hf":
            from recllm.decode.text import vllm_sid_answers

            if s.mode == "beam":
                raise ValueError(
                    "beam search without the SID constraint runs on engine hf; Fix: sample "
                    "mode, the constraint on, or recllm playground --engine hf"
                )
            return vllm_sid_answers(
                rec.backend,
                rec.tokenizer,
                messages,
                rec.sid_map,
                rec.trie,
                n=s.k,
                temperature=s.temperature if s.mode == "sample" else 0.0,
                top_p=s.top_p,
                constrained=s.constrained,
                titles=rec.catalog,
            )
        from recllm.decode import DecodeOptions, generate_sids

        options = DecodeOptions(
            k=s.k,
            num_beams=s.beams if s.mode == "beam" else None,
            mode=s.mode,
            engine="generate",
            temperature=s.temperature,
            top_p=s.top_p,
            seed=s.seed,
            constrained=s.constrained,
        )
        return generate_sids(
            rec.backend,
            rec.tokenizer,
            [messages],
            rec.sid_map,
            options,
            titles=rec.catalog,
            trie=rec.trie,
        )[0]

    def _raw(self, messages: list[dict[str, str]], s: DecodeSettings) -> str:
        """The model's own continuation (greedy in beam mode, else sampled), for reading."""
        from recllm.decode.text import generate_text, vllm_generate_text

        temperature = s.temperature if s.mode == "sample" else 0.0
        if self.rec.engine != "hf":
            return vllm_generate_text(
                self.rec.backend,
                self.rec.tokenizer,
                [messages],
                max_new_tokens=RAW_TOKENS,
                temperature=temperature,
                top_p=s.top_p,
                constrained=s.constrained,
            )[0]
        return generate_text(
            self.rec.backend,
            self.rec.tokenizer,
            [messages],
            self.rec.trie,
            max_new_tokens=RAW_TOKENS,
            temperature=temperature,
            top_p=s.top_p,
            constrained=s.constrained,
            seed=s.seed,
        )[0]


# -- HTML --------------------------------------------------------------------------------------

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


def cards_html(items: Sequence[Recommendation], sid_map: Any, seconds: float | None = None) -> str:
    """Item cards: rank, title, item id, SID and score; an invalid answer gets a red card."""
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
    if seconds is not None:
        meta += f", {seconds * 1000:.0f} ms"
    return (
        f'<div class="rl-meta rl-summary">{meta}</div><div class="rl-cards">{"".join(cards)}</div>'
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


# -- the page ----------------------------------------------------------------------------------


def build_app(pg: Playground) -> Any:
    """The Gradio page over ``pg`` (see the module docstring)."""
    import gradio as gr

    from recllm.apps.chat import ChatSession

    rec = pg.rec
    can_think = rec.spec.think is not None
    template = pg.template_text()
    user_choices = [(f"user {u} ({len(h)} items)", u) for u, h in pg.users.items()]
    first_user = next(iter(pg.users), None)
    start = ", ".join(pg.users[first_user]) if first_user else ""

    import itertools

    counter = itertools.count(1)

    def note(text: str) -> str:
        """A status line, numbered so that each answer is new even when its words repeat."""
        return f"[{next(counter)}] {text}"

    with gr.Blocks(title="recllm playground") as app:
        gr.Markdown(f"## recllm playground · `{rec.model_dir}` · engine {rec.engine}")
        status = gr.Markdown("", elem_id="status")
        with gr.Tab("Recommend"):
            with gr.Row():
                user = gr.Dropdown(
                    user_choices, value=first_user, label="test user", elem_id="user"
                )
                query = gr.Textbox(label="search titles", elem_id="search")
                found = gr.Dropdown([], label="matches", elem_id="found", allow_custom_value=True)
                add = gr.Button("add to history", elem_id="add")
            history = gr.Textbox(
                start, label="history (item ids, oldest first)", lines=2, elem_id="history"
            )
            history_view = gr.Markdown(pg.history_markdown(start), elem_id="history-view")
            run = gr.Button("recommend (A and B)", variant="primary", elem_id="run")
            sides = []
            with gr.Row():
                for side in ("A", "B"):
                    with gr.Column():
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
                                folder = gr.Textbox(
                                    "prompts_edited",
                                    label="prompts folder",
                                    elem_id=f"folder-{side}",
                                )
                                save = gr.Button("save template", elem_id=f"save-{side}")
                        with gr.Row():
                            constrained = gr.Checkbox(
                                True, label="SID constraint", elem_id=f"constrained-{side}"
                            )
                            think = gr.Checkbox(
                                False,
                                label="think first",
                                interactive=can_think,
                                elem_id=f"think-{side}",
                            )
                            mode = gr.Radio(
                                ["beam", "sample"],
                                value="beam",
                                label="mode",
                                elem_id=f"mode-{side}",
                            )
                        with gr.Row():
                            beams = gr.Slider(
                                1, 50, 10, step=1, label="beams", elem_id=f"beams-{side}"
                            )
                            k = gr.Slider(
                                1,
                                50,
                                10 if side == "A" else 5,
                                step=1,
                                label="k",
                                elem_id=f"k-{side}",
                            )
                        with gr.Row():
                            temperature = gr.Slider(
                                0.05, 2.0, 1.0, label="temperature", elem_id=f"temperature-{side}"
                            )
                            top_p = gr.Slider(
                                0.05, 1.0, 1.0, label="top-p", elem_id=f"top-p-{side}"
                            )
                        results = gr.HTML(elem_id=f"results-{side}")
                        raw = gr.HTML(elem_id=f"raw-{side}")
                        sides.append(
                            (
                                tpl,
                                preview,
                                folder,
                                save,
                                constrained,
                                think,
                                mode,
                                beams,
                                k,
                                temperature,
                                top_p,
                                results,
                                raw,
                            )
                        )

        with gr.Tab("Chat"):
            mode_note = (
                "dialogue model: your words steer the picks"
                if rec.spec.dialogue is not None
                else "this model was not trained on conversations: picks follow the history"
            )
            gr.Markdown(f"Starts from the Recommend tab's history. {mode_note}.")
            chatbot = gr.Chatbot(elem_id="chatbot", height=320)
            with gr.Row():
                message = gr.Textbox(label="message", elem_id="chat-input", scale=4)
                send = gr.Button("send", elem_id="chat-send", scale=1)
            chat_picks = gr.HTML(elem_id="chat-picks")
            with gr.Row():
                pick = gr.Number(1, label="pick #", precision=0, elem_id="chat-pick")
                accept = gr.Button("accept pick", elem_id="chat-accept")
                chat_k = gr.Slider(1, 20, 5, step=1, label="k", elem_id="chat-k")
                chat_think = gr.Checkbox(
                    False, label="think", interactive=can_think, elem_id="chat-think"
                )
                reset = gr.Button("reset", elem_id="chat-reset")
            session = gr.State(None)

        # -- events ---------------------------------------------------------------------------

        def on_user(u):
            text = ", ".join(pg.users.get(u, []))
            return text, pg.history_markdown(text)

        user.change(on_user, [user], [history, history_view])
        history.change(pg.history_markdown, [history], [history_view])

        def on_search(q):
            hits = pg.search(q)
            choices = [(f"{t} ({i})", i) for i, t in hits]
            return gr.update(choices=choices, value=choices[0][1] if choices else None)

        query.change(on_search, [query], [found])

        def on_add(item, text):
            if not item:
                return text, note("error: nothing to add: search a title and pick a match first")
            items = [t for t in re.split(r"[\s,]+", text or "") if t] + [str(item)]
            try:
                pg.parse_history(", ".join(items))
            except ValueError as e:
                return text, note(f"error: {e}")
            return ", ".join(items), note(f"added {pg.rec.catalog.title(str(item))}")

        add.click(on_add, [found, history], [history, status])

        for tpl, preview, folder, save, *_ in sides:
            tpl.change(pg.preview, [history, tpl], [preview])
            history.change(pg.preview, [history, tpl], [preview])

            def on_save(text, where):
                try:
                    return note(f"saved {pg.save_template(text, where)}")
                except (ValueError, OSError) as e:
                    return note(f"error: {e}")

            save.click(on_save, [tpl, folder], [status])

        def on_run(text, *values):
            outputs, notes = [], []
            for n, side in enumerate(("A", "B")):
                tpl, constrained, think, mode, beams, k, temperature, top_p = values[
                    8 * n : 8 * n + 8
                ]
                settings = DecodeSettings(
                    constrained=bool(constrained),
                    mode=mode,
                    beams=int(beams),
                    k=int(k),
                    temperature=float(temperature),
                    top_p=float(top_p),
                    think=bool(think),
                    template=None if tpl == template else tpl,
                )
                try:
                    res = pg.run(text, settings)
                except ValueError as e:
                    notes.append(f"error ({side}): {e}")
                    outputs += [f'<div class="rl-error">{html.escape(str(e))}</div>', ""]
                    continue
                outputs.append(cards_html(res.items, pg.rec.sid_map, res.seconds))
                outputs.append(rationales_html(res.rationales) + spans_html(res.raw, res.spans))
            status_text = " · ".join(notes) if notes else "ok"
            return [note(status_text), *outputs]

        run_inputs = [history]
        run_outputs = [status]
        for (
            tpl,
            _p,
            _f,
            _s,
            constrained,
            think,
            mode,
            beams,
            k,
            temperature,
            top_p,
            results,
            raw,
        ) in sides:
            run_inputs += [tpl, constrained, think, mode, beams, k, temperature, top_p]
            run_outputs += [results, raw]
        run.click(on_run, run_inputs, run_outputs)

        def chat_send(text, sess, hist_text, k_value, think_on, messages):
            messages = list(messages or [])
            try:
                if sess is None:
                    sess = ChatSession(rec, pg.parse_history(hist_text), k=int(k_value))
                sess.set_k(int(k_value))
                sess.set_think(bool(think_on))
                with pg.lock:
                    reply = sess.ask(text or "")
            except ValueError as e:
                return sess, messages, "", note(f"error: {e}"), gr.update()
            shown = reply.reply
            for s in sorted(reply.spans, key=lambda s: -s.start):
                shown = shown[: s.start] + f"**[{s.label}]**" + shown[s.end :]
            if reply.rationales:
                shown = (
                    "".join(
                        f"<details><summary>thought</summary>{html.escape(r)}</details>"
                        for r in reply.rationales
                    )
                    + shown
                )
            messages += [
                {"role": "user", "content": text or ""},
                {"role": "assistant", "content": shown},
            ]
            return (
                sess,
                messages,
                "",
                note("ok"),
                cards_html(reply.picks, rec.sid_map, reply.seconds),
            )

        chat_io = (
            [message, session, history, chat_k, chat_think, chatbot],
            [session, chatbot, message, status, chat_picks],
        )
        send.click(chat_send, *chat_io)
        message.submit(chat_send, *chat_io)

        def chat_accept(n, sess):
            try:
                if sess is None:
                    raise ValueError("nothing to accept yet: send a message first")
                item = sess.accept(int(n or 0))
            except ValueError as e:
                return sess, note(f"error: {e}")
            return sess, note(f"added {rec.catalog.title(item)} ({item}) to the history")

        accept.click(chat_accept, [pick, session], [session, status])

        def chat_reset(hist_text):
            return None, [], "", note("chat reset")

        reset.click(chat_reset, [history], [session, chatbot, chat_picks, status])
    return app


def serve_playground(
    model_dir: str | Path,
    *,
    engine: str = "hf",
    data: str | None = None,
    host: str = "127.0.0.1",
    port: int = 7860,
    block: bool = True,
) -> Any:
    """Load the model, build the page and serve it (blocks unless ``block=False``)."""
    pg = Playground.from_pretrained(model_dir, engine=engine, data=data)
    app = build_app(pg)
    app.queue(default_concurrency_limit=8)
    app.launch(
        server_name=host,
        server_port=port,
        css=CSS,
        prevent_thread_lock=not block,
        show_error=True,
        quiet=True,
    )
    return app
