"""Shared pieces of the decode tests: random SID code sets and a brute-force allowed-set oracle."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from hypothesis import strategies as st

from recllm.vocab.format import SIDTokenIds


@st.composite
def code_sets(
    draw: st.DrawFn, max_levels: int = 4, max_size: int = 16, max_items: int = 200
) -> tuple[tuple[int, ...], list[tuple[int, ...]]]:
    """Codebook sizes (1-``max_levels`` levels of 2-``max_size`` codes) and 1-``max_items``
    unique code tuples with many shared prefixes (codes skewed towards a few values per level)."""
    levels = draw(st.integers(1, max_levels))
    sizes = tuple(draw(st.integers(2, max_size)) for _ in range(levels))
    n = draw(st.integers(1, max_items))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    rows = []
    for k in sizes:
        # Geometric-like weights: the first codes of a level carry most of the mass, so many
        # items share prefixes, while every code stays possible.
        weights = rng.dirichlet(np.full(k, 0.3))
        rows.append(rng.choice(k, size=4 * n, p=weights))
    codes = np.stack(rows, axis=1)
    unique = list(dict.fromkeys(tuple(int(c) for c in row) for row in codes))[:n]
    return sizes, unique


def brute_allowed(
    seq: Sequence[int],
    codes: Sequence[tuple[int, ...]],
    ids: SIDTokenIds,
    vocab_size: int,
    *,
    sid_only: bool = False,
    stop_token_id: int | None = None,
) -> set[int]:
    """The tokens that may follow ``seq``, by a left-to-right scan of the whole sequence.

    The sequences the tests feed are reachable under the constraint, so any span is a catalog
    prefix of at most ``L`` codes.
    """
    levels = ids.levels
    in_span, prefix = False, []
    for tok in seq:
        if tok == ids.begin_id:
            in_span, prefix = True, []
        elif tok == ids.end_id:
            in_span = False
        elif in_span:
            level_code = ids.level_code(tok)
            assert level_code is not None and level_code[0] == len(prefix), (seq, tok)
            prefix.append(level_code[1])
    if in_span:
        depth = len(prefix)
        assert depth <= levels
        if depth == levels:
            return {ids.end_id}
        return {ids.code_id(depth, c[depth]) for c in codes if list(c[:depth]) == prefix}
    if not sid_only:
        return set(range(vocab_size))
    last = seq[-1] if seq else None
    prev = seq[-2] if len(seq) > 1 else None
    if last == ids.end_id or (last == stop_token_id and prev == ids.end_id):
        return {stop_token_id}
    return {ids.begin_id}
