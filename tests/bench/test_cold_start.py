"""The cold-start benchmark's parts: the split, the figures, the popularity lists."""

from __future__ import annotations

import math

import pytest
import torch

from recllm.bench.cold_start import (
    figures,
    make_cold_split,
    popularity_lists,
    with_bonus,
    without_items,
)
from recllm.data import DataConfig, Example, load_rec_dataset, split_dataset
from tests.data.test_holdout import _toy


def test_figures_exact():
    test = [
        Example("u1", ("a",), "x"),  # cold, hit at rank 2
        Example("u2", ("a",), "y"),  # cold, miss
        Example("u3", ("a",), "b"),  # warm, hit at rank 1
        Example("u4", ("a",), "c"),  # warm, miss
    ]
    ranked = [["b", "x"], ["b", "c"], ["b", "x", "y"], []]
    f = figures(ranked, test, ["x", "y"])
    assert f["cold_R@10"] == 0.5 and f["cold_users"] == 2
    assert f["cold_N@10"] == round(0.5 / math.log2(3), 4)
    assert f["warm_R@10"] == 0.5 and f["warm_N@10"] == 0.5 and f["warm_users"] == 2
    assert f["cold_share_top10"] == round(3 / 7, 4)  # x, x, y among 7 slots
    with pytest.raises(ValueError, match="3 ranked lists for 4 users"):
        figures(ranked[:3], test, ["x"])


def test_cold_split_seeded_and_test_unchanged(tmp_path):
    d = _toy(tmp_path)
    cfg = DataConfig(data_path=str(d), max_history=None)
    a = make_cold_split(cfg, tmp_path / "a", share=0.34, seed=1)
    b = make_cold_split(cfg, tmp_path / "b", share=0.34, seed=1)
    assert a.held_out == b.held_out and len(a.held_out) == 2  # round(0.34 * 6)
    assert (tmp_path / "a" / "holdout_items.txt").read_text().split() == a.held_out
    full = load_rec_dataset(config=cfg)
    assert a.test == split_dataset(full, cfg).test  # the usual test examples
    assert a.catalog.ids == full.catalog.ids
    assert set(a.train_catalog.ids) == set(full.catalog.ids) - set(a.held_out)
    trained = {i for s in a.split.train.sequences.values() for i in s}
    trained |= {i for ex in (*a.split.valid, *a.split.test) for i in (*ex.history, ex.target)}
    assert trained and not trained & set(a.held_out)
    assert a.cold == [ex.target in a.held_out for ex in a.test] and any(a.cold)
    assert a.data_cfg.holdout_items and cfg.holdout_items is None


def test_without_items_and_popularity(tmp_path):
    ex = [Example("u", ("a", "x", "b"), "x")]
    assert without_items(ex, ["x"]) == [Example("u", ("a", "b"), "x")]
    d = _toy(tmp_path)
    cfg = DataConfig(data_path=str(d), max_history=None)
    split = split_dataset(load_rec_dataset(config=cfg), cfg)
    lists = popularity_lists(split, 2)
    # training counts (s[:-2]): i1, i2, i6 3; i5, i4 2; i3 1 (ties: first seen first)
    assert lists[0] == lists[1] == ["i1", "i2", "i6", "i5", "i4", "i3"]


def test_with_bonus_and_choose_bonus_exact():
    from recllm.bench.cold_start import choose_bonus, with_bonus

    cands = [
        [("w1", -1.0), ("w2", -1.2), ("n1", -1.5)],  # cold user: target n1
        [("w3", -0.5), ("n2", -0.9)],  # warm user: target w3
    ]
    test = [Example("u1", ("a",), "n1"), Example("u2", ("a",), "w3")]
    new = ["n1", "n2"]
    assert with_bonus(cands, new, 0.0, k=1) == [["w1"], ["w3"]]
    assert with_bonus(cands, new, 0.6, k=1) == [["n1"], ["n2"]]  # -0.9 + 0.6 > -0.5
    # a tie (-1.5 + 0.5 = w1's -1.0) keeps the candidates' order
    assert with_bonus(cands, new, 0.5, k=2) == [["w1", "n1"], ["n2", "w3"]]
    bonus, curve = choose_bonus([c[:3] for c in cands], test, new, grid=(0.0, 0.55, 2.0))
    by = {c["bonus"]: c for c in curve}
    assert by[0.0]["cold_R@10"] == 1.0  # top 10 holds every candidate: k=10 finds n1 anyway
    assert bonus == 0.0  # all three bonuses give R@10 1.0: the one nearest 0 wins
    bonus, _ = choose_bonus([c[:3] for c in cands], test, new, grid=(-1.0, -0.5, 0.0, 0.55))
    assert bonus == 0.0  # a tie with negative bonuses too
    assert by[2.0]["cold_share_top10"] == round(2 / 5, 4)
    assert with_bonus(cands, new, float("-inf"), k=10) == [["w1", "w2"], ["w3"]]


def test_choose_bonus_with_a_warm_tolerance():
    """The goal's rule: the most cold R@10 whose warm R@10 stays within the tolerance of the
    trained items' own list; the all-users rule (the control) gives the warm user away."""
    from recllm.bench.cold_start import choose_bonus

    def user(prefix, target_score=None, new=None, new_score=None):
        cands = [(f"{prefix}{n}", -1.0 - 0.1 * n) for n in range(10)]  # 10th at -1.9
        return cands + ([(new, new_score)] if new else [])

    new = ["n1", "n2"]
    cands = [
        user("t", new="n2", new_score=-2.6),  # warm: target t9, the 10th; n2 enters at 0.8
        user("u", new="n1", new_score=-2.25),  # cold: n1 enters at 0.5
        user("v", new="n1", new_score=-2.25),
        user("w", new="n1", new_score=-2.55),  # cold: n1 enters only at 0.8
        user("x", new="n1", new_score=-2.55),
    ]
    test = [Example("a", ("h",), "t9")] + [Example(f"c{n}", ("h",), "n1") for n in range(4)]
    grid = (0.0, 0.5, 0.8)
    plain, curve = choose_bonus(cands, test, new, grid=grid)
    by = {c["bonus"]: c for c in curve}
    assert [by[b]["cold_R@10"] for b in grid] == [0.0, 0.5, 1.0]
    assert [by[b]["warm_R@10"] for b in grid] == [1.0, 1.0, 0.0]
    assert plain == 0.8  # the control: R@10 of all is highest where the warm user is lost
    assert choose_bonus(cands, test, new, grid=grid, warm_tolerance=0.05)[0] == 0.5
    assert choose_bonus(cands, test, new, grid=grid, warm_tolerance=1.0)[0] == 0.8


def _hybrid_split():
    from recllm.bench.cold_start import ColdSplit
    from recllm.data.types import Catalog

    texts = {
        "a": "red garden hose",
        "b": "blue kitchen knife",
        "w1": "green garden rake",
        "w2": "steel kitchen pan",
        "n1": "red garden hose reel",  # new: close to a
        "n2": "blue kitchen knife block",  # new: close to b
    }
    full = Catalog({i: {"title": t} for i, t in texts.items()}, ("title",))
    train = full.subset(["a", "b", "w1", "w2"])
    return ColdSplit(["n1", "n2"], None, None, full, train, None, [])  # type: ignore[arg-type]


def _text_new(cold):
    from recllm.baselines.text_knn import TextKNN
    from recllm.decode.fresh import TextNewItems

    knn = TextKNN.from_catalog(cold.catalog, fit_ids=cold.train_catalog.ids, dim=4)
    vectors = torch.as_tensor(knn.vectors)
    return TextNewItems(tuple(cold.held_out), tuple(knn.item_ids), vectors, 1.0, 0.0)


def test_text_similarity_candidates_keep_the_beam_and_add_similar_new_items():
    from recllm.bench.cold_start import text_similarity_candidates

    cold = _hybrid_split()
    beam = [[("w1", -1.0), ("n2", -3.0), ("w2", -2.0)], [("w2", -0.5)]]
    users = [Example("u1", ("a",), "n1"), Example("u2", ("b",), "w2")]
    got = text_similarity_candidates(beam, _text_new(cold), users, alpha=2.0, depth=1)
    # the beam's new item leaves; each user's most similar new item joins at 2 x its cosine
    assert [i for i, _ in got[0]] == ["w1", "w2", "n1"]
    assert [i for i, _ in got[1]] == ["w2", "n2"]
    assert got[0][:2] == [("w1", -1.0), ("w2", -2.0)]
    assert 0.0 < got[0][2][1] <= 2.0 + 1e-5
    # a history item is never proposed: with n1 in the history, n2 is the best new item left
    again = text_similarity_candidates(
        beam[:1], _text_new(cold), [Example("u1", ("a", "n1"), "n2")], 2.0, 1
    )
    assert [i for i, _ in again[0]][-1] == "n2"


def test_choose_hybrid_finds_the_cold_user_without_costing_the_warm_one():
    from recllm.bench.cold_start import (
        ColdSplit,
        choose_hybrid,
        text_similarity_candidates,
        with_bonus,
    )
    from recllm.data.types import Catalog

    base = _hybrid_split()
    extra = {f"t{k}": {"title": f"plain item number {k}"} for k in range(10)}
    full = Catalog({**base.catalog.items, **extra}, ("title",))
    cold = ColdSplit(["n1", "n2"], None, None, full, full.subset([*"ab", *extra]), None, [])
    # the cold user's trained items score low, the warm user's high, its target 10th
    beam = [
        [(f"t{k}", -5.0 - 0.1 * k) for k in range(10)],
        [(f"t{k}", -0.1 - 0.1 * k) for k in range(10)],
    ]
    users = [Example("u1", ("a",), "n1"), Example("u2", ("b",), "t9")]
    text_new = _text_new(cold)
    chosen, tried = choose_hybrid(beam, text_new, users, warm_tolerance=0.05, norm_tops=(0, 2, 50))
    alpha, bonus = chosen["alpha"], chosen["bonus"]
    assert {t["alpha"] for t in tried} == {1.0, 2.0, 3.0, 5.0, 7.0, 10.0, 15.0}
    # every alpha x norm_top x guide x quota; 50 > the 16 items: skipped
    assert len(tried) == 7 * 2 * 1 * 4
    shape = {k: chosen[k] for k in ("norm_top", "guide", "max_new")}
    cands = text_similarity_candidates(beam, text_new, users, alpha, **shape)
    f = figures(with_bonus(cands, cold.held_out, bonus), users, cold.held_out)
    assert f["cold_R@10"] == 1.0 and f["warm_R@10"] == 1.0
    # controls: without the new items the cold user gets nothing; with a bonus that lets the
    # warm user's similar new item in too, its target drops out of the top 10
    stale = figures(with_bonus(cands, cold.held_out, float("-inf")), users, cold.held_out)
    assert stale["cold_R@10"] == 0.0
    greedy = figures(with_bonus(cands, cold.held_out, 10.0), users, cold.held_out)
    assert greedy["cold_R@10"] == 1.0 and greedy["warm_R@10"] == 0.0


def _quota_case():
    """Two users with the same trained list (its 9th and 10th items tie): the cold one has one
    new item near its history (its target), the warm one two, as near; the warm target is the
    9th trained item."""
    from recllm.decode.fresh import TextNewItems

    vecs = {
        "x": [1.0, 0.0, 0.0],
        "y": [0.0, 1.0, 0.0],
        "n1": [0.8, 0.0, 0.6],  # cos .8 to x, 0 to y
        "n2": [0.0, 0.8, 0.6],  # cos .8 to y, 0 to x
        "n3": [0.0, 0.8, -0.6],
    }
    x = torch.tensor(list(vecs.values()))
    text_new = TextNewItems(("n1", "n2", "n3"), tuple(vecs), x, 1.0, 0.0)
    trained = [(f"t{k}", -0.1 * min(k, 8)) for k in range(10)]  # t8 and t9 tie at -0.8
    users = [Example("u1", ("x",), "n1"), Example("u2", ("y",), "t8")]
    return text_new, [list(trained), list(trained)], users


def test_the_quota_finds_the_cold_user_where_no_bonus_can():
    """With every new item a user likes in its list, any bonus that lets the cold user's target
    in pushes the warm user's target out (two new items above it); a quota of one new item per
    list keeps both, and choose_hybrid picks it."""
    from recllm.bench.cold_start import cap_new, choose_hybrid, text_similarity_candidates

    text_new, beam, users = _quota_case()
    held = list(text_new.new_items)
    chosen, tried = choose_hybrid(beam, text_new, users, 0.05, norm_tops=(0,))
    assert chosen["max_new"] == 1
    shape = {k: chosen[k] for k in ("norm_top", "guide", "max_new")}
    cands = text_similarity_candidates(beam, text_new, users, chosen["alpha"], **shape)
    f = figures(with_bonus(cands, held, chosen["bonus"]), users, held)
    assert f["cold_R@10"] == 1.0 and f["warm_R@10"] == 1.0
    # control: no setting without a quota finds the cold user within the warm tolerance
    assert max(t["cold_R@10"] for t in tried if t["max_new"] == 0) == 0.0
    full = text_similarity_candidates(beam, text_new, users, chosen["alpha"])
    f = figures(with_bonus(full, held, chosen["bonus"]), users, held)
    assert f["cold_R@10"] == 1.0 and f["warm_R@10"] == 0.0
    # cap_new (the fast path choose_hybrid takes) equals the quota of TextNewItems itself
    for m in (1, 2, 3):
        capped = text_similarity_candidates(beam, text_new, users, 2.0, max_new=m)
        assert cap_new(text_similarity_candidates(beam, text_new, users, 2.0), held, m) == capped
        assert [sum(i in held for i, _ in c) for c in capped] == [min(m, 3)] * 2


def test_hybrid_curve_equals_sorting_every_list():
    """The threshold curve gives what with_bonus + figures give at every bonus, on random
    candidate lists (trained items first, as the hybrid forms them), ties included."""
    import random

    from recllm.bench.cold_start import hybrid_curve, with_bonus

    rng = random.Random(0)
    new = [f"n{k}" for k in range(30)]
    trained = [f"t{k}" for k in range(60)]
    cands, users = [], []
    for u in range(300):
        got = [(i, round(rng.uniform(-4, 0), 1)) for i in rng.sample(trained, rng.randint(0, 15))]
        got += [(i, round(rng.uniform(-6, 1), 1)) for i in rng.sample(new, rng.randint(0, 12))]
        pool = new if u % 3 == 0 else trained  # a third cold, some targets not in the list
        users.append(Example(f"u{u}", ("h",), rng.choice(pool)))
        cands.append(got)
    grid = [round(-5 + 0.25 * n, 2) for n in range(41)]
    curve = hybrid_curve(cands, users, new, grid)
    hits = 0
    for point in curve:
        f = figures(with_bonus(cands, new, point["bonus"]), users, new)
        assert (point["cold_R@10"], point["warm_R@10"]) == (f["cold_R@10"], f["warm_R@10"])
        hits += f["cold_R@10"] > 0 and f["warm_R@10"] > 0
    assert hits > 10  # the grid crosses the region where both kinds hit
    stale = hybrid_curve(cands, users, new, [float("-inf")])[0]
    f = figures(with_bonus(cands, new, float("-inf")), users, new)
    assert (stale["cold_R@10"], stale["warm_R@10"]) == (0.0, f["warm_R@10"])
