"""A conversation with a recllm model: what ``recllm chat`` and the playground's Chat tab run.

:class:`ChatSession` holds the items the user liked (the history, oldest first), the turns so
far and the settings (``k``, thinking). Each :meth:`ChatSession.ask` answers one user message
in one of three ways, depending on what the model learned:

- **dialogue** (the model's mixture held the ``dialogue`` task, :mod:`recllm.tasks.dialogue`):
  the conversation is rendered as in training (the first message lists the liked items, then
  the user's words); the top ``k`` picks are the best catalog SIDs of the reply's SID span
  (constrained beam search, ranked up to the new line that follows the span), and the reply's
  words are the model's own continuation after the top pick's SID (greedy, free text; any SID
  span it opens is constrained to the catalog).
- **think** (``/think on``, a model from ``recipes/onerec_think.py``): rationales first, then the
  picks (:meth:`Recommender.recommend_thinking`); the reasoning prompt holds the history, not
  the user's words.
- **history** (any other model, e.g. the quickstart's): the picks for the history alone; the
  user's words cannot steer a model that never saw a conversation, and the reply says so.

Accepting a pick (:meth:`ChatSession.accept`) adds it to the history and starts the talk anew
from the grown history, as a training conversation opens. Picks never repeat an item of the
history: the history's items are excluded inside the SID constraint
(:class:`recllm.decode.filters.ItemFilter`), so the beam search ranks exactly ``k`` unseen items.
The beam width is fixed (``num_beams``, 10 by default; ``k`` when larger), not a function of
``k``: for one history the top 3 is the start of the top 5. (Thinking answers cannot filter
inside the constraint yet: they rank ``num_beams`` items, at least ``2k``, and drop seen ones.)

**Slates** (:meth:`ChatSession.slate`, ``/slate N`` in ``recllm chat``): ``N`` distinct picks
decoded as ONE answer of ``N`` SIDs (:meth:`Recommender.recommend_slate`, beam search over
slates by joint log-prob), each pick chosen knowing the ones before it; the history's items and
the slate's own are excluded inside the constraint. A slate is decoded from the history (the
recommendation prompt), without thinking and without the conversation's words; it joins the
replies, so ``/accept`` takes its picks.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from recllm.apps.recommender import Recommender
    from recllm.decode.generate import Recommendation
    from recllm.decode.text import SpanView

__all__ = ["ChatReply", "ChatSession"]

#: Longest reply text after the pick's SID span, in tokens.
REPLY_TOKENS = 64


@dataclass
class ChatReply:
    """One answer.

    Attributes:
        user: What the user said.
        mode: ``"dialogue"``, ``"think"``, ``"history"`` or ``"slate"`` (see the module
            docstring).
        picks: The top ``k`` items, best first (a slate: its items in answer order, each
            scored by its part of the joint log-prob).
        reply: The assistant's text: the top pick's SID span, a new line and the model's words
            (dialogue); the rationale (think); a note (history).
        spans: The SID spans of ``reply``, resolved to items.
        rationales: The model's rationales (think).
        seconds: Wall time of the answer.
        score: A slate's joint log-prob (None for a ranking).
    """

    user: str
    mode: str
    picks: list[Recommendation]
    reply: str
    spans: list[SpanView] = field(default_factory=list)
    rationales: list[str] = field(default_factory=list)
    seconds: float = 0.0
    score: float | None = None


class ChatSession:
    """One user's conversation (see the module docstring).

    Args:
        recommender: A loaded model (either engine).
        history: Item ids the user liked, oldest first.
        k: Picks per answer.
        think: Answer by thinking first (a model trained to think).
        reply_tokens: Longest reply text after the pick's SID.
        num_beams: Beam width of every answer (``k`` when ``k`` is larger), whatever ``k``.
    """

    def __init__(
        self,
        recommender: Recommender,
        history: Sequence[str] = (),
        *,
        k: int = 5,
        think: bool = False,
        reply_tokens: int = REPLY_TOKENS,
        num_beams: int = 10,
    ) -> None:
        if isinstance(num_beams, bool) or not isinstance(num_beams, int) or num_beams < 1:
            raise ValueError(f"num_beams must be an integer >= 1, got {num_beams!r}; Fix: 10")
        self.rec = recommender
        self.num_beams = num_beams
        self.history: list[str] = []
        self.messages: list[dict[str, str]] = []
        self.replies: list[ChatReply] = []
        self.reply_tokens = reply_tokens
        self._k = 1
        self._think = False
        self.set_k(k)
        self.set_think(think)
        for item in history:
            self.add(item)

    # -- settings ------------------------------------------------------------------------------

    @property
    def k(self) -> int:
        return self._k

    def set_k(self, k: int) -> None:
        """Picks per answer, 1..the recommender's ``max_k``."""
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.rec.max_k:
            raise ValueError(
                f"k must be an integer from 1 to {self.rec.max_k}, got {k!r}; Fix: ask for 1 to "
                f"{self.rec.max_k} picks"
            )
        self._k = k

    @property
    def think(self) -> bool:
        return self._think

    def set_think(self, on: bool) -> None:
        """Think before answering; only for a model trained to think."""
        if on and self.rec.spec.think is None:
            raise ValueError(
                f"{self.rec.model_dir} was not trained to think; Fix: train it with "
                "recipes/onerec_think.py, or keep thinking off"
            )
        self._think = bool(on)

    @property
    def dialogue(self) -> bool:
        """Whether the model learned conversations (the ``dialogue`` task)."""
        return self.rec.spec.style == "chat" and self.rec.spec.dialogue is not None

    # -- history -------------------------------------------------------------------------------

    def add(self, item: str) -> str:
        """Add a catalog item to the history (by id); returns its title."""
        self.rec.check_request([item], 1)
        self.history.append(str(item))
        self.messages = []  # a new talk opens from the grown history
        return self.rec.catalog.title(str(item))

    def accept(self, n: int) -> str:
        """Pick ``n`` (1-based) of the last answer joins the history; returns its item id."""
        if not self.replies:
            raise ValueError("nothing to accept yet; Fix: ask for a recommendation first")
        picks = self.replies[-1].picks
        if not 1 <= n <= len(picks):
            raise ValueError(f"pick {n} does not exist; Fix: choose 1 to {len(picks)}")
        item = picks[n - 1].item_id
        self.add(item)
        return item

    def reset(self, history: Sequence[str] = ()) -> None:
        """Forget the conversation and the history (then start from ``history``)."""
        self.history, self.messages, self.replies = [], [], []
        for item in history:
            self.add(item)

    def search(self, query: str, limit: int = 10) -> list[tuple[str, str]]:
        """Catalog items whose title contains every word of ``query`` (case ignored):
        ``(item id, title)``, shortest titles first."""
        words = query.lower().split()
        if not words:
            return []
        hits = [
            (i, self.rec.catalog.title(i))
            for i in self.rec.sid_map.item_ids
            if i in self.rec.catalog and all(w in self.rec.catalog.title(i).lower() for w in words)
        ]
        return sorted(hits, key=lambda h: (len(h[1]), h[1]))[:limit]

    # -- answering -----------------------------------------------------------------------------

    def ask(self, text: str) -> ChatReply:
        """Answer one user message (see the module docstring).

        Raises:
            ValueError: The history is empty (the model recommends from liked items).
        """
        self._need_history()
        t0 = time.perf_counter()
        if self.think:
            reply = self._ask_thinking(text)
        elif self.dialogue:
            reply = self._ask_dialogue(text)
        else:
            picks = self.rec.recommend(
                self.history, self.k, num_beams=self._beams(), exclude_history=True
            )
            note = (
                "(This model was not trained on conversations, so it recommends from your "
                "history alone; train with mixture.dialogue > 0 to steer it with words.)"
            )
            reply = ChatReply(text, "history", picks, note)
        reply.seconds = time.perf_counter() - t0
        self.replies.append(reply)
        return reply

    def slate(self, n: int | None = None, *, mode: str = "beam") -> ChatReply:
        """``n`` distinct picks (default: ``k``) decoded as one slate (see the module
        docstring), none of them in the history.

        Args:
            n: Items in the slate, 1..the recommender's ``max_k``.
            mode: ``"beam"``, ``"greedy"`` or ``"sample"`` (transformers engine only).

        Raises:
            ValueError: The history is empty, ``n`` is out of range, or the history leaves
                fewer than ``n`` unseen items.
        """
        self._need_history()
        n = self.k if n is None else n
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= self.rec.max_k:
            raise ValueError(
                f"a slate holds 1 to {self.rec.max_k} items, got {n!r}; Fix: e.g. /slate 5"
            )
        unseen = len(self.rec.sid_map) - len(set(self.history))
        if n > unseen:
            raise ValueError(
                f"a slate of {n} unseen items, but the history leaves {unseen}; Fix: /slate "
                f"{unseen} or fewer"
            )
        t0 = time.perf_counter()
        found = self.rec.recommend_slate(
            self.history, n, mode=mode, num_beams=max(self.num_beams, n), exclude_history=True
        )
        note = f"a slate of {n} distinct items in one answer (joint log-prob {found.score:.3f})"
        reply = ChatReply(f"/slate {n}", "slate", list(found.items), note, score=found.score)
        reply.seconds = time.perf_counter() - t0
        self.replies.append(reply)
        return reply

    def _need_history(self) -> None:
        if not self.history:
            raise ValueError(
                "the history is empty; Fix: add an item you liked first (its id, or search "
                "the catalog by title)"
            )

    def _ask_thinking(self, text: str) -> ChatReply:
        from recllm.decode.think import ThinkOptions

        width = min(max(self._beams(), 2 * self.k), self.rec.max_k)
        result = self.rec.recommend(
            self.history,
            width,
            think=True,
            think_options=ThinkOptions(max_think_tokens=192),
        )
        return ChatReply(
            text,
            "think",
            self._unseen(result.recommendations),
            "\n".join(result.rationales),
            rationales=list(result.rationales),
        )

    def _ask_dialogue(self, text: str) -> ChatReply:
        from recllm.decode.text import generate_text, resolve_spans, vllm_generate_text
        from recllm.tasks.dialogue import DialogueTurn, reply_stop_token, user_message
        from recllm.tasks.prompting import task_builder
        from recllm.vocab import SID_FORMAT

        rec = self.rec
        builder = task_builder(rec.spec, rec.sid_map, rec.catalog)
        kind = "more" if self.messages else "open"
        cut = rec.spec.max_history
        history = self.history[-cut:] if cut else self.history
        request = DialogueTurn(kind, "", text=text.strip() or None)
        prompt = [*self.messages, user_message(builder, history, request)]
        picks = rec.recommend_prompts(
            [prompt],
            self.k,
            num_beams=self._beams(),
            stop_token_id=reply_stop_token(rec.tokenizer),
            exclude=[self.history],  # inside the constraint: exactly k unseen picks
        )[0]
        # the reply as training wrote it: the pick's SID span, a new line, its catalog title;
        # the model's words (the reason) follow. Left to itself after the span the model wrote
        # another item's title now and then ("<sid of Santa Clause>\nDirty Dancing: ...").
        top = picks[0]
        head = (
            f"{SID_FORMAT.render(rec.sid_map.code(top.item_id))}\n{rec.catalog.title(top.item_id)}"
        )
        if rec.engine == "vllm":
            words = vllm_generate_text(
                rec.backend,
                rec.tokenizer,
                [prompt],
                prefill=[head],
                max_new_tokens=self.reply_tokens,
            )[0]
        else:
            words = generate_text(
                rec.backend,
                rec.tokenizer,
                [prompt],
                rec.trie,
                prefill=[head],
                max_new_tokens=self.reply_tokens,
            )[0]
        reply = head + words.rstrip()
        self.messages = [*prompt, {"role": "assistant", "content": reply}]
        spans = resolve_spans(reply, rec.sid_map, rec.catalog)
        return ChatReply(text, "dialogue", picks, reply, spans)

    def _beams(self) -> int:
        """The beam width: fixed, so a smaller ``k`` gives the start of a larger one's list."""
        return max(self.num_beams, self.k)

    def _unseen(self, ranked: list[Recommendation]) -> list[Recommendation]:
        seen = set(self.history)
        return [r for r in ranked if r.item_id not in seen][: self.k]

    def transcript(self) -> list[dict[str, Any]]:
        """The conversation so far as chat messages (the prompt of the next turn)."""
        return list(self.messages)
