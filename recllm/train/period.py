"""Incremental training data: the training examples of one period, plus a replay share.

A model continued from an earlier one (``--init_model``) trains on the interactions that came
after it (``--train_since T``: the examples whose target event happened at or after ``T``), plus
``--replay_ratio R`` times as many older training examples, drawn with a seed, so that it does
not forget what it knew. ``--train_until T`` trains on the data as it was before ``T``
(:func:`cut_training`: every training sequence cut there, then windowed; the base model of an
incremental run). Only the training split is read: validation and test examples never enter,
whatever the period.

An example's time is the time of its target event: the item a ``rec`` prompt asks for, the last
item of a ``rec_sequence`` window. Rows without a training event (catalog-task rows, a dialogue turn's
suggestion) have no time: they belong to the older pool (replayed, never "new"), or are kept
when there is no ``since``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace

from recllm.data.splits import Split
from recllm.data.types import Interactions
from recllm.errors import UserError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PeriodSelection:
    """Which training rows a period keeps.

    Attributes:
        indices: The kept rows, in their original order.
        new: Rows whose target event happened at or after ``since``.
        replay: Older rows (target before ``since``, or no event) replayed.
        pool: Older rows there were to replay from.
    """

    indices: list[int]
    new: int
    replay: int
    pool: int

    def report(self) -> dict[str, int]:
        return {"new": self.new, "replay": self.replay, "replay_pool": self.pool}


def event_times(split: Split) -> dict[tuple[str, str], float]:
    """``(user, item) -> time`` of the user's training events (the latest, for an item a user
    met more than once: a window ending in it is as new as its newest occurrence).

    Raises:
        UserError: The split has no timestamps (a period needs them).
    """
    if split.train.timestamps is None:
        raise UserError(
            "--train_since",
            "a training period needs timestamps and this dataset has none",
            "drop --train_since, or name the timestamp column with --time_col",
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
    since: float,
    replay_ratio: float = 0.0,
    seed: int = 0,
) -> PeriodSelection:
    """The rows of one training period plus a seeded replay share of older rows.

    Args:
        users: Each row's user id (``""`` for catalog rows).
        targets: Each row's target item id.
        times: :func:`event_times` of the training split.
        since: Keep rows whose target event happened at or after this time.
        replay_ratio: Older rows to add, as a multiple of the new rows; at most all of them.
        seed: Seed of the replay draw (same seed and rows -> same draw).

    Raises:
        UserError: A negative ``replay_ratio``.
    """
    if replay_ratio < 0:
        raise UserError(f"--replay_ratio {replay_ratio}", "must be 0 or more", "pass e.g. 0.5 or 0")
    new: list[int] = []
    pool: list[int] = []
    for k, (user, target) in enumerate(zip(users, targets, strict=True)):
        t = times.get((user, target)) if user else None
        if t is None:  # a catalog row (or a dialogue turn's suggestion): no event, no time
            pool.append(k)
        elif t >= since:
            new.append(k)
        else:
            pool.append(k)
    n_replay = min(len(pool), round(replay_ratio * len(new)))
    replay = random.Random(seed).sample(pool, n_replay)
    selection = PeriodSelection(sorted(new + replay), len(new), n_replay, len(pool))
    logger.info(
        "training period from %s: %d new rows, %d replayed of %d older (ratio %g)",
        since,
        selection.new,
        selection.replay,
        selection.pool,
        replay_ratio,
    )
    return selection


def cut_training(split: Split, until: float) -> Split:
    """``split`` with its training interactions cut to those before ``until`` (validation and
    test examples unchanged): the data as it was then. Users left without any are dropped.

    Raises:
        UserError: The split has no timestamps, or nothing happened before ``until``.
    """
    if split.train.timestamps is None:
        raise UserError(
            f"--train_until {until}",
            "a training period needs timestamps and this dataset has none",
            "drop --train_until, or name the timestamp column with --time_col",
        )
    seqs: dict[str, list[str]] = {}
    times: dict[str, list[float]] = {}
    for user, seq in split.train.sequences.items():
        kept = [(i, t) for i, t in zip(seq, split.train.timestamps[user], strict=True) if t < until]
        if kept:
            seqs[user] = [i for i, _ in kept]
            times[user] = [t for _, t in kept]
    if not seqs:
        raise UserError(
            f"--train_until {until}",
            "no training interaction happened before it",
            "pass a later time (the data's timestamps are seconds since the epoch)",
        )
    logger.info(
        "training data cut at %s: %d of %d interactions",
        until,
        sum(len(s) for s in seqs.values()),
        split.train.num_interactions,
    )
    return replace(split, train=Interactions(seqs, times))
