"""Dialogue-style recommendation: conversations built from training histories and item metadata.

A conversation opens with the items a user liked (their training history, as SIDs and titles)
and a request; the assistant answers with one item: its SID span first, then its title and a
short reason. Then the user may ask for another, and the assistant names the next item. Turns
may **steer** by text, as a user of a recommendation assistant would:

- by a facet of the wanted item (``"Can you suggest something with genre Comedy?"``): the tag
  is one the target item has (:func:`recllm.tasks.reasoning.catalog_facets` finds the facets);
- from an item (``"something like Heat (1995), but with genre Comedy"``): the history item that
  shares most facets with the target, and a tag of the target that item lacks.

Conversations are **deterministic**: each one's choices come from a generator seeded with
``(seed, user, position)``, so the same split, catalog and settings give the same texts in any
process. Only ``Split.train`` is read: the targets are transitions inside training sequences
(the last ``per_user`` of each user), never valid or test items.

The words come from ``prompts/dialogue.jinja`` (one turn per render: the user block and the
assistant block). A conversation may carry a teacher's rewrite of the user's words (``text``)
and of the assistant's reason (``note``); SID spans are never rewritten
(:mod:`recllm.cli_dialogue`).

Every assistant turn starts with the pick's SID span and a new line, so ranking that span with
the constrained SID beam search (stop token: the new line, :func:`reply_stop_token`) gives the
model's top-k answers to any conversation (:func:`dialogue_prompt`).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recllm.tasks.reasoning import Facet, _ranked, catalog_facets

if TYPE_CHECKING:
    from recllm.data.splits import Split
    from recllm.data.types import Catalog
    from recllm.tasks.builders import TaskBuilder

__all__ = [
    "Conversation",
    "DialogueTurn",
    "Steer",
    "build_conversations",
    "conversation_messages",
    "dialogue_prompt",
    "item_tags",
    "load_dialogues",
    "reply_stop_token",
    "rewrite_conversations",
    "user_message",
    "write_dialogues",
]

#: Version of the conversation builder (recorded with dialogue datasets).
DIALOGUE_VERSION = 1


@dataclass(frozen=True)
class Steer:
    """A facet tag the user asks for (``label`` as shown, e.g. "genre"; ``tag`` e.g. "Comedy")."""

    facet: str
    label: str
    tag: str


@dataclass(frozen=True)
class DialogueTurn:
    """One exchange: the user's request and the assistant's pick.

    Attributes:
        kind: ``"open"`` (the first turn: lists the liked items) or ``"more"``.
        pick: The item the assistant names.
        steer: The facet tag the user asked for, if any.
        like: The item the user starts from ("like X but ..."), if any.
        text: The user's own words instead of the built request (a chat, a teacher's rewrite).
        note: The assistant's reason in words instead of the built one.
    """

    kind: str
    pick: str
    steer: Steer | None = None
    like: str | None = None
    text: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class Conversation:
    """A user's history (oldest first) and the turns that follow it."""

    user_id: str
    history: tuple[str, ...]
    turns: tuple[DialogueTurn, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "history": list(self.history),
            "turns": [asdict(t) for t in self.turns],
        }

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> Conversation:
        turns = []
        for t in row["turns"]:
            steer = t.get("steer")
            turns.append(
                DialogueTurn(
                    kind=t["kind"],
                    pick=t["pick"],
                    steer=Steer(**steer) if steer else None,
                    like=t.get("like"),
                    text=t.get("text"),
                    note=t.get("note"),
                )
            )
        return cls(row["user_id"], tuple(row["history"]), tuple(turns))


def item_tags(catalog: Catalog, facets: Sequence[Facet], item_id: str) -> list[Steer]:
    """Every facet tag of an item, facet by facet, in the catalog's value order."""
    row = catalog.items[item_id]
    return [Steer(f.name, f.label, t) for f in facets for t in dict.fromkeys(f.tags(row[f.name]))]


def _history_counts(
    catalog: Catalog, facets: Sequence[Facet], history: Iterable[str]
) -> dict[str, Counter]:
    counts: dict[str, Counter] = {f.name: Counter() for f in facets}
    for i in history:
        for f in facets:
            counts[f.name].update(set(f.tags(catalog.items[i][f.name])))
    return counts


def reasons(
    catalog: Catalog,
    facets: Sequence[Facet],
    history: Sequence[str],
    pick: str,
    *,
    skip: Steer | None = None,
    limit: int = 2,
) -> list[dict[str, Any]]:
    """The pick's facet tags most shared with the history, as ``{label, tag, count}``: at most
    ``limit``, most shared first (ties alphabetical), only tags at least 2 history items have."""
    counts = _history_counts(catalog, facets, history)
    found = Counter()
    labels = {}
    for s in item_tags(catalog, facets, pick):
        if skip is not None and (s.facet, s.tag) == (skip.facet, skip.tag):
            continue
        n = counts[s.facet][s.tag]
        if n >= 2:
            found[(s.facet, s.tag)] = n
            labels[(s.facet, s.tag)] = s.label
    return [{"label": labels[key], "tag": key[1], "count": n} for key, n in _ranked(found)[:limit]]


def _closest(
    catalog: Catalog, facets: Sequence[Facet], history: Sequence[str], pick: str
) -> str | None:
    """The history item sharing most facet tags with ``pick`` (the most recent on ties)."""
    want = {(s.facet, s.tag) for s in item_tags(catalog, facets, pick)}
    best, best_n = None, 0
    for i in history:
        n = len(want & {(s.facet, s.tag) for s in item_tags(catalog, facets, i)})
        if n >= best_n and n > 0:
            best, best_n = i, n
    return best


def _turn(
    rng: random.Random,
    catalog: Catalog,
    facets: Sequence[Facet],
    history: Sequence[str],
    pick: str,
    kind: str,
    steer_share: float,
) -> DialogueTurn:
    """One turn towards ``pick``: plain, steered by one of its tags, or "like X (but tag)"."""
    tags = item_tags(catalog, facets, pick)
    roll = rng.random()
    if roll >= steer_share or not tags:
        return DialogueTurn(kind, pick)
    if roll < steer_share / 2:  # by a tag of the pick
        return DialogueTurn(kind, pick, steer=rng.choice(tags))
    like = _closest(catalog, facets, history, pick)
    if like is None:
        return DialogueTurn(kind, pick, steer=rng.choice(tags))
    have = {(s.facet, s.tag) for s in item_tags(catalog, facets, like)}
    new = [s for s in tags if (s.facet, s.tag) not in have]
    return DialogueTurn(kind, pick, like=like, steer=rng.choice(new) if new else None)


def build_conversations(
    split: Split,
    catalog: Catalog,
    *,
    per_user: int = 2,
    max_turns: int = 2,
    max_history: int | None = 20,
    steer_share: float = 0.5,
    seed: int = 0,
    facets: Sequence[Facet] | None = None,
) -> list[Conversation]:
    """Conversations from the training sequences (see the module docstring).

    Per training user, one conversation for each of the last ``per_user`` positions ``t`` that
    leave room for it: the history is ``seq[:t]`` (the last ``max_history`` items), turn ``j``
    picks ``seq[t + j]``, up to ``max_turns`` turns inside the training sequence.

    Args:
        steer_share: Share of turns that steer (half by a tag, half "like X"); 0: none.
        seed: Seed of the per-conversation choices.
        facets: The catalog's facets (:func:`recllm.tasks.reasoning.catalog_facets` when None).
    """
    if per_user < 1 or max_turns < 1:
        raise ValueError(f"per_user ({per_user}) and max_turns ({max_turns}) must be >= 1")
    if not 0.0 <= steer_share <= 1.0:
        raise ValueError(f"steer_share must be in [0, 1], got {steer_share}")
    facets = catalog_facets(catalog) if facets is None else facets
    out = []
    for user, seq in split.train.sequences.items():
        for t in list(range(1, len(seq)))[-per_user:]:
            rng = random.Random(f"{seed}:{user}:{t}")  # str seeds hash the same in every process
            history = tuple(seq[:t][-max_history:] if max_history else seq[:t])
            seen = list(history)
            turns = []
            for j, pick in enumerate(seq[t : t + max_turns]):
                kind = "open" if j == 0 else "more"
                turns.append(_turn(rng, catalog, facets, seen, pick, kind, steer_share))
                seen.append(pick)  # what the assistant named is part of the talk
            out.append(Conversation(user, history, tuple(turns)))
    return out


def _turn_variables(
    builder: TaskBuilder, facets: Sequence[Facet], conv: Conversation, index: int
) -> dict[str, Any]:
    """Template variables of turn ``index``; a turn whose ``pick`` is empty is the open
    request (no answer yet: an empty item and no reasons)."""
    from recllm.tasks.builders import ItemView

    turn = conv.turns[index]
    answered = bool(turn.pick)
    seen = [*conv.history, *(t.pick for t in conv.turns[:index])]
    return {
        "kind": turn.kind,
        "history": [builder.item(i) for i in conv.history] if turn.kind == "open" else [],
        "steer": None if turn.steer is None else {"label": turn.steer.label, "tag": turn.steer.tag},
        "like": None if turn.like is None else builder.item(turn.like),
        "text": turn.text,
        "note": turn.note if answered else None,
        "pick": builder.item(turn.pick) if answered else ItemView("", "", "", ""),
        "reasons": reasons(builder.catalog, facets, seen, turn.pick, skip=turn.steer)
        if answered
        else [],
    }


def conversation_messages(
    builder: TaskBuilder, conv: Conversation, facets: Sequence[Facet] | None = None
) -> list[dict[str, str]]:
    """The whole conversation as chat messages (user, assistant, user, assistant...)."""
    facets = builder.facets() if facets is None else facets
    messages = []
    for n in range(len(conv.turns)):
        user, assistant = builder.renderer.render(
            "dialogue", **_turn_variables(builder, facets, conv, n)
        )
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return messages


def dialogue_rows(
    builder: TaskBuilder, conversations: Iterable[Conversation]
) -> Iterator[dict[str, Any]]:
    """Training rows: one per assistant turn, the conversation so far as the prompt and that
    turn as the completion (the loss covers the SID span, the title and the reason)."""
    facets = builder.facets()
    for conv in conversations:
        messages = conversation_messages(builder, conv, facets)
        for n, turn in enumerate(conv.turns):
            yield {
                "prompt": messages[: 2 * n + 1],
                "completion": [messages[2 * n + 1]],
                "task": "dialogue",
                "user_id": conv.user_id,
                "target": turn.pick,
            }


def dialogue_prompt(
    builder: TaskBuilder,
    history: Sequence[str],
    *,
    turns: Sequence[DialogueTurn] = (),
    request: DialogueTurn | None = None,
) -> list[dict[str, str]]:
    """Chat messages that ask the model for its next pick: the liked ``history``, the finished
    ``turns`` (user and assistant), then the user's ``request`` (its ``pick`` is ignored).

    The model's answer starts with the SID span of its pick; rank it with
    :func:`recllm.decode.generate_sids` and ``stop_token_id=reply_stop_token(tokenizer)``.
    """
    from dataclasses import replace

    request = replace(request or DialogueTurn("more" if turns else "open", ""), pick="")
    conv = Conversation("", tuple(history), (*turns, request))
    messages = conversation_messages(builder, Conversation("", conv.history, tuple(turns)))
    variables = _turn_variables(builder, builder.facets(), conv, len(turns))
    user, _ = builder.renderer.render("dialogue", **variables)
    return [*messages, {"role": "user", "content": user}]


def user_message(
    builder: TaskBuilder, history: Sequence[str], request: DialogueTurn
) -> dict[str, str]:
    """One user message as the template renders it: an ``"open"`` request lists ``history``
    (the liked items), a ``"more"`` request does not; ``request.text`` holds the user's words."""
    from dataclasses import replace

    conv = Conversation("", tuple(history), (replace(request, pick=""),))
    user, _ = builder.renderer.render(
        "dialogue", **_turn_variables(builder, builder.facets(), conv, 0)
    )
    return {"role": "user", "content": user}


def reply_stop_token(tokenizer: Any) -> int:
    """The token after a reply's SID span (a new line), which ends the span's beam search.

    Raises:
        ValueError: The tokenizer does not encode a new line as one token.
    """
    ids = tokenizer("\n", add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(f"the tokenizer encodes a new line as {len(ids)} tokens, not one")
    return ids[0]


# -- a teacher's rewrite, and conversation datasets ----------------------------------------------

#: Columns of a conversation dataset (``recllm dialogue generate``), in order.
DIALOGUE_COLUMNS = ("user_id", "history", "turns", "source", "teacher")


@dataclass
class RewriteRun:
    """What :func:`rewrite_conversations` did."""

    conversations: list[Conversation]
    parts: int = 0  # user requests + assistant reasons sent
    requested: int = 0
    cached: int = 0
    kept_built: int = 0  # answers dropped (empty, or naming the item): the built words stay


def _teacher_parts(
    builder: TaskBuilder, facets: Sequence[Facet], conv: Conversation, index: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Variables of ``dialogue_teacher.jinja`` for one turn's request and reason."""
    turn = conv.turns[index]
    user, assistant = builder.renderer.render(
        "dialogue", **_turn_variables(builder, facets, conv, index)
    )
    seen = [*conv.history, *(t.pick for t in conv.turns[:index])]
    titles = [builder.catalog.title(i) for i in seen[-5:]]
    steer = None if turn.steer is None else f"{turn.steer.label} {turn.steer.tag}"
    if turn.like is not None:
        like = f"something like {builder.catalog.title(turn.like)}"
        steer = like if steer is None else f"{like}, but with {steer}"
    pick = builder.catalog.title(turn.pick)
    reason = assistant.split("\n", 1)[1] if "\n" in assistant else assistant
    reason = reason.removeprefix(pick).lstrip(": ").strip()
    request = {"part": "request", "titles": titles, "built": user.splitlines()[-1], "steer": steer}
    return request | {"pick": ""}, {
        "part": "reason",
        "titles": titles,
        "built": reason or f"{pick} matches what the user liked",
        "steer": steer,
        "pick": pick,
    }


def rewrite_conversations(
    conversations: Sequence[Conversation],
    builder: TaskBuilder,
    teacher: Any,
    cache: Any,
    *,
    progress: bool = True,
    on_estimate: Any = None,
) -> RewriteRun:
    """A teacher model's words for every turn: the user's request (``text``) and the
    assistant's reason (``note``), through :func:`recllm.tasks.reasoning.ask_teacher` (the
    same client, cache and resume as rationales). The picks, steering and SIDs stay as built.

    A rewritten request that names the picked item (the user cannot know it) or an empty answer
    is dropped and the built words kept (counted in ``kept_built``).
    """
    from dataclasses import replace

    from recllm.tasks.reasoning import _clean, ask_teacher, leaks

    facets = builder.facets()
    requests, where = [], []
    for c, conv in enumerate(conversations):
        for t in range(len(conv.turns)):
            for part in _teacher_parts(builder, facets, conv, t):
                user, _ = builder.renderer.render("dialogue_teacher", **part)
                requests.append([{"role": "user", "content": user}])
                where.append((c, t, part["part"]))
    asked = ask_teacher(
        requests,
        teacher,
        cache,
        what=f"{len(conversations)} conversations ({len(requests)} turn parts)",
        progress=progress,
        on_estimate=on_estimate,
    )
    run = RewriteRun([], len(requests), asked.requested, asked.cached)
    words: dict[tuple[int, int, str], str] = {}
    for (c, t, part), answer in zip(where, asked.answers, strict=True):
        text = " ".join(_clean(answer or "").split())
        pick = conversations[c].turns[t].pick
        bad = not text or (part == "request" and leaks(text, builder.catalog.title(pick)))
        if bad or "<|sid" in text:
            run.kept_built += 1
            continue
        words[(c, t, part)] = text
    for c, conv in enumerate(conversations):
        turns = tuple(
            replace(turn, text=words.get((c, t, "request")), note=words.get((c, t, "reason")))
            for t, turn in enumerate(conv.turns)
        )
        run.conversations.append(Conversation(conv.user_id, conv.history, turns))
    return run


def write_dialogues(
    conversations: Sequence[Conversation],
    out: str | Path,
    record: dict[str, Any],
    *,
    source: str,
    teacher: str = "",
) -> Path:
    """Save conversations as a ``datasets`` dataset at ``out`` (a temp directory renamed into
    place) with ``dialogues.json`` (settings, counts, data fingerprint, versions)."""
    import json

    import datasets

    from recllm.io import atomic_dir, write_json_atomic

    rows = [c.to_dict() for c in conversations]
    ds = datasets.Dataset.from_dict(
        {
            "user_id": [r["user_id"] for r in rows],
            "history": [r["history"] for r in rows],
            "turns": [json.dumps(r["turns"], ensure_ascii=False) for r in rows],
            "source": [source] * len(rows),
            "teacher": [teacher] * len(rows),
        },
        features=datasets.Features(
            {
                "user_id": datasets.Value("string"),
                "history": datasets.Sequence(datasets.Value("string")),
                "turns": datasets.Value("string"),  # JSON: a list of DialogueTurn fields
                "source": datasets.Value("string"),
                "teacher": datasets.Value("string"),
            }
        ),
    )
    out = Path(out)
    with atomic_dir(out, overwrite=True) as tmp:
        ds.save_to_disk(str(tmp / "data"))
        write_json_atomic(tmp / "dialogues.json", record)
    return out


def load_dialogues(path: str | Path) -> tuple[list[Conversation], dict[str, Any]]:
    """Conversations written by :func:`write_dialogues`, and their record.

    Raises:
        UserError: ``path`` is not such a directory.
    """
    import json

    import datasets

    from recllm.errors import UserError

    path = Path(path)
    if not (path / "dialogues.json").is_file() or not (path / "data").is_dir():
        raise UserError(
            str(path),
            "is not a conversation dataset (no dialogues.json and data/)",
            "make one with: recllm dialogue generate --out DIR",
        )
    record = json.loads((path / "dialogues.json").read_text())
    ds = datasets.load_from_disk(str(path / "data"))
    convs = [Conversation.from_dict({**row, "turns": json.loads(row["turns"])}) for row in ds]
    return convs, record
