"""Incremental training data: the training examples of one period, plus a replay share.

A model continued from an earlier one (``--init_model``) trains on the interactions that came
after it (``--train_since T``: the examples whose target event happened at or after ``T``), plus
``--replay_ratio R`` times as many older training examples, drawn with a seed, so that it does
not forget what it knew. ``--train_until T`` keeps only the examples before ``T`` (the base
model of an incremental run). Only the training split is read: validation and test examples
never enter, whatever the period.

An example's time is the time of its target event: the item a ``rec`` prompt asks for, the last
item of a ``rec_sequence`` window. Rows without a training event (catalog-task rows, a dialogue turn's
suggestion) have no time: they belong to the older pool (replayed, never "new"), or are kept
when there is no ``since``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass

from recllm.data.splits import Split
from recllm.errors import UserError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PeriodSelection:
    """Which training rows a period keeps.

    Attributes:
        indices: The kept rows, in their original order.
        new: Rows whose target event lies in ``[since, until)``.
        replay: Older rows (target before ``since``, or catalog rows) replayed.
        pool: Older rows there were to replay from.
        dropped_after: Rows whose target event lies at or after ``until``.
    """

    indices: list[int]
    new: int
    replay: int
    pool: int
    dropped_after: int

    def report(self) -> dict[str, int]:
        return {
            "new": self.new,
            "replay": self.replay,
            "replay_pool": self.pool,
            "dropped_after_until": self.dropped_after,
        }


def event_times(split: Split) -> dict[tuple[str, str], float]:
    """``(user, item) -> time`` of the user's training events (the latest, for an item a user
    met more than once: a window ending in it is as new as its newest occurrence).

    Raises:
        UserError: The split has no timestamps (a period needs them).
    """
    if split.train.timestamps is None:
        raise UserError(
            "--train_since/--train_until",
            "a training period needs timestamps and this dataset has none",
            "drop --train_since/--train_until, or name the timestamp column with --time_col",
        )
    times: dict[tuple[str, str], float] = {}
    for user, seq in split.train.sequences.items():
        for item, t in zip(seq, split.train.timestamps[user], strict=True):
            key = (user, item)
            times[key] = max(t, times.get(key, t))
    return times


def select_period(
    users: Sequence[str],
    targets: Sequence[str],
    times: dict[tuple[str, str], float],
    *,
    since: float | None = None,
    until: float | None = None,
    replay_ratio: float = 0.0,
    seed: int = 0,
) -> PeriodSelection:
    """The rows of one training period plus a seeded replay share of older rows.

    Args:
        users: Each row's user id (``""`` for catalog rows).
        targets: Each row's target item id.
        times: :func:`event_times` of the training split.
        since: Keep rows whose target event happened at or after this time (None: from the
            start; then nothing is older and nothing is replayed).
        until: Drop rows whose target event happened at or after this time (None: no end).
        replay_ratio: Older rows to add, as a multiple of the new rows; at most all of them.
        seed: Seed of the replay draw (same seed and rows -> same draw).

    Raises:
        UserError: A negative ``replay_ratio``, or ``since`` not before ``until``.
    """
    if replay_ratio < 0:
        raise UserError(f"--replay_ratio {replay_ratio}", "must be 0 or more", "pass e.g. 0.5 or 0")
    if since is not None and until is not None and since >= until:
        raise UserError(
            f"--train_since {since} --train_until {until}",
            "the period is empty (since must come before until)",
            "pass a --train_since earlier than --train_until",
        )
    new: list[int] = []
    pool: list[int] = []
    after = 0
    for k, (user, target) in enumerate(zip(users, targets, strict=True)):
        t = times.get((user, target)) if user else None
        if t is None:  # a catalog row (or a dialogue turn's suggestion): no event, no time
            (pool if since is not None else new).append(k)
            continue
        if until is not None and t >= until:
            after += 1
        elif since is None or t >= since:
            new.append(k)
        else:
            pool.append(k)
    n_replay = min(len(pool), round(replay_ratio * len(new))) if since is not None else 0
    replay = random.Random(seed).sample(pool, n_replay)
    selection = PeriodSelection(sorted(new + replay), len(new), n_replay, len(pool), after)
    logger.info(
        "training period [%s, %s): %d new rows, %d replayed of %d older (ratio %g), %d after",
        since,
        until,
        selection.new,
        selection.replay,
        selection.pool,
        replay_ratio,
        after,
    )
    return selection
