"""List metrics (recllm.eval.lists) on hand-computed cases."""

from __future__ import annotations

import math

import pytest

from recllm.eval.lists import category_diversity, list_metrics, repeat_rate, sid_diversity

# user 1: the session repeats b; the list repeats b and holds a at rank 4
# user 2: the list holds the whole session at the top
LISTS = [["b", "x", "b", "a", "y"], ["q", "p", "r", "s", "t"]]
SESSIONS = [["a", "b", "b", "c"], ["p", "q"]]
HISTORIES = [["b", "z"], ["q", "r", "q"]]
FIRST_CODE = {"a": 0, "b": 0, "c": 5, "x": 1, "y": 2, "p": 3, "q": 3, "r": 3, "s": 4}
TAGS = {"b": ["Comedy", "Drama"], "x": ["Comedy"], "a": ["Horror"], "y": []}


def test_set_recall_and_ndcg_by_hand():
    got = list_metrics(LISTS, SESSIONS, HISTORIES, 5)
    # user 1: 2 of the 3 distinct session items (b at 1, a at 4; b's repeat gains nothing)
    dcg1 = 1 / math.log2(2) + 1 / math.log2(5)
    idcg1 = 1 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)  # min(5, 3) ideal hits
    assert got["recall@5"] == pytest.approx((2 / 3 + 1.0) / 2)
    assert got["ndcg@5"] == pytest.approx((dcg1 / idcg1 + 1.0) / 2)
    assert dcg1 / idcg1 == pytest.approx(0.671386, abs=1e-6)
    assert got["users"] == 2 and got["n"] == 5


def test_positions_matter_for_ndcg_not_recall():
    late = list_metrics([["x", "y", "z", "p", "q"]], [["p", "q"]], [[]], 5)
    early = list_metrics([["p", "q", "x", "y", "z"]], [["p", "q"]], [[]], 5)
    assert late["recall@5"] == early["recall@5"] == 1.0
    assert early["ndcg@5"] == 1.0
    ideal = 1 + 1 / math.log2(3)
    assert late["ndcg@5"] == pytest.approx((1 / math.log2(5) + 1 / math.log2(6)) / ideal)


def test_lists_are_cut_to_n():
    got = list_metrics([["x", "y", "p"]], [["p"]], [[]], 2)
    assert got["recall@2"] == 0.0 and got["ndcg@2"] == 0.0


def test_sid_diversity_by_hand():
    # user 1: codes {0, 1, 2} (b twice, a shares b's code): 3/5; user 2: {3, 4}, t has no code
    assert sid_diversity(LISTS, FIRST_CODE, 5) == pytest.approx((3 / 5 + 2 / 5) / 2)
    assert sid_diversity([["a", "b"]], FIRST_CODE, 2) == 0.5  # one cluster


def test_category_diversity_by_hand():
    # user 1: Comedy, Drama, Horror = 3/5; user 2: no tagged item
    assert category_diversity(LISTS, TAGS, 5) == pytest.approx((3 / 5 + 0) / 2)
    # several tags per item: may exceed 1
    assert category_diversity([["b"]], TAGS, 1) == 2.0


def test_repeat_rate_by_hand():
    # user 1: b fills 2 of 5 slots and is in the history; user 2: q and r, 2 of 5
    assert repeat_rate(LISTS, HISTORIES, 5) == pytest.approx(0.4)
    assert repeat_rate([["n1", "n2"]], [["o1"]], 2) == 0.0


def test_list_metrics_all_keys():
    got = list_metrics(LISTS, SESSIONS, HISTORIES, 5, first_code=FIRST_CODE, tags=TAGS)
    assert got["sid_diversity"] == pytest.approx(0.5)
    assert got["category_diversity"] == pytest.approx(0.3)
    assert got["repeat_rate"] == pytest.approx(0.4)
    assert "sid_diversity" not in list_metrics(LISTS, SESSIONS, HISTORIES, 5)


def test_list_metrics_refuses_mismatch():
    with pytest.raises(ValueError, match="one of each per user"):
        list_metrics(LISTS, SESSIONS[:1], HISTORIES, 5)
    with pytest.raises(ValueError, match="k must be"):
        list_metrics(LISTS, SESSIONS, HISTORIES, 0)


def test_paired_lists_by_hand():
    """User by user: set recall 1/2 -> 1 (+.5), 0 -> 0, 1/2 -> 0 (-.5); SID codes 1 -> 2 (+.5
    of N = 2) for every user."""
    import math

    from recllm.eval.lists import paired_lists

    sessions = [{"a", "b"}, {"c"}, {"d", "e"}]
    base = [["a", "x"], ["x", "y"], ["d", "x"]]
    other = [["a", "b"], ["y", "z"], ["z", "y"]]
    code = {"a": 0, "b": 1, "c": 0, "d": 0, "e": 0, "x": 0, "y": 1, "z": 0}
    got = paired_lists(base, other, sessions, 2, first_code=code)
    r = got["recall@2"]
    assert r["delta"] == 0.0 and r["ci95"][0] < 0 < r["ci95"][1] and r["p"] == 1.0
    assert (got["users_gained"], got["users_lost"]) == (1, 1)
    # sid diversity per user: base 1/2, 1, 1/2 -> other 1, 1, 1: differences .5, 0, .5
    d = got["sid_diversity"]
    se = math.sqrt(((0.5 - 1 / 3) ** 2 * 2 + (1 / 3) ** 2) / 2) / math.sqrt(3)
    assert d["delta"] == pytest.approx(1 / 3, abs=1e-5)
    assert d["ci95"] == pytest.approx([1 / 3 - 1.96 * se, 1 / 3 + 1.96 * se], abs=1e-5)
    assert d["p"] == pytest.approx(math.erfc((1 / 3) / se / math.sqrt(2)), rel=1e-2)
    # the control: a row against itself moves nothing
    same = paired_lists(base, base, sessions, 2, first_code=code)
    assert same["recall@2"]["delta"] == 0.0 and same["users_gained"] == same["users_lost"] == 0
    with pytest.raises(ValueError, match="one list"):
        paired_lists(base, other[:2], sessions, 2)
