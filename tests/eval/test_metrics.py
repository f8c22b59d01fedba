"""Ranking metrics against hand-computed values, edge cases and error messages."""

from __future__ import annotations

import json
import math

import pytest

from recllm.data import Catalog
from recllm.eval.metrics import (
    RankingMetrics,
    coverage,
    invalid_rate,
    ndcg_at_k,
    plot_recall,
    recall_at_k,
    save_metrics,
)

CATALOG = ["a", "b", "c", "d", "e", "f", "g", "h"]


@pytest.mark.parametrize(
    ("ranked", "k", "recall", "ndcg"),
    [
        (["t", "a", "b"], 5, 1.0, 1.0),  # rank 1
        (["a", "t", "b"], 5, 1.0, 1 / math.log2(3)),  # rank 2: 0.6309...
        (["a", "b", "t"], 5, 1.0, 0.5),  # rank 3: 1/log2(4)
        (["a", "b", "t"], 2, 0.0, 0.0),  # rank 3 is outside K=2
        (["a", "b", "t"], 3, 1.0, 0.5),  # K = rank: inside
        (["a", "b", "c"], 5, 0.0, 0.0),  # not in the list
        ([], 5, 0.0, 0.0),  # empty list
        (["a", "t"], 100, 1.0, 1 / math.log2(3)),  # K larger than the list
        ([None, "zz", "t"], 5, 1.0, 0.5),  # invalid entries keep their slots
        (["a", "a", "t"], 5, 1.0, 0.5),  # a duplicate keeps its slot
        (["a", "t", "t"], 5, 1.0, 1 / math.log2(3)),  # a repeated target gains once
    ],
)
def test_single_target_hand_computed(ranked, k, recall, ndcg):
    assert recall_at_k([ranked], ["t"], k) == recall
    assert ndcg_at_k([ranked], ["t"], k) == pytest.approx(ndcg, abs=1e-12)


def test_averaged_over_users():
    lists = [["t", "x"], ["x", "y", "t"], ["x"], ["y", "t"]]
    assert recall_at_k(lists, ["t"] * 4, 2) == 0.5
    assert ndcg_at_k(lists, ["t"] * 4, 2) == pytest.approx((1 + 0 + 0 + 1 / math.log2(3)) / 4)
    assert recall_at_k(lists, ["t"] * 4, 3) == 0.75
    assert ndcg_at_k(lists, ["t"] * 4, 3) == pytest.approx((1 + 0.5 + 0 + 1 / math.log2(3)) / 4)


def test_set_of_targets():
    # relevant {a, b}; a at rank 2, b at rank 3.
    ranked = [["x", "a", "b", "y"]]
    assert recall_at_k(ranked, [{"a", "b"}], 2) == 0.5
    assert recall_at_k(ranked, [{"a", "b"}], 4) == 1.0
    idcg = 1 + 1 / math.log2(3)
    assert ndcg_at_k(ranked, [{"a", "b"}], 4) == pytest.approx((1 / math.log2(3) + 0.5) / idcg)
    # K=1: the ideal is a single hit at rank 1, the list has none in the top 1.
    assert ndcg_at_k(ranked, [{"a", "b"}], 1) == 0.0
    # A singleton set is the single-target case.
    assert ndcg_at_k(ranked, [{"b"}], 4) == ndcg_at_k(ranked, ["b"], 4) == 0.5
    assert ndcg_at_k([["x", "y", "z", "b"]], [{"b"}], 4) == pytest.approx(1 / math.log2(5))
    # Both relevant items at the top: perfect.
    assert ndcg_at_k([["b", "a", "x"]], [["a", "b"]], 10) == pytest.approx(1.0)


def test_invalid_rate_and_coverage():
    lists = [["a", None, "zz"], ["a", "b", "c", "d"], []]
    assert invalid_rate(lists, CATALOG) == 2 / 7
    assert invalid_rate(lists, CATALOG, k=1) == 0.0
    assert invalid_rate(lists, CATALOG, k=2) == 1 / 4
    assert invalid_rate([[], []], CATALOG) == 0.0
    assert coverage(lists, CATALOG) == 4 / 8
    assert coverage(lists, CATALOG, k=1) == 1 / 8
    assert coverage(lists, CATALOG, k=2) == 2 / 8
    catalog = Catalog({i: {} for i in CATALOG})  # a real Catalog works as well
    assert invalid_rate(lists, catalog) == 2 / 7 and coverage(lists, catalog) == 0.5


def test_accumulator_matches_functions_and_hand_values():
    users = [
        (["a", "b", "c"], "a"),  # rank 1
        (["b", "c", "a"], "a"),  # rank 3
        (["zz", None, "e", "f"], "e"),  # rank 3 after two invalid entries
        (["d", "d", "g"], "h"),  # miss, with a duplicate
        ([], "b"),  # nothing returned
    ]
    m = RankingMetrics(CATALOG)
    for ranked, target in users:
        m.add(ranked, target)
    got = m.compute(ks=(10, 1, 3, 3))  # order and duplicates of ks do not matter
    assert list(got) == [
        "recall@1",
        "ndcg@1",
        "recall@3",
        "ndcg@3",
        "recall@10",
        "ndcg@10",
        "coverage@1",
        "coverage@3",
        "coverage@10",
        "invalid_rate",
        "coverage",
        "users",
    ]
    assert got["recall@1"] == 1 / 5 and got["ndcg@1"] == 1 / 5
    assert got["recall@3"] == 3 / 5
    assert got["ndcg@3"] == pytest.approx((1 + 0.5 + 0.5) / 5)
    assert got["recall@10"] == got["recall@3"] and got["ndcg@10"] == got["ndcg@3"]
    # 13 entries, 2 invalid; items shown: a b c e f d g (7 of 8); at position 1: a, b, d;
    # within the top 3 all but f (position 4).
    assert got["invalid_rate"] == 2 / 13
    assert got["coverage"] == 7 / 8
    assert got["coverage@1"] == 3 / 8 and got["coverage@3"] == 6 / 8
    assert got["users"] == 5 and len(m) == 5
    lists, targets = [u[0] for u in users], [u[1] for u in users]
    for k in (1, 3, 10):
        assert got[f"recall@{k}"] == pytest.approx(recall_at_k(lists, targets, k))
        assert got[f"ndcg@{k}"] == pytest.approx(ndcg_at_k(lists, targets, k))
        assert got[f"coverage@{k}"] == coverage(lists, CATALOG, k)
    assert got["invalid_rate"] == invalid_rate(lists, CATALOG)


def test_accumulator_set_targets():
    m = RankingMetrics(CATALOG)
    m.add(["x", "a", "b", "y"], {"a", "b"})
    got = m.compute(ks=(4,))
    assert got["recall@4"] == 1.0
    assert got["ndcg@4"] == pytest.approx((1 / math.log2(3) + 0.5) / (1 + 1 / math.log2(3)))


@pytest.mark.parametrize("k", [0, -3])
def test_nonpositive_k_is_refused(k):
    with pytest.raises(ValueError, match=f"k must be a positive integer \\(K >= 1\\), got {k}"):
        recall_at_k([["a"]], ["a"], k)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        ndcg_at_k([["a"]], ["a"], k)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        coverage([["a"]], CATALOG, k)
    m = RankingMetrics(CATALOG)
    m.add(["a"], "a")
    with pytest.raises(ValueError, match="k must be a positive integer"):
        m.compute(ks=(5, k))


@pytest.mark.parametrize("k", [2.0, True, "5", None])
def test_non_int_k_is_refused(k):
    with pytest.raises(TypeError, match="k must be a positive integer, got"):
        recall_at_k([["a"]], ["a"], k)


def test_bad_input_messages():
    with pytest.raises(ValueError, match="2 ranked lists but 1 targets"):
        recall_at_k([["a"], ["b"]], ["a"], 5)
    with pytest.raises(ValueError, match="no users to evaluate"):
        ndcg_at_k([], [], 5)
    with pytest.raises(TypeError, match="wrap a single recommendation in a list"):
        recall_at_k(["ab"], ["a"], 5)
    with pytest.raises(TypeError, match="one target per user, not one string"):
        recall_at_k([["a"]], "a", 5)
    with pytest.raises(ValueError, match="the target set is empty"):
        ndcg_at_k([["a"]], [set()], 5)
    with pytest.raises(ValueError, match="target is None"):
        ndcg_at_k([["a"]], [None], 5)
    with pytest.raises(ValueError, match="non-empty catalog"):
        RankingMetrics([])
    with pytest.raises(ValueError, match="no users were added"):
        RankingMetrics(CATALOG).compute()
    with pytest.raises(ValueError, match="ks is empty"):
        m = RankingMetrics(CATALOG)
        m.add(["a"], "a")
        m.compute(ks=())


def test_save_metrics_json(tmp_path):
    m = RankingMetrics(CATALOG)
    m.add(["a", "b"], "b")
    figures = m.compute(ks=(1, 2))
    path = save_metrics(
        tmp_path / "out" / "metrics.json", figures, {"beam": 20}, dataset="toy", split="test"
    )
    doc = json.loads(path.read_text())
    assert doc["metrics"] == figures
    assert doc["config"] == {"beam": 20}
    assert doc["dataset"] == "toy" and doc["split"] == "test"
    assert "torch" in doc["versions"] and "created" in doc
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]  # no temp files left


def test_plot_recall_png(tmp_path):
    one = {"recall@5": 0.1, "recall@10": 0.2, "recall@20": 0.3, "ndcg@5": 0.05}
    path = plot_recall(tmp_path / "single.png", one)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    both = {"SASRec": one, "TIGER": {"recall@5": 0.0454, "recall@10": 0.0648}}
    path = plot_recall(tmp_path / "both.png", both, ks=(5, 10), title="Beauty")
    assert path.stat().st_size > 1000
    with pytest.raises(ValueError, match="model 'TIGER' has no recall@20"):
        plot_recall(tmp_path / "bad.png", both, ks=(5, 10, 20))
    with pytest.raises(ValueError, match="no recall@K entries"):
        plot_recall(tmp_path / "none.png", {"ndcg@5": 0.1})
