"""The next-session split: exact parts, sizes, no overlap, short users counted and trained on."""

from __future__ import annotations

import logging

import pytest

from recllm.data import DataConfig, Example, Interactions
from recllm.data.splits import SessionExample, next_session_split, split_dataset
from recllm.data.types import Catalog, RecDataset
from recllm.errors import UserError


def test_next_session_split_exact(caplog):
    seqs = {
        "a": [f"a{k}" for k in range(9)],  # 9 = 2 * 3 + 3 training items
        "b": [f"b{k}" for k in range(7)],  # 7 = 2 * 3 + 1: the shortest that splits
        "c": [f"c{k}" for k in range(6)],  # too short to score: trains whole
        "d": ["d0"],  # too short to score: trains whole
    }
    with caplog.at_level(logging.WARNING):
        split = next_session_split(Interactions(seqs), session_length=3, max_history=2)
    assert "2 users with fewer than 7 interactions (1 training item + 2 sessions of 3)" in (
        caplog.text
    )
    assert split.skipped_users == 2 and split.kind == "session" and split.session_length == 3
    assert split.train.sequences == {
        "a": ["a0", "a1", "a2"],
        "b": ["b0"],
        "c": seqs["c"],
        "d": ["d0"],
    }
    assert {s.user_id for s in split.valid_sessions + split.test_sessions} == {"a", "b"}
    assert split.valid_sessions == [
        SessionExample("a", ("a1", "a2"), ("a3", "a4", "a5")),
        SessionExample("b", ("b0",), ("b1", "b2", "b3")),
    ]
    assert split.test_sessions == [
        SessionExample("a", ("a4", "a5"), ("a6", "a7", "a8")),
        SessionExample("b", ("b2", "b3"), ("b4", "b5", "b6")),
    ]
    # the next-item views: each session's first item
    assert split.valid == [Example("a", ("a1", "a2"), "a3"), Example("b", ("b0",), "b1")]
    assert split.test == [Example("a", ("a4", "a5"), "a6"), Example("b", ("b2", "b3"), "b4")]


def test_next_session_split_sizes_and_no_overlap():
    seqs = {f"u{u}": [f"u{u}_{k}" for k in range(5 + u)] for u in range(20)}
    split = next_session_split(Interactions(seqs), session_length=5, max_history=None)
    kept = [u for u, s in seqs.items() if len(s) >= 11]
    assert split.skipped_users == 20 - len(kept) == 6
    for u, seq in seqs.items():  # the users too short to score train on everything
        if u not in kept:
            assert split.train.sequences[u] == seq
    assert len(split.valid_sessions) == len(split.test_sessions) == len(kept)
    for v, t in zip(split.valid_sessions, split.test_sessions, strict=True):
        seq = seqs[v.user_id]
        train = split.train.sequences[v.user_id]
        assert len(v.session) == len(t.session) == 5
        assert len(train) == len(seq) - 10
        assert not set(train) & set(v.session) and not set(train) & set(t.session)
        assert not set(v.session) & set(t.session)
        assert list(train) + list(v.session) + list(t.session) == seq  # nothing lost
        assert t.history == tuple(seq[:-5]) and v.history == tuple(train)


def test_next_session_split_keeps_timestamps():
    inter = Interactions({"a": ["1", "2", "3", "4"]}, {"a": [1.0, 2.0, 3.0, 4.0]})
    split = next_session_split(inter, session_length=1)
    assert split.train.timestamps == {"a": [1.0, 2.0]}
    assert split.test_sessions == [SessionExample("a", ("1", "2", "3"), ("4",))]


def test_next_session_split_rejects_bad_length():
    with pytest.raises(UserError, match="--split_session_length"):
        next_session_split(Interactions({"a": ["1"]}), session_length=0)
    with pytest.raises(UserError, match="--split_session_length"):
        DataConfig(split="session", split_session_length=0)


def test_split_dataset_session():
    seqs = {u: [f"{u}{k}" for k in range(8)] for u in "ab"}
    items = {i: {"title": i} for s in seqs.values() for i in s}
    dataset = RecDataset("toy", Catalog(items, ("title",)), Interactions(seqs))
    split = split_dataset(dataset, DataConfig(split="session", split_session_length=2))
    assert split.kind == "session"
    assert split.train.sequences == {u: [f"{u}{k}" for k in range(4)] for u in "ab"}
    assert [s.session for s in split.test_sessions] == [("a6", "a7"), ("b6", "b7")]
