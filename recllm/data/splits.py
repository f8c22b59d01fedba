"""Train / valid / test splits: per-user leave-one-out, next-session, and a global temporal split.

Leave-one-out follows the protocol of the published tables (see the TIGER and P5 papers): for a
user's chronological sequence ``s``, ``s[-1]`` is the test target, ``s[-2]`` the validation
target, and ``s[:-2]`` the training part. The test history is ``s[:-1]`` (it includes the
validation target) and the validation history ``s[:-2]``, each cut to the last ``max_history``
items. Only ``Split.train`` may feed training texts and collaborative statistics.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from recllm.data.config import DataConfig
from recllm.data.types import Interactions, RecDataset
from recllm.errors import UserError

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Example:
    """One prediction task: given ``history`` (oldest first), predict ``target``."""

    user_id: str
    history: tuple[str, ...]
    target: str


@dataclass
class Split:
    """A dataset split.

    Attributes:
        train: The training interactions only: the one source training texts and collaborative
            signal may use.
        valid: Validation examples.
        test: Test examples.
        kind: ``"loo"`` or ``"temporal"``.
        max_history: The truncation applied to example histories (None = full).
    """

    train: Interactions
    valid: list[Example]
    test: list[Example]
    kind: str
    max_history: int | None

    def train_examples(self) -> Iterator[Example]:
        """Next-item examples from every prefix of every training sequence (length >= 1)."""
        for user, seq in self.train.sequences.items():
            for t in range(1, len(seq)):
                yield Example(user, _cut(seq[:t], self.max_history), seq[t])

    def to_datasets(self) -> datasets.DatasetDict:
        """``train`` (one row per user: ``user_id``, ``item_ids``), ``valid`` and ``test``
        (``user_id``, ``history``, ``target``)."""
        import datasets

        def rows(examples: list[Example]) -> datasets.Dataset:
            return datasets.Dataset.from_dict(
                {
                    "user_id": [e.user_id for e in examples],
                    "history": [list(e.history) for e in examples],
                    "target": [e.target for e in examples],
                },
                features=datasets.Features(
                    {
                        "user_id": datasets.Value("string"),
                        "history": datasets.Sequence(datasets.Value("string")),
                        "target": datasets.Value("string"),
                    }
                ),
            )

        return datasets.DatasetDict(
            {"train": self.train.to_dataset(), "valid": rows(self.valid), "test": rows(self.test)}
        )


def _cut(history: list[str] | tuple[str, ...], max_history: int | None) -> tuple[str, ...]:
    return tuple(history if max_history is None else history[-max_history:])


def check_distinct_events(interactions: Interactions) -> None:
    """Refuse interactions in which a user's event (item and timestamp) is recorded twice.

    An example's history is every event before its target; a second copy of the target event
    would sit in that history and hand the model the answer. ``load_rec_dataset`` drops such
    copies; this guards interactions built any other way. Without timestamps an event has no
    identity beyond its position, and a history never holds its own target's position.

    Raises:
        UserError: Names the user, the item, the time and how often it occurs.
    """
    dup = interactions.first_duplicate_event()
    if dup is not None:
        user, item, t, count = dup
        raise UserError(
            f"user {user!r}",
            f"item {item!r} at time {t} occurs {count} times, so an example would hold its own "
            "target in its history",
            "drop duplicate events (load_rec_dataset does) before splitting",
        )


def leave_one_out(interactions: Interactions, max_history: int | None = 20) -> Split:
    """Per-user leave-one-out: last item = test target, second-to-last = validation target.

    Users with fewer than 3 interactions cannot be split this way; they are skipped and counted
    in the log.

    Raises:
        UserError: A user's event is recorded twice (see :func:`check_distinct_events`).
    """
    check_distinct_events(interactions)
    train: dict[str, list[str]] = {}
    train_ts: dict[str, list[float]] | None = {} if interactions.timestamps is not None else None
    valid: list[Example] = []
    test: list[Example] = []
    skipped = 0
    for user, seq in interactions.sequences.items():
        if len(seq) < 3:
            skipped += 1
            continue
        train[user] = seq[:-2]
        if train_ts is not None and interactions.timestamps is not None:
            train_ts[user] = interactions.timestamps[user][:-2]
        valid.append(Example(user, _cut(seq[:-2], max_history), seq[-2]))
        test.append(Example(user, _cut(seq[:-1], max_history), seq[-1]))
    if skipped:
        logger.warning("leave-one-out: skipped %d users with fewer than 3 interactions", skipped)
    return Split(Interactions(train, train_ts), valid, test, "loo", max_history)


def temporal_split(
    interactions: Interactions,
    valid_ratio: float = 0.1,
    test_ratio: float = 0.1,
    max_history: int | None = 20,
) -> Split:
    """A global temporal split: two time cut-offs shared by all users.

    The cut-offs are the timestamps at the ``1 - valid_ratio - test_ratio`` and
    ``1 - test_ratio`` quantiles of all interactions. Interactions before the first cut-off train;
    each interaction in the valid (test) window becomes an example whose history is everything the
    user did before it (cut to ``max_history``). Interactions without any earlier history are not
    examples (nothing to condition on).

    Raises:
        UserError: The interactions have no timestamps, or a user's event is recorded twice.
    """
    if interactions.timestamps is None:
        raise UserError(
            "--split temporal",
            "a temporal split needs timestamps and this dataset has none (the P5 and LC-Rec "
            "layouts carry only order)",
            "use --split loo, or name the timestamp column with --time_col",
        )
    check_distinct_events(interactions)
    times = sorted(t for ts in interactions.timestamps.values() for t in ts)
    n = len(times)
    t_valid = times[min(n - 1, int(n * (1 - valid_ratio - test_ratio)))]
    t_test = times[min(n - 1, int(n * (1 - test_ratio)))]
    train: dict[str, list[str]] = {}
    train_ts: dict[str, list[float]] = {}
    valid: list[Example] = []
    test: list[Example] = []
    for user, seq in interactions.sequences.items():
        ts = interactions.timestamps[user]
        for k, (item, t) in enumerate(zip(seq, ts, strict=True)):
            if t < t_valid:
                train.setdefault(user, []).append(item)
                train_ts.setdefault(user, []).append(t)
            elif k > 0:
                (valid if t < t_test else test).append(
                    Example(user, _cut(seq[:k], max_history), item)
                )
    logger.info(
        "temporal split at t=%s / %s: %d train interactions, %d valid, %d test examples",
        t_valid,
        t_test,
        sum(len(s) for s in train.values()),
        len(valid),
        len(test),
    )
    return Split(Interactions(train, train_ts), valid, test, "temporal", max_history)


@dataclass(frozen=True)
class SessionExample:
    """One next-session task: given ``history`` (oldest first), predict ``session``, the user's
    next ``len(session)`` items in order."""

    user_id: str
    history: tuple[str, ...]
    session: tuple[str, ...]


@dataclass
class SessionSplit(Split):
    """A next-session split (:func:`next_session_split`).

    ``valid`` / ``test`` hold the first item of each session as a next-item :class:`Example`
    (so next-item evaluation and epoch selection read it as any split); the whole sessions are
    in ``valid_sessions`` / ``test_sessions``, in the same user order.

    Attributes:
        valid_sessions: Each user's validation session (the ``session_length`` items before the
            test session), its history everything before it.
        test_sessions: Each user's last ``session_length`` items, its history everything
            before (the validation session included).
        session_length: Items per session (N).
        skipped_users: Users with fewer than ``2 * N + 1`` items (not scored; their whole
            sequences are in ``train``).
    """

    valid_sessions: list[SessionExample] = field(default_factory=list)
    test_sessions: list[SessionExample] = field(default_factory=list)
    session_length: int = 5
    skipped_users: int = 0


def next_session_split(
    interactions: Interactions, session_length: int = 5, max_history: int | None = 20
) -> SessionSplit:
    """Per-user next-session split: the last ``session_length`` (N) items are the test session,
    the N before them the validation session, the rest trains.

    TBGRecall's next-session protocol on sequences without session boundaries: a "session" is
    N consecutive items. Users with fewer than ``2 * N + 1`` items (one training item and two
    sessions) are not scored and are counted (``skipped_users`` and the log); their whole
    sequences train, as no validation or test example reads them (on Amazon Beauty, 18,121 of
    22,363 users, 58% of the interactions). Histories are cut to the last ``max_history`` items,
    as in :func:`leave_one_out`.

    Raises:
        UserError: ``session_length`` < 1, or a user's event is recorded twice
            (:func:`check_distinct_events`).
    """
    n = session_length
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise UserError(
            "--split_session_length", f"must be an integer >= 1, got {n!r}", "pass 1 or more"
        )
    check_distinct_events(interactions)
    train: dict[str, list[str]] = {}
    train_ts: dict[str, list[float]] | None = {} if interactions.timestamps is not None else None
    valid: list[Example] = []
    test: list[Example] = []
    valid_sessions: list[SessionExample] = []
    test_sessions: list[SessionExample] = []
    skipped = 0
    for user, seq in interactions.sequences.items():
        if len(seq) < 2 * n + 1:  # not scored; the sequence still trains
            skipped += 1
            train[user] = list(seq)
            if train_ts is not None and interactions.timestamps is not None:
                train_ts[user] = list(interactions.timestamps[user])
            continue
        train[user] = seq[: -2 * n]
        if train_ts is not None and interactions.timestamps is not None:
            train_ts[user] = interactions.timestamps[user][: -2 * n]
        v_hist, t_hist = _cut(seq[: -2 * n], max_history), _cut(seq[:-n], max_history)
        valid_sessions.append(SessionExample(user, v_hist, tuple(seq[-2 * n : len(seq) - n])))
        test_sessions.append(SessionExample(user, t_hist, tuple(seq[-n:])))
        valid.append(Example(user, v_hist, seq[-2 * n]))
        test.append(Example(user, t_hist, seq[-n]))
    if skipped:
        logger.warning(
            "next-session split: %d users with fewer than %d interactions (1 training item + "
            "2 sessions of %d) are not scored; their whole sequences train",
            skipped,
            2 * n + 1,
            n,
        )
    return SessionSplit(
        Interactions(train, train_ts),
        valid,
        test,
        "session",
        max_history,
        valid_sessions=valid_sessions,
        test_sessions=test_sessions,
        session_length=n,
        skipped_users=skipped,
    )


def split_dataset(dataset: RecDataset, config: DataConfig | None = None) -> Split:
    """Split ``dataset`` as ``config.split`` says (then hold ``config.holdout_items`` out of
    the training part, :func:`recllm.data.holdout.holdout_split`)."""
    cfg = config or DataConfig()
    if cfg.split == "loo":
        split = leave_one_out(dataset.interactions, cfg.max_history)
    elif cfg.split == "session":
        split = next_session_split(dataset.interactions, cfg.split_session_length, cfg.max_history)
    else:
        split = temporal_split(
            dataset.interactions, cfg.valid_ratio, cfg.test_ratio, cfg.max_history
        )
    if cfg.holdout_items:  # the cold-start split: training never sees these items
        from recllm.data.holdout import holdout_split, read_holdout_items

        split = holdout_split(split, read_holdout_items(cfg.holdout_items))
    return split


def write_split(split: Split, dataset: RecDataset, out_dir: str, overwrite: bool = False) -> None:
    """Write a split as JSONL files plus ``split.json`` (config and versions), atomically.

    Layout: ``items.jsonl`` (catalog), ``train.jsonl`` (``user_id``, ``item_ids``),
    ``valid.jsonl`` / ``test.jsonl`` (``user_id``, ``history``, ``target``), ``split.json``.
    """
    import json

    from recllm.io import atomic_dir
    from recllm.provenance import provenance

    def dump(path, rows) -> None:
        with open(path, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")

    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        dump(tmp / "items.jsonl", ({"item_id": i, **t} for i, t in dataset.catalog.items.items()))
        dump(
            tmp / "train.jsonl",
            ({"user_id": u, "item_ids": s} for u, s in split.train.sequences.items()),
        )
        for name, examples in (("valid", split.valid), ("test", split.test)):
            dump(
                tmp / f"{name}.jsonl",
                (
                    {"user_id": e.user_id, "history": list(e.history), "target": e.target}
                    for e in examples
                ),
            )
        meta = {
            "dataset": dataset.name,
            "source": dataset.source,
            "format": dataset.format,
            "split": split.kind,
            "max_history": split.max_history,
            "counts": {
                "train_users": len(split.train),
                "valid": len(split.valid),
                "test": len(split.test),
            },
            **provenance(),
        }
        (tmp / "split.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def select_users(examples: Sequence[Example], n: int, seed: int | None = None) -> list[Example]:
    """``n`` of ``examples`` (0 = all): the first ``n``, or a seeded random sample when ``seed``
    is given (in their original order; the same seed and data give the same users).

    The first users of a split are a sample of whatever order the data lists them in (for
    ml-100k: user ids, and most-popular scores .015 on the first 200 test users against .050
    on all 943); a seeded sample is a fair one for comparing methods on a subset.
    """
    import random

    if n < 0:
        raise ValueError(f"n must be >= 0 (0 = all), got {n}")
    if not n or n >= len(examples):
        return list(examples)
    if seed is None:
        return list(examples[:n])
    keep = sorted(random.Random(seed).sample(range(len(examples)), n))
    return [examples[i] for i in keep]
