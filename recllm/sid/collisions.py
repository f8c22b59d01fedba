"""Collisions: items that share a full code. Counted, then resolved so every item is unique.

Two strategies:

- ``extra-level`` (TIGER): append one level that numbers the items inside each collision group
  (0, 1, 2, ...); non-colliding items get 0. Adds one token per SID.
- ``reassign``: in each group the item nearest to the shared code keeps it; every other item
  moves to the nearest free code that differs only at the last level. Keeps the SID length.
  If every last-level code under a prefix is taken, the item falls back to the nearest free code
  under the next-nearest prefix (changing the last two levels), and so on up the levels.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from recllm.errors import UserError
from recllm.sid.quantize import QuantizeResult, sq_distances

logger = logging.getLogger(__name__)

STRATEGIES = ("reassign", "extra-level")


@dataclass(frozen=True)
class CollisionReport:
    """Collision counts of a code matrix.

    Attributes:
        items: Number of items.
        unique_codes: Number of distinct full codes.
        collisions: ``items - unique_codes`` (items that would have to move for uniqueness).
        colliding_items: Items in a group of size >= 2.
        groups: Number of codes shared by >= 2 items.
        largest_group: Size of the largest group (1 when all codes are unique).
    """

    items: int
    unique_codes: int
    collisions: int
    colliding_items: int
    groups: int
    largest_group: int


def collision_groups(codes: np.ndarray) -> list[np.ndarray]:
    """Groups of item indices sharing a full code (only groups of size >= 2), each sorted,
    ordered by their first item."""
    _, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    shared = np.flatnonzero(counts > 1)
    if len(shared) == 0:
        return []
    order = np.argsort(inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)])
    groups = [order[starts[g] : starts[g + 1]] for g in shared]
    return sorted(groups, key=lambda g: int(g[0]))


def count_collisions(codes: np.ndarray) -> CollisionReport:
    """Count how many items share full codes."""
    n = len(codes)
    _, counts = np.unique(codes, axis=0, return_counts=True)
    shared = counts[counts > 1]
    return CollisionReport(
        items=n,
        unique_codes=len(counts),
        collisions=n - len(counts),
        colliding_items=int(shared.sum()),
        groups=len(shared),
        largest_group=int(counts.max()) if n else 0,
    )


def add_extra_level(codes: np.ndarray) -> tuple[np.ndarray, int]:
    """TIGER's disambiguation: a new last level numbering items within each collision group.

    Returns:
        ``(codes (N, L+1), size of the new level)``; the size is the largest group (>= 1).
    """
    extra = np.zeros(len(codes), dtype=codes.dtype)
    for group in collision_groups(codes):
        extra[group] = np.arange(len(group))
    return np.concatenate([codes, extra[:, None]], axis=1), int(extra.max()) + 1


def reassign_collisions(result: QuantizeResult) -> tuple[np.ndarray, int]:
    """Move all but one item of every collision group to its nearest free code.

    The item whose last-level input is nearest to the shared last-level code keeps the code
    (ties: lower index). Others, in item order, take the nearest free last-level code under the
    same prefix, measured from their own last-level input; when that prefix is full they search
    the other prefixes that differ only at the second-to-last level, nearest first (and so on).

    Returns:
        ``(codes (N, L), number of items moved)``.

    Raises:
        UserError: There are more items than codes (no unique assignment exists).
    """
    codes = result.codes.copy()
    total = int(np.prod(np.asarray(result.codebook_sizes, dtype=np.float64)))
    if len(codes) > total:
        raise UserError(
            "SID config (codebook size, levels)",
            f"{len(codes)} items cannot get unique codes from {result.codebook_sizes} "
            f"({total} codes)",
            "raise the codebook size or the levels, or use --collisions extra-level",
        )
    groups = collision_groups(codes)
    if not groups:
        return codes, 0
    last = result.codebooks[-1]
    taken = {tuple(c) for c in codes.tolist()}
    movers: list[int] = []
    for group in groups:
        shared = codes[group[0], -1]
        d = ((result.last_input[group] - last[shared]) ** 2).sum(1)
        keeper = group[int(np.argmin(d))]
        movers.extend(int(i) for i in group if i != keeper)
    movers.sort()
    # free last-level codes under each prefix, built lazily
    used_under: dict[tuple[int, ...], set[int]] = defaultdict(set)
    for c in taken:
        used_under[c[:-1]].add(c[-1])
    dist = sq_distances(result.last_input[movers], last)  # (movers, K_last)
    for row, item in zip(dist, movers, strict=True):
        prefix = tuple(codes[item, :-1].tolist())
        placed = _place(prefix, row, used_under, result)
        if placed is None:
            raise UserError(
                "SID config (codebook size)",
                f"no free code left for item index {item} under its prefix {prefix}",
                "raise the codebook size, or use --collisions extra-level",
            )
        used_under[placed[:-1]].add(placed[-1])
        codes[item] = placed
    return codes, len(movers)


def _place(
    prefix: tuple[int, ...],
    last_dist: np.ndarray,
    used_under: dict[tuple[int, ...], set[int]],
    result: QuantizeResult,
) -> tuple[int, ...] | None:
    """Nearest free full code: first under ``prefix``, then under prefixes that change only the
    deepest possible level, nearest code vector first."""
    order = np.argsort(last_dist, kind="stable")
    for depth in range(len(prefix), -1, -1):
        # prefixes agreeing with `prefix` on its first `depth` levels, level `depth` varying
        if depth == len(prefix):
            candidates = [prefix]
        else:
            book = result.codebooks[depth]
            here = book[prefix[depth]]
            alt = np.argsort(((book - here) ** 2).sum(1), kind="stable")
            candidates = [(*prefix[:depth], int(a), *prefix[depth + 1 :]) for a in alt[1:]]
        for cand in candidates:
            used = used_under.get(cand, ())
            if len(used) >= len(last_dist):
                continue
            for code in order:
                if int(code) not in used:
                    return (*cand, int(code))
    return None


def resolve_collisions(
    result: QuantizeResult, strategy: str = "reassign"
) -> tuple[np.ndarray, tuple[int, ...], int]:
    """Make every item's code unique.

    Args:
        result: The quantizer output.
        strategy: ``"reassign"`` or ``"extra-level"``.

    Returns:
        ``(codes, codebook_sizes, items moved or disambiguated)``.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"--collisions {strategy!r} is not one of {STRATEGIES}")
    if strategy == "extra-level":
        codes, size = add_extra_level(result.codes)
        moved = int((codes[:, -1] > 0).sum())
        return codes, (*result.codebook_sizes, size), moved
    codes, moved = reassign_collisions(result)
    return codes, result.codebook_sizes, moved
