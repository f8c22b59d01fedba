"""recllm.bench.paired: rows against a base row, user by user, on hand-made ranks."""

from __future__ import annotations

import math

import pytest

from recllm.bench.paired import paired_lines, paired_vs


def test_paired_difference_of_hand_made_ranks_equals_the_hand_computed_mean_and_interval():
    # ranks of the target (1 = first, 0 = not ranked): hit@10 base 1,0,1,0 / other 0,1,1,1
    ranks = {"start": [1, 0, 3, 12], "arm": [0, 2, 1, 5]}
    out = paired_vs(ranks, "start")
    assert out["start"] is None
    r = out["arm"]["R@10"]
    # per-user differences -1, 1, 0, 1: mean .25, sd (ddof 1) sqrt(2.75 / 3), se sd / 2
    se = math.sqrt(2.75 / 3) / 2
    assert r["delta"] == 0.25
    assert r["ci95"] == [round(0.25 - 1.96 * se, 5), round(0.25 + 1.96 * se, 5)]
    assert r["ci95"] == [-0.68828, 1.18828]
    assert r["p"] == float(f"{math.erfc(0.25 / se / math.sqrt(2)):.3g}")
    assert (out["arm"]["users_gained"], out["arm"]["users_lost"]) == (2, 1)
    # N@10 gains: base 1, 0, 1/log2(4)=.5, 0; other 0, 1/log2(3), 1, 1/log2(6)
    gains = [-1.0, 1 / math.log2(3), 0.5, 1 / math.log2(6)]
    assert out["arm"]["N@10"]["delta"] == round(sum(gains) / 4, 5)


def test_a_row_against_itself_differs_by_zero_and_other_users_are_refused():
    same = paired_vs({"a": [1, 0, 4], "b": [1, 0, 4]}, "a")["b"]
    assert same["R@10"] == {"delta": 0.0, "ci95": [0.0, 0.0], "p": 1.0}
    with pytest.raises(ValueError, match="not the same users"):
        paired_vs({"a": [1, 0, 4], "b": [1, 0]}, "a")
    with pytest.raises(KeyError, match="no row 'c'"):
        paired_vs({"a": [1]}, "c")


def test_paired_lines_print_each_compared_row_once():
    comps = paired_vs({"start": [1, 0, 3, 12], "arm": [0, 2, 1, 5]}, "start")
    lines = paired_lines(comps, width=6)
    assert lines == [
        "  arm    R@10 +0.2500 [-0.6883, +1.1883] p=0.6  N@10 "
        + f"{comps['arm']['N@10']['delta']:+.4f} [{comps['arm']['N@10']['ci95'][0]:+.4f}, "
        + f"{comps['arm']['N@10']['ci95'][1]:+.4f}] p={comps['arm']['N@10']['p']:.2g}"
        + "  users +2/-1"
    ]
