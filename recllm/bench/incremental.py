"""Incremental training measured on a temporal split (issue 31, item 4; ``scripts/incremental.py``).

The data is split by time (``--split temporal``): the training period, a validation window and
the last period, whose users are evaluated. The training period is cut once more, ``update_days``
before its end, into a base period and an update period ("the next days' interactions").
Three models of the same recipe, SID map and seed are compared on the same last-period users:

- ``stale``: trained on the base period only (``--train_until T``);
- ``incremental``: the stale model continued (``--init_model``) on the update period plus a
  replay share of older training examples (``--train_since T --replay_ratio R``);
- ``scratch``: trained from the pretrained checkpoint on base + update (the whole training
  period), as many steps as the stale model.

Each is scored by Recall@10 and NDCG@10 of trie-constrained beam search (beam 10) on each
last-period user's first test interaction, and by its training minutes.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recllm.data.splits import Example, Split

ROWS = ("stale", "incremental", "scratch")
DAY = 86400.0


@dataclass(frozen=True)
class Periods:
    """Where the training period is cut, and what lies on each side.

    Attributes:
        t_update: Start of the update period (seconds): ``update_days`` before the last
            training event.
        base_events: Training interactions before ``t_update``.
        update_events: Training interactions at or after it.
        update_users: Users with an interaction in the update period.
        new_items: Items whose first training interaction lies in the update period.
    """

    t_update: float
    base_events: int
    update_events: int
    update_users: int
    new_items: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "t_update": self.t_update,
            "base_events": self.base_events,
            "update_events": self.update_events,
            "update_users": self.update_users,
            "new_items": len(self.new_items),
        }


def temporal_periods(split: Split, update_days: float) -> Periods:
    """Cut ``split``'s training period ``update_days`` before its last event.

    Raises:
        ValueError: The split has no timestamps, ``update_days`` is not positive, or either
            period would be empty.
    """
    if split.train.timestamps is None:
        raise ValueError("a temporal benchmark needs timestamps")
    if update_days <= 0:
        raise ValueError(f"update_days must be > 0, got {update_days}")
    events = [
        (t, user, item)
        for user, seq in split.train.sequences.items()
        for item, t in zip(seq, split.train.timestamps[user], strict=True)
    ]
    t_update = max(t for t, _, _ in events) - update_days * DAY
    base = [e for e in events if e[0] < t_update]
    update = [e for e in events if e[0] >= t_update]
    if not base or not update:
        raise ValueError(
            f"update_days {update_days} leaves {len(base)} base and {len(update)} update "
            "interactions; pick a length that leaves both non-empty"
        )
    seen = {item for _, _, item in base}
    new_items = sorted({item for _, _, item in update} - seen)
    return Periods(
        t_update, len(base), len(update), len({u for _, u, _ in update}), tuple(new_items)
    )


def last_period_users(split: Split, n: int, seed: int = 0) -> list[Example]:
    """Each last-period user's first test interaction, ``n`` of them drawn with ``seed`` (0 =
    all), in split order."""
    first: dict[str, Example] = {}
    for ex in split.test:
        first.setdefault(ex.user_id, ex)
    users = list(first.values())
    if n and n < len(users):
        keep = sorted(random.Random(seed).sample(range(len(users)), n))
        users = [users[k] for k in keep]
    return users


def score_model(
    model_dir: Path,
    users: Sequence[Example],
    catalog: Any,
    evaluate: Callable[..., Any],
    *,
    beams: int = 10,
) -> dict[str, float]:
    """R@10 and N@10 of ``model_dir`` on ``users`` (float32, trie-constrained beam search).

    ``evaluate`` is :func:`recllm.eval.run.evaluate_recommender` (bench sits above eval; it is
    passed in so that a caller can choose the engine)."""
    import torch

    from recllm.tasks.prompting import PromptSpec
    from recllm.vocab import load_model_with_sids

    model, tok, sid_map = load_model_with_sids(model_dir, dtype=torch.float32)
    model.eval()
    spec = PromptSpec.from_model_dir(model_dir)
    result = evaluate(
        model, tok, sid_map, users, spec, catalog, beams=beams, ks=(10,), progress=False
    )
    return {
        "recall@10": float(result.metrics["recall@10"]),
        "ndcg@10": float(result.metrics["ndcg@10"]),
        "eval_seconds": round(result.seconds, 1),
    }


class Stopwatch:
    """Minutes of a block: ``with watch: ...; watch.minutes``."""

    def __enter__(self) -> Stopwatch:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.minutes = round((time.perf_counter() - self.start) / 60, 2)


def table_lines(summary: Mapping[str, Any]) -> list[str]:
    """The result table, one line per row (stale, incremental, scratch, most-popular)."""
    lines = [f"{'model':<14}{'R@10':>8}{'N@10':>8}{'train min':>11}{'examples':>10}"]
    for name in (*ROWS, "popular"):
        row = summary["rows"].get(name)
        if row is None:
            continue
        minutes = row.get("minutes")
        lines.append(
            f"{name:<14}{row['recall@10']:>8.4f}{row['ndcg@10']:>8.4f}"
            f"{(f'{minutes:.2f}' if minutes is not None else '-'):>11}"
            f"{row.get('train_examples', '-')!s:>10}"
        )
    return lines
