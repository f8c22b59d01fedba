"""Metrics of recommended lists against a next session (issue 32, the next-session protocol).

Each evaluated user has a history, a *session* (the next N items, :func:`recllm.data.splits.
next_session_split`) and a recommended list of N items. Per user:

- **set Recall@N**: the share of the session's distinct items found in the list's first N
  entries (the order of the session does not matter; a session item the user repeated counts
  once, and an item the list repeats hits once: :func:`recllm.eval.metrics.recall_at_k` with a
  set of targets).
- **NDCG@N**: DCG of the list's hits (``1 / log2(rank + 1)``, first occurrence only) over the
  ideal DCG of ``min(N, |distinct session items|)`` hits at the top
  (:func:`recllm.eval.metrics.ndcg_at_k`).
- **SID diversity**: distinct first-level SID codes among the list's distinct items, over N
  (1.0: every item from another top-level cluster; 1/N: all from one).
- **category diversity**: distinct category tags (ml-100k genres, a Beauty category) among the
  list's items, over N; items may carry several tags (a film with two genres), so it may exceed
  1. Reported only when a tag map is given.
- **repeat rate**: the share of the list's N slots holding an item already in the user's
  history (the full history the split keeps, not only the prompt's last items).

All are averaged over users. N is the length the lists are cut to (the session length).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from recllm.eval.metrics import _check_k, ndcg_at_k, recall_at_k

__all__ = [
    "category_diversity",
    "list_metrics",
    "paired_lists",
    "repeat_rate",
    "sid_diversity",
]


def _cut(lists: Sequence[Sequence[str | None]], n: int) -> list[list[str | None]]:
    return [list(items)[:n] for items in lists]


def sid_diversity(
    lists: Sequence[Sequence[str | None]], first_code: Mapping[str, int], n: int
) -> float:
    """Mean over users of (distinct first-level SID codes in the list's first ``n``) / ``n``.

    Args:
        lists: One recommended list per user.
        first_code: Item id -> its first SID code. Items without one (``None``, unknown ids)
            add no code.
        n: The list length N.

    Raises:
        ValueError: ``lists`` is empty or ``n`` < 1.
    """
    _check_k(n)
    if not lists:
        raise ValueError("no lists to score: pass one list per user")
    codes = [{first_code[i] for i in items if i in first_code} for items in _cut(lists, n)]
    return sum(len(c) for c in codes) / (n * len(codes))


def category_diversity(
    lists: Sequence[Sequence[str | None]], tags: Mapping[str, Collection[str]], n: int
) -> float:
    """Mean over users of (distinct category tags of the list's first ``n`` items) / ``n``.

    An item with several tags contributes each, so the figure may exceed 1.

    Raises:
        ValueError: ``lists`` is empty or ``n`` < 1.
    """
    _check_k(n)
    if not lists:
        raise ValueError("no lists to score: pass one list per user")
    found = [{t for i in items if i in tags for t in tags[i]} for items in _cut(lists, n)]
    return sum(len(f) for f in found) / (n * len(found))


def repeat_rate(
    lists: Sequence[Sequence[str | None]], histories: Sequence[Collection[str]], n: int
) -> float:
    """Mean over users of the share of the list's ``n`` slots holding a history item.

    Raises:
        ValueError: ``lists`` is empty, differs in length from ``histories``, or ``n`` < 1.
    """
    _check_k(n)
    if not lists:
        raise ValueError("no lists to score: pass one list per user")
    if len(lists) != len(histories):
        raise ValueError(f"{len(lists)} lists but {len(histories)} histories: one per user")
    total = 0.0
    for items, history in zip(_cut(lists, n), histories, strict=True):
        seen = set(history)
        total += sum(1 for i in items if i in seen) / n
    return total / len(lists)


def list_metrics(
    lists: Sequence[Sequence[str | None]],
    sessions: Sequence[Collection[str]],
    histories: Sequence[Collection[str]],
    n: int,
    *,
    first_code: Mapping[str, int] | None = None,
    tags: Mapping[str, Collection[str]] | None = None,
) -> dict[str, Any]:
    """Every list figure of the module docstring, keyed ``recall@N``, ``ndcg@N``,
    ``sid_diversity``, ``category_diversity``, ``repeat_rate`` (the diversities only when
    their map is given), plus ``users`` and ``n``.

    Args:
        lists: One recommended list per user (its first ``n`` entries are scored).
        sessions: Each user's session items (any order).
        histories: Each user's history items.
        n: N, the list length and the cut-off.
        first_code: Item id -> first-level SID code (for ``sid_diversity``).
        tags: Item id -> category tags (for ``category_diversity``).

    Raises:
        ValueError: Lists, sessions and histories differ in number, or are empty.
    """
    _check_k(n)
    if not (len(lists) == len(sessions) == len(histories)):
        raise ValueError(
            f"{len(lists)} lists, {len(sessions)} sessions, {len(histories)} histories: pass "
            "one of each per user"
        )
    cut = _cut(lists, n)
    targets = [frozenset(s) for s in sessions]
    out: dict[str, Any] = {
        f"recall@{n}": recall_at_k(cut, targets, n),
        f"ndcg@{n}": ndcg_at_k(cut, targets, n),
    }
    if first_code is not None:
        out["sid_diversity"] = sid_diversity(cut, first_code, n)
    if tags is not None:
        out["category_diversity"] = category_diversity(cut, tags, n)
    out["repeat_rate"] = repeat_rate(cut, histories, n)
    out["users"] = len(cut)
    out["n"] = n
    return out


def paired_lists(
    base: Sequence[Sequence[str | None]],
    other: Sequence[Sequence[str | None]],
    sessions: Sequence[Collection[str]],
    n: int,
    *,
    first_code: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """``other``'s lists against ``base``'s on the same users, user by user: set Recall@N and
    (with ``first_code``) SID diversity, each as :func:`recllm.eval.metrics.paired_values`
    (mean difference, 95% interval, p), plus the users whose set recall rose and fell.

    Raises:
        ValueError: The lists and sessions differ in number, or are empty.
    """
    from recllm.eval.metrics import paired_values

    _check_k(n)
    if not (len(base) == len(other) == len(sessions)) or not sessions:
        raise ValueError(
            f"{len(base)} and {len(other)} lists for {len(sessions)} sessions: pass one list "
            "of each row per user"
        )
    targets = [frozenset(t) for t in sessions]

    def recall(lists: Sequence[Sequence[str | None]]) -> list[float]:
        return [recall_at_k([row], [t], n) for row, t in zip(_cut(lists, n), targets, strict=True)]

    b, o = recall(base), recall(other)
    out: dict[str, Any] = {
        f"recall@{n}": paired_values(b, o),
        "users_gained": sum(y > x for x, y in zip(b, o, strict=True)),
        "users_lost": sum(y < x for x, y in zip(b, o, strict=True)),
    }
    if first_code is not None:

        def spread(lists: Sequence[Sequence[str | None]]) -> list[float]:
            return [sid_diversity([row], first_code, n) for row in lists]

        out["sid_diversity"] = paired_values(spread(base), spread(other))
    return out
