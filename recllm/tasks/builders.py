"""Turn a split, its catalog and a SID map into conversational training and evaluation data.

Every example is a TRL conversational prompt/completion pair::

    {"prompt": [{"role": "user", "content": ...}],
     "completion": [{"role": "assistant", "content": ...}], "task": "rec"}

so SFT computes the loss on the completion only, with any chat template. Texts come from the
Jinja templates shipped in ``recllm/prompts/`` (``{% block user %}`` and
``{% block assistant %}`` of ``<task>.jinja``). Training texts use ``Split.train`` only;
valid/test examples become recommendation prompts with their target item for evaluation.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2

from recllm.data.splits import Example, Split
from recllm.data.types import Catalog
from recllm.tasks.config import HISTORY_LOSS_TASKS, TASKS, TaskConfig

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ItemView:
    """What a template may show of an item."""

    id: str
    sid: str
    title: str
    text: str
    codes: str = ""  # the SID's code tokens without its markers (compact histories)


class TaskRenderer:
    """Renders the user and assistant turns of a task from ``<prompts_dir>/<task>.jinja``.

    Templates fail loudly on undefined variables (``StrictUndefined``) instead of rendering
    empty strings into training data. ``overrides`` maps a task to template text used instead
    of its file (an edited template, not yet saved).
    """

    def __init__(self, prompts_dir: str | Path, overrides: dict[str, str] | None = None) -> None:
        self.prompts_dir = Path(prompts_dir)
        loader: jinja2.BaseLoader = jinja2.FileSystemLoader(str(self.prompts_dir))
        if overrides:  # task -> template text used instead of the file (the playground's editor)
            texts = {f"{task}.jinja": text for task, text in overrides.items()}
            loader = jinja2.ChoiceLoader([jinja2.DictLoader(texts), loader])
        self.env = jinja2.Environment(
            loader=loader,
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=False,
            autoescape=False,  # plain text for an LLM, not HTML
        )
        self._cache: dict[str, jinja2.Template] = {}

    def template(self, task: str) -> jinja2.Template:
        if task not in self._cache:
            try:
                tpl = self.env.get_template(f"{task}.jinja")
            except jinja2.TemplateNotFound:
                raise FileNotFoundError(
                    f"{self.prompts_dir / (task + '.jinja')}: no template for task {task!r}; "
                    "Fix: add it or point --prompts_dir at a folder that has it"
                ) from None
            missing = {"user", "assistant"} - set(tpl.blocks)
            if missing:
                raise ValueError(
                    f"{self.prompts_dir / (task + '.jinja')}: missing block(s) {sorted(missing)}; "
                    "Fix: define {% block user %} and {% block assistant %}"
                )
            self._cache[task] = tpl
        return self._cache[task]

    def render(self, task: str, **variables: Any) -> tuple[str, str]:
        """``(user text, assistant text)`` of one example."""
        tpl = self.template(task)
        ctx = tpl.new_context(variables)
        user = "".join(tpl.blocks["user"](ctx)).strip()
        assistant = "".join(tpl.blocks["assistant"](ctx)).strip()
        return user, assistant

    def example(self, task: str, **variables: Any) -> dict[str, Any]:
        """A conversational prompt/completion row."""
        user, assistant = self.render(task, **variables)
        return {
            "prompt": [{"role": "user", "content": user}],
            "completion": [{"role": "assistant", "content": assistant}],
            "task": task,
        }


def _sid_codes(sid: str) -> str:
    """A rendered SID's code tokens alone: ``<a_12><b_3>`` for ``<|sid_begin|><a_12><b_3><|sid_end|>``."""
    from recllm.vocab import SID_FORMAT

    return sid.removeprefix(SID_FORMAT.begin).removesuffix(SID_FORMAT.end)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


class TaskBuilder:
    """Builds every task's examples for one catalog and SID assignment.

    Args:
        catalog: Items and their texts.
        sid_text: Item id -> its SID rendered as text (``recllm.vocab`` renders it).
        config: Templates, mixture and limits.
    """

    def __init__(
        self, catalog: Catalog, sid_text: Callable[[str], str], config: TaskConfig | None = None
    ) -> None:
        self.catalog = catalog
        self.config = config or TaskConfig()
        self.renderer = TaskRenderer(self.config.prompts_dir)
        self._sid_text = sid_text
        self._views: dict[str, ItemView] = {}
        #: Rationale rows (``user_id, history, target, rationale``) for ``reason_rec``
        #: (:mod:`recllm.tasks.reasoning`); None: that task has no examples to build.
        self.rationales: Iterable[dict[str, Any]] | None = None
        #: Conversations for ``dialogue`` (:mod:`recllm.tasks.dialogue`), e.g. a teacher's
        #: rewrite; None: built from the split's training sequences and the catalog metadata.
        self.dialogues: Iterable[Any] | None = None
        self._facets: list[Any] | None = None

    def facets(self) -> list[Any]:
        """The catalog's facets (:func:`recllm.tasks.reasoning.catalog_facets`), found once."""
        if self._facets is None:
            from dataclasses import replace

            from recllm.tasks.reasoning import catalog_facets

            names = self.config.facet_labels
            self._facets = [
                replace(f, label=names.get(f.name, f.label)) for f in catalog_facets(self.catalog)
            ]
        return self._facets

    def item(self, item_id: str) -> ItemView:
        view = self._views.get(item_id)
        if view is None:
            cfg = self.config
            view = ItemView(
                id=item_id,
                sid=(sid := self._sid_text(item_id)),
                codes=_sid_codes(sid),
                title=_cut(self.catalog.title(item_id), cfg.max_title_chars),
                text=_cut(
                    self.catalog.text(item_id) or self.catalog.title(item_id), cfg.max_text_chars
                ),
            )
            self._views[item_id] = view
        return view

    @property
    def history_style(self) -> dict[str, bool]:
        """How the recommendation templates write a history (their ``with_titles`` and
        ``history_markers`` variables), from the config."""
        return {
            "with_titles": self.config.rec_history_titles,
            "history_markers": self.config.rec_history_markers,
        }

    # ------------------------------------------------------------------ per task

    def rec(self, examples: Iterable[Example]) -> Iterator[dict[str, Any]]:
        """History -> next item's SID."""
        for ex in examples:
            row = self.renderer.example(
                "rec",
                history=[self.item(i) for i in ex.history],
                target=self.item(ex.target),
                **self.history_style,
            )
            row["user_id"], row["target"] = ex.user_id, ex.target
            yield row

    def reason_rec(self, max_history: int | None) -> Iterator[dict[str, Any]]:
        """History -> ``<think>rationale</think>`` -> the next item's SID (OneRec-Think), one row
        per rationale (:attr:`rationales`); histories cut to the last ``max_history`` items.

        The prompt lists the history exactly as ``rec`` does and asks to think first, so one
        model answers both prompts (:func:`recllm.tasks.prompting.build_prompts` with
        ``think=True``).
        """
        if self.rationales is None:
            raise ValueError(
                "the mixture asks for reason_rec rows but no rationales were given; Fix: pass "
                "--rationales DIR (recllm reason generate) or set mixture.reason_rec to 0"
            )
        for r in self.rationales:
            history = list(r["history"])[-max_history:] if max_history else list(r["history"])
            row = self.renderer.example(
                "reason_rec",
                history=[self.item(i) for i in history],
                target=self.item(r["target"]),
                rationale=r["rationale"],
                **self.history_style,
            )
            row["user_id"], row["target"] = r["user_id"], r["target"]
            yield row

    def dialogue(self, split: Split) -> Iterator[dict[str, Any]]:
        """Conversations (:mod:`recllm.tasks.dialogue`): one row per assistant turn, the talk so
        far as the prompt. From :attr:`dialogues` when set, else built from the training
        sequences and the catalog's metadata."""
        from recllm.tasks.dialogue import build_conversations, dialogue_rows

        cfg = self.config
        conversations = self.dialogues
        if conversations is None:
            conversations = build_conversations(
                split,
                self.catalog,
                per_user=cfg.dialogue_per_user,
                max_turns=cfg.dialogue_turns,
                max_history=split.max_history,
                steer_share=cfg.dialogue_steer,
                seed=cfg.task_seed,
                facets=self.facets(),
            )
        yield from dialogue_rows(self, conversations)

    def rec_sequence(self, split: Split) -> Iterator[dict[str, Any]]:
        """Each training history cut into windows of ``max_history + 1`` items (the newest
        window first, complete), rendered with the ``rec`` template: the window's last item is
        the target and the row is marked ``history_loss``, so training also supervises every
        history item's SID after the first (SASRec-style: one row teaches about
        ``max_history`` next-item predictions; :func:`recllm.train.sft.supervise_history_sids`).

        The prompt text is exactly a recommendation prompt's, so what these rows teach is what
        evaluation asks.
        """
        w = (split.max_history or 20) + 1
        for user, seq in split.train.sequences.items():
            for end in range(len(seq), 1, -w):
                window = seq[max(0, end - w) : end]
                row = self.renderer.example(
                    "rec",
                    history=[self.item(i) for i in window[:-1]],
                    target=self.item(window[-1]),
                    **self.history_style,
                )
                row["task"] = "rec_sequence"
                row["user_id"], row["target"] = user, window[-1]
                yield row

    def rec_session(self, split: Split) -> Iterator[dict[str, Any]]:
        """History -> the next ``session_length`` (N) items' SIDs, back to back in one answer
        (issue 32's session task; :func:`recllm.decode.slate.slate_search` decodes this shape).

        One row per position of every training sequence that has N items after it: the
        history is everything before the position (cut to ``max_history``), the answer the N
        items from it. Only ``split.train`` is read, so no validation or test item of a user
        is ever in that user's rows. ``target`` is the session's first item, ``session`` all
        of them.
        """
        n = self.config.session_length
        for user, seq in split.train.sequences.items():
            for t in range(1, len(seq) - n + 1):
                history = (
                    seq[:t] if split.max_history is None else seq[max(0, t - split.max_history) : t]
                )
                session = seq[t : t + n]
                row = self.renderer.example(
                    "rec_session",
                    history=[self.item(i) for i in history],
                    session=[self.item(i) for i in session],
                    n=n,
                    **self.history_style,
                )
                row["user_id"], row["target"] = user, session[0]
                yield row

    def session_prompt(self, history: Sequence[str]) -> list[dict[str, str]]:
        """The ``rec_session`` prompt (user turn) for ``history``: what a model trained on the
        session task is asked to continue with N SIDs."""
        user, _ = self.renderer.render(
            "rec_session",
            history=[self.item(i) for i in history],
            session=[],
            n=self.config.session_length,
            **self.history_style,
        )
        return [{"role": "user", "content": user}]

    def behaviour(self, split: Split) -> Iterator[dict[str, Any]]:
        """Training histories cut into windows of ``behaviour_max_items``; each window's first
        half is the prompt, the rest its continuation (SIDs interleaved with titles)."""
        w = self.config.behaviour_max_items
        for user, seq in split.train.sequences.items():
            for start in range(0, max(1, len(seq) - 1), w):
                window = seq[start : start + w]
                if len(window) < 2:
                    continue
                half = len(window) // 2
                row = self.renderer.example(
                    "behaviour",
                    head=[self.item(i) for i in window[:half]],
                    tail=[self.item(i) for i in window[half:]],
                )
                row["user_id"], row["target"] = user, window[half]
                yield row

    def catalog_task(self, task: str) -> Iterator[dict[str, Any]]:
        """One example per catalog item for the catalog alignment tasks."""
        for item_id in self.catalog.ids:
            row = self.renderer.example(task, item=self.item(item_id))
            row["user_id"], row["target"] = "", item_id
            yield row

    # ------------------------------------------------------------------ datasets

    def natural(self, task: str, split: Split) -> list[dict[str, Any]]:
        """All examples of ``task`` (training data only)."""
        if task == "rec":
            return list(self.rec(split.train_examples()))
        if task == "rec_sequence":
            return list(self.rec_sequence(split))
        if task == "rec_session":
            return list(self.rec_session(split))
        if task == "behaviour":
            return list(self.behaviour(split))
        if task == "reason_rec":
            return list(self.reason_rec(split.max_history))
        if task == "dialogue":
            return list(self.dialogue(split))
        return list(self.catalog_task(task))

    def train_rows(self, split: Split) -> list[dict[str, Any]]:
        """The training mixture, shuffled with the configured seed."""
        rng = random.Random(self.config.task_seed)
        rows: list[dict[str, Any]] = []
        counts: dict[str, int] = {}
        for task in TASKS:
            weight = self.config.mixture.get(task, 0.0)
            if weight <= 0:
                continue
            base = self.natural(task, split)
            whole, frac = int(weight), weight - int(weight)
            chosen = base * whole + rng.sample(base, round(frac * len(base)))
            counts[task] = len(chosen)
            rows.extend(chosen)
        rng.shuffle(rows)
        for row in rows:  # one column for every row: datasets needs a uniform schema
            row["history_loss"] = row["task"] in HISTORY_LOSS_TASKS
        logger.info("training mixture: %s (%d examples)", counts, len(rows))
        return rows

    def build(self, split: Split) -> datasets.DatasetDict:
        """``train`` (the mixture) and ``valid`` / ``test`` (recommendation prompts with their
        ``target`` item id)."""
        import datasets

        return datasets.DatasetDict(
            {
                "train": datasets.Dataset.from_list(self.train_rows(split)),
                "valid": datasets.Dataset.from_list(list(self.rec(split.valid))),
                "test": datasets.Dataset.from_list(list(self.rec(split.test))),
            }
        )
