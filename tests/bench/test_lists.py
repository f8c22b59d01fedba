"""recllm.bench.lists helpers: full histories for the repeat rate, category tags, the table,
the settings' checks."""

from __future__ import annotations

import pytest

from recllm.bench.lists import (
    ListsSettings,
    category_tags,
    choose_penalty,
    full_histories,
    table,
)
from recllm.data import Catalog, Interactions
from recllm.data.splits import next_session_split
from recllm.errors import UserError


def test_full_histories_are_train_plus_validation_session():
    seqs = {"a": [f"a{k}" for k in range(30)], "b": [f"b{k}" for k in range(5)]}
    split = next_session_split(Interactions(seqs), session_length=2, max_history=3)
    got = full_histories(split, split.test_sessions)
    assert got == [[f"a{k}" for k in range(28)], [f"b{k}" for k in range(3)]]
    assert split.test_sessions[0].history == ("a25", "a26", "a27")  # the prompt is cut, not these


def test_category_tags_of_a_genre_field_and_none_without_one():
    genres = ["Comedy Drama", "Horror", "Comedy", "Drama Horror", "Action", "Action Comedy"]
    items = {str(k): {"title": f"t{k}", "class": g} for k, g in enumerate(genres)}
    field, tags = category_tags(Catalog(items, ("title", "class")))
    assert field == "class" and tags["0"] == ["Comedy", "Drama"] and tags["1"] == ["Horror"]
    plain = {str(k): {"title": f"some product {k}"} for k in range(4)}
    assert category_tags(Catalog(plain, ("title",))) == (None, None)


def test_table_shows_every_row():
    text = table({"popularity": {"recall@5": 0.1, "sid_diversity": 0.4, "note": "x"}}, 5)
    assert "| set R@5 |" in text and "| popularity | 0.1" in text


def test_settings_refuse_what_cannot_run(tmp_path):
    with pytest.raises(UserError, match="--beams"):
        ListsSettings("chat", tmp_path / "c.yaml", tmp_path, n=5, beams=4)
    with pytest.raises(UserError, match="--session-weight"):
        ListsSettings("chat", tmp_path / "c.yaml", tmp_path, session_weight=0)
    with pytest.raises(UserError, match="--kind"):
        ListsSettings("other", tmp_path / "c.yaml", tmp_path)
    with pytest.raises(UserError, match="--penalties"):
        ListsSettings("chat", tmp_path / "c.yaml", tmp_path, penalties=(1.0, 0.0))


def test_choose_penalty_takes_the_most_recall_at_the_next_item_diversity_or_more():
    """The goal's rule: among penalties whose slates are at least as diverse as the next-item
    model's top N (floor), the most set recall; the more recall of a less diverse penalty does
    not count; no penalty reaching the floor: the most diverse one; ties: the smaller."""
    tried = {
        0.0: {"recall@5": 0.30, "sid_diversity": 0.40},  # the most recall, below the floor
        1.0: {"recall@5": 0.22, "sid_diversity": 0.70},
        2.0: {"recall@5": 0.25, "sid_diversity": 0.80},
        4.0: {"recall@5": 0.25, "sid_diversity": 0.95},
    }
    assert choose_penalty(tried, floor=0.7, n=5) == 2.0
    assert choose_penalty(tried, floor=0.3, n=5) == 0.0
    assert choose_penalty(tried, floor=0.99, n=5) == 4.0
