"""``recllm playground``: a web page to poke a recllm model (Gradio, on 127.0.0.1).

The page has two tabs over one model directory:

- **Recommend**: pick a test user of the model's recorded split, or build a history by
  searching titles; edit the recommendation prompt template (Jinja) with a live preview of the
  rendered prompt (chat template applied, SID tokens visible); decode with two configurations
  side by side (A/B: SID constraint on/off, beam or sampling, beams, k, temperature, top-p,
  thinking where the model learned it, "hide items in the history": the history's items are
  excluded inside the SID constraint, :class:`recllm.decode.filters.ItemFilter`; off by default,
  as in the P5 protocol). The beam width is its own setting, so for one history a smaller k
  shows the start of a larger k's list. Results are item cards (rank, title, SID, score), the
  raw generation with every SID span marked and named (exact item, else longest-prefix match,
  labelled), rationales in collapsible blocks, and the latency. The "output" select switches a
  side from the next-item top k to a **slate**: k distinct items decoded as ONE answer of k
  SIDs (:meth:`Recommender.recommend_slates` on the side's prompt; "slate decoding": beam over
  slates by joint log-prob, greedy, or sample; the beams slider is the slate beam width); its
  cards are the items in answer order (position, per-item part of the score) under the slate's
  joint log-prob, and its raw generation is the slate answer with each SID span named. An
  edited template can be saved to a prompts folder, always inside the folder the playground
  was started in (:attr:`Playground.prompts_root`: absolute paths and ``..`` are refused).
- **Chat**: a conversation (:class:`recllm.apps.chat.ChatSession`, what ``recllm chat`` runs):
  item cards per answer, accepting a pick adds it to the history.

Why Gradio: it is the ecosystem's tool for ML demos, gives a usable page for the cost of the
layout, queues requests, and its pages are plain HTML a browser test can drive. The logic lives
in :class:`Playground` (no Gradio in it), so it is tested directly and the page only wires it.
Bad input (empty history, unknown items, a template that fails to render, k > beams, values
out of range sent to the page's API) shows a one-line message in the page's status line and
nothing else changes. The page itself (layout, events, HTML) is :mod:`recllm.apps.playground_page`.
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

from recllm.apps.playground_page import (
    CSS,
    MAX_BEAMS,
    build_app,
    cards_html,
    real_number,
    spans_html,
    whole_number,
)

if TYPE_CHECKING:
    from recllm.apps.recommender import Recommender
    from recllm.decode.generate import Recommendation
    from recllm.decode.text import SpanView

__all__ = ["DecodeSettings", "Playground", "RunResult", "build_app", "cards_html", "spans_html"]

logger = logging.getLogger(__name__)

#: Tokens of the raw generation shown under the cards.
RAW_TOKENS = 48
_TEMPLATE_FIX = "correct the template (reload the page for the model's own)"
#: What a side of the Recommend tab outputs: the next-item ranking, or one slate.
OUTPUTS = ("top k", "slate")


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
    exclude_history: bool = False  # hide the history's items (inside the SID constraint)
    output: str = "top k"  # "top k" (next-item ranking) | "slate" (k distinct items, one answer)
    slate_mode: str = "beam"  # how a slate is decoded: "beam" | "greedy" | "sample"

    def check(self, max_k: int) -> None:
        """Raise ``ValueError`` with the fix for settings that cannot run."""
        from recllm.decode.slate import SLATE_MODES

        if self.output not in OUTPUTS:
            raise ValueError(
                f"output must be one of {OUTPUTS}, got {self.output!r:.40}; Fix: pick top k "
                "(the next-item ranking) or slate (k distinct items in one answer)"
            )
        if self.output == "slate":
            if self.slate_mode not in SLATE_MODES:
                raise ValueError(
                    f"slate decoding must be one of {SLATE_MODES}, got {self.slate_mode!r:.40}; "
                    "Fix: pick beam, greedy or sample"
                )
            if not self.constrained or self.think:
                raise ValueError(
                    "a slate is decoded inside the SID constraint, without thinking; Fix: turn "
                    "the SID constraint on and thinking off, or output the top k"
                )
            if not 1 <= self.k <= max_k:
                raise ValueError(f"k={self.k} is out of range; Fix: 1 <= k <= {max_k}")
            if not 1 <= self.beams <= MAX_BEAMS:
                raise ValueError(
                    f"beams={self.beams} is out of range; Fix: 1 <= beams <= {MAX_BEAMS}"
                )
            if self.slate_mode == "sample" and not self.temperature > 0:
                raise ValueError(
                    f"sampling needs temperature > 0, got {self.temperature}; Fix: raise the "
                    "temperature, or decode the slate by beam"
                )
            return
        if self.mode not in ("beam", "sample"):
            raise ValueError(
                f"mode must be beam or sample, got {self.mode!r:.40}; Fix: pick beam (the best "
                "k items) or sample (k draws)"
            )
        if not 1 <= self.k <= max_k:
            raise ValueError(f"k={self.k} is out of range; Fix: 1 <= k <= {max_k}")
        if self.mode == "beam" and not 1 <= self.beams <= MAX_BEAMS:
            raise ValueError(f"beams={self.beams} is out of range; Fix: 1 <= beams <= {MAX_BEAMS}")
        if self.mode == "beam" and self.k > self.beams:
            raise ValueError(
                f"k ({self.k}) > beams ({self.beams}): a beam search returns at most one item "
                "per beam; Fix: raise beams or lower k"
            )
        if self.exclude_history and (not self.constrained or self.think):
            raise ValueError(
                "hiding the history's items works inside the SID constraint, without thinking; "
                "Fix: turn the SID constraint on and thinking off, or show the history's items"
            )
        if self.mode == "sample" and not (self.temperature > 0 and 0 < self.top_p <= 1):
            raise ValueError(
                f"sampling needs temperature > 0 and 0 < top-p <= 1, got temperature "
                f"{self.temperature}, top-p {self.top_p}; Fix: raise the temperature, or set "
                "top-p in (0, 1]; beam mode for a deterministic answer"
            )


@dataclass
class RunResult:
    """What one configuration returned."""

    items: list[Recommendation]
    prompt: str
    raw: str = ""
    spans: list[SpanView] = field(default_factory=list)
    rationales: list[str] = field(default_factory=list)
    seconds: float = 0.0
    score: float | None = None  # a slate's joint log-prob (None for a ranking)

    @property
    def invalid(self) -> int:
        return sum(r.item_id is None for r in self.items)


class Playground:
    """The model-side operations of the page (no Gradio here)."""

    def __init__(
        self,
        recommender: Recommender,
        users: dict[str, list[str]],
        *,
        prompts_root: str | Path | None = None,
    ) -> None:
        """Args:
        recommender: The model.
        users: Test users' histories offered on the page.
        prompts_root: The only folder "save template" writes in (default: the working
            folder at start).
        """
        self.rec = recommender
        self.users = users
        self.prompts_root = Path(prompts_root or Path.cwd()).resolve()
        self.lock = threading.Lock()  # one decode at a time on the shared model

    @classmethod
    def from_pretrained(
        cls,
        model_dir: str | Path,
        *,
        engine: str = "hf",
        data: str | None = None,
        prompts_root: str | Path | None = None,
        allow_other_data: bool = False,
    ) -> Playground:
        from recllm.apps.recommender import Recommender
        from recllm.eval.run import eval_examples

        rec = Recommender.from_pretrained(
            model_dir, engine=engine, data=data, allow_other_data=allow_other_data
        )
        users: dict[str, list[str]] = {}
        if rec.spec.data or data:
            _, _, examples = eval_examples(
                model_dir, data, "test", 0, allow_other_data=allow_other_data
            )
            users = {ex.user_id: list(ex.history) for ex in examples}
        return cls(rec, users, prompts_root=prompts_root)

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
            raise ValueError(
                "this model is a SID-sequence decoder: it has no prompt template; Fix: use the "
                "page with a chat-style model (recipes/plum_sft.py), or recllm eval for this one"
            )
        builder = task_builder(self.rec.spec, self.rec.sid_map, self.rec.catalog)
        if template is not None:
            builder.renderer = TaskRenderer(builder.config.prompts_dir, {"rec": template})
        cut = self.rec.spec.max_history
        history = tuple(items[-cut:] if cut else items)
        try:
            row = next(builder.rec([Example("playground", history, history[-1])]))
        except jinja2.TemplateSyntaxError as e:
            raise ValueError(
                f"template line {e.lineno}: {e.message}; Fix: {_TEMPLATE_FIX}"
            ) from None
        except jinja2.TemplateError as e:
            raise ValueError(f"template: {e}; Fix: {_TEMPLATE_FIX}") from None
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

    def prompts_folder(self, folder: str | Path) -> Path:
        """``folder`` (relative) inside :attr:`prompts_root`; ``ValueError`` with the fix for an
        absolute path or one that leads out of it (``..``, a symbolic link)."""
        text = str(folder).strip()
        fix = f"name a folder inside {self.prompts_root}, e.g. prompts_edited or mine/v2"
        if not text or text == ".":
            raise ValueError(f"prompts folder: no folder name; Fix: {fix}")
        if Path(text).is_absolute() or text.startswith("~"):
            raise ValueError(f"prompts folder {text!r:.80}: an absolute path; Fix: {fix}")
        path = (self.prompts_root / text).resolve()
        if not path.is_relative_to(self.prompts_root) or path == self.prompts_root:
            raise ValueError(f"prompts folder {text!r:.80}: leaves the prompts folder; Fix: {fix}")
        return path

    def save_template(self, template: str, folder: str | Path) -> Path:
        """Write ``template`` as ``folder/rec.jinja`` (atomically) after checking it renders;
        ``folder`` is relative to :attr:`prompts_root` and stays inside it."""
        from recllm.io import atomic_path

        folder = self.prompts_folder(folder)
        some = self.rec.sid_map.item_ids[:2]
        self.messages(some, template)  # raises with the line when it does not render
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "rec.jinja"
        with atomic_path(path) as tmp:
            Path(tmp).write_text(template, encoding="utf-8")
        return path

    # -- decoding ------------------------------------------------------------------------------

    def settings(
        self, values: Sequence[Any], default_template: str | None = None
    ) -> DecodeSettings:
        """One side's settings from the page's raw values (template, constrained, think, mode,
        beams, k, temperature, top-p, and optionally hide-history, output and slate decoding),
        as sent by the browser or an API caller.

        Raises:
            ValueError: A value of the wrong type or out of range; the message has the fix.
        """
        tpl, constrained, think, mode, beams, k, temperature, top_p = values[:8]
        hide = bool(values[8]) if len(values) > 8 else False
        output = str(values[9]) if len(values) > 9 else "top k"
        slate_mode = str(values[10]) if len(values) > 10 else "beam"
        return DecodeSettings(
            constrained=bool(constrained),
            mode=str(mode),
            beams=whole_number(beams, "beams", 1, MAX_BEAMS),
            k=whole_number(k, "k", 1, self.rec.max_k),
            temperature=real_number(temperature, "temperature"),
            top_p=real_number(top_p, "top-p"),
            think=bool(think),
            template=None if tpl == default_template else tpl,
            exclude_history=hide,
            output=output,
            slate_mode=slate_mode,
        )

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
            elif settings.output == "slate":
                result = self._slate(messages, settings, items, prompt)
            else:
                result = RunResult(self._items(messages, settings, items), prompt)
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

    def _slate(
        self, messages: list[dict[str, str]], s: DecodeSettings, history: list[str], prompt: str
    ) -> RunResult:
        """One slate of ``s.k`` distinct items decoded from the side's prompt; its raw
        generation is the slate answer (the SIDs back to back)."""
        from recllm.vocab import SID_FORMAT

        found = self.rec.recommend_slates(
            [history],
            s.k,
            mode=s.slate_mode,
            num_beams=s.beams,
            exclude_history=s.exclude_history,
            temperature=s.temperature,
            seed=s.seed,
            prompts=[messages],
        )[0][0]
        raw = "".join(SID_FORMAT.render(self.rec.sid_map.code(r.item_id)) for r in found.items)
        return RunResult(list(found.items), prompt, raw, score=found.score)

    def _items(
        self, messages: list[dict[str, str]], s: DecodeSettings, history: list[str]
    ) -> list[Recommendation]:
        rec = self.rec
        exclude = [history] if s.exclude_history else None
        if s.constrained and s.mode == "beam":
            return rec.recommend_prompts([messages], s.k, num_beams=s.beams, exclude=exclude)[0]
        if rec.engine != "hf":
            from recllm.decode.text import vllm_sid_answers

            if exclude is not None:
                raise ValueError(
                    "on engine vllm the history's items are hidden in beam mode; Fix: beam "
                    "mode, or recllm playground --engine hf"
                )

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
            item_filter=rec.item_filter(exclude, None),
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


def serve_playground(
    model_dir: str | Path,
    *,
    engine: str = "hf",
    data: str | None = None,
    host: str = "127.0.0.1",
    port: int = 7860,
    block: bool = True,
    allow_other_data: bool = False,
) -> Any:
    """Load the model, build the page and serve it (blocks unless ``block=False``;
    ``allow_other_data``: serve over ``data`` although the model records other data)."""
    pg = Playground.from_pretrained(
        model_dir, engine=engine, data=data, allow_other_data=allow_other_data
    )
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
