"""Collaborative signal: exact pairs, and no valid/test leakage."""

from __future__ import annotations

import numpy as np

from recllm.data import Interactions, leave_one_out
from recllm.sid.collab import collaborative_embeddings, cooccurrence_matrix, cooccurrence_pairs


def test_pairs_exact():
    inter = Interactions({"u": ["a", "b", "a", "c"], "v": ["c", "b"]})
    index = {"a": 0, "b": 1, "c": 2}
    pairs = cooccurrence_pairs(inter, index, window=2)
    # gap 1: (a,b) (b,a) (a,c) ; gap 2: (a,a) dropped, (b,c) ; then v: (c,b)
    assert pairs.tolist() == [[0, 1], [1, 0], [0, 2], [1, 2], [2, 1]]
    m = cooccurrence_matrix(inter, index, window=2).toarray()
    assert m.tolist() == [[0, 2, 1], [2, 0, 2], [1, 2, 0]]


def test_no_valid_or_test_leakage():
    rng = np.random.default_rng(0)
    items = [f"i{k}" for k in range(60)]
    seqs = {f"u{k}": list(rng.choice(items, size=12, replace=False)) for k in range(200)}
    altered = {
        u: [*s[:-2], s[-1], s[-2]] if k % 2 else [*s[:-2], "i0", "i1"]
        for k, (u, s) in enumerate(seqs.items())
    }
    a = collaborative_embeddings(leave_one_out(Interactions(seqs)).train, items, dim=8)
    b = collaborative_embeddings(leave_one_out(Interactions(altered)).train, items, dim=8)
    assert np.array_equal(a, b)  # held-out targets changed; embeddings did not
    full = collaborative_embeddings(Interactions(seqs), items, dim=8)
    assert not np.array_equal(a, full)  # ...while the full sequences would change them


def test_cold_items_get_zero_rows():
    inter = Interactions({"u": ["a", "b", "c", "a"], "v": ["b", "c", "b"]})
    emb = collaborative_embeddings(inter, ["a", "b", "c", "cold"], dim=2)
    assert emb.shape == (4, 2)
    assert np.all(emb[3] == 0)
    assert np.allclose(np.linalg.norm(emb[:3], axis=1), 1.0)
