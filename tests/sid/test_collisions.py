"""Collision counting and resolution: unique results, and only colliding items move."""

from __future__ import annotations

import numpy as np
import pytest

from recllm.sid.collisions import (
    add_extra_level,
    collision_groups,
    count_collisions,
    reassign_collisions,
    resolve_collisions,
)
from recllm.sid.quantize import QuantizeResult, rq_kmeans


def test_count_collisions_exact():
    codes = np.array([[0, 1], [0, 1], [2, 3], [0, 1], [2, 3], [4, 4]])
    r = count_collisions(codes)
    assert (
        r.items,
        r.unique_codes,
        r.collisions,
        r.colliding_items,
        r.groups,
        r.largest_group,
    ) == (6, 3, 3, 5, 2, 3)
    assert [g.tolist() for g in collision_groups(codes)] == [[0, 1, 3], [2, 4]]


def test_extra_level_exact():
    codes = np.array([[0, 1], [0, 1], [2, 3], [0, 1]])
    out, size = add_extra_level(codes)
    assert out.tolist() == [[0, 1, 0], [0, 1, 1], [2, 3, 0], [0, 1, 2]]
    assert size == 3
    codes2, sizes, moved = resolve_collisions(
        QuantizeResult(codes, (3, 4), [], np.zeros((4, 1), np.float32), []), "extra-level"
    )
    assert sizes == (3, 4, 3) and moved == 2 and np.array_equal(codes2, out)


def _result(codes, last_input, last_book, sizes):
    books = [np.eye(sizes[0], dtype=np.float32)] * (len(sizes) - 1) + [
        np.asarray(last_book, np.float32)
    ]
    return QuantizeResult(
        np.asarray(codes), tuple(sizes), books, np.asarray(last_input, np.float32), []
    )


def test_reassign_moves_only_colliding_items_to_nearest_free_code():
    # last-level code vectors on a line at 0, 1, 2, 3
    book = [[0.0], [1.0], [2.0], [3.0]]
    codes = [[0, 0], [0, 0], [0, 0], [1, 2], [0, 3]]
    # items 0..2 share (0, 0); item 1 is nearest to code 0 -> keeps it
    last_input = [[0.4], [0.1], [2.9], [2.0], [3.0]]
    res = _result(codes, last_input, book, (2, 4))
    out, moved = reassign_collisions(res)
    assert moved == 2
    # item 0 (at 0.4): nearest free under prefix 0 is code 1; item 2 (at 2.9): code 3 is taken
    # by item 4, so code 2
    assert out.tolist() == [[0, 1], [0, 0], [0, 2], [1, 2], [0, 3]]
    assert count_collisions(out).collisions == 0


def test_reassign_falls_back_to_another_prefix_when_full():
    book = [[0.0], [1.0]]
    codes = [[0, 0], [0, 1], [0, 1]]  # prefix 0 holds both last-level codes already
    res = _result(codes, [[0.0], [1.0], [0.9]], book, (2, 2))
    out, moved = reassign_collisions(res)
    assert moved == 1
    assert out.tolist() == [[0, 0], [0, 1], [1, 1]]


def test_reassign_impossible():
    res = _result([[0, 0]] * 5, np.zeros((5, 1)), [[0.0], [1.0]], (2, 2))
    with pytest.raises(ValueError, match=r"5 items cannot get unique codes from \(2, 2\).*Fix"):
        reassign_collisions(res)


def test_reassign_on_real_quantizer_output():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 8)).astype(np.float32)
    res = rq_kmeans(x, levels=2, codebook_size=64, seed=0, niter=5)
    before = count_collisions(res.codes)
    assert before.collisions > 0
    out, moved = reassign_collisions(res)
    assert moved == before.collisions
    assert count_collisions(out).collisions == 0
    colliding = np.zeros(len(x), bool)
    for g in collision_groups(res.codes):
        colliding[g] = True
    changed = (out != res.codes).any(1)
    assert not changed[~colliding].any()  # non-colliding items never move
    assert changed.sum() == moved
