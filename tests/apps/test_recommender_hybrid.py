"""The hybrid: added items scored by text similarity beside a search of the trained items alone
(recllm.decode.fresh.TextNewItems through Recommender and `recllm catalog add`)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from recllm.apps.recommender import Recommender
from recllm.cli import main
from recllm.decode.fresh import TextNewItems
from recllm.errors import UserError
from recllm.vocab.catalog_add import recorded_new_item_text, recorded_new_item_text_alpha
from tests.decode.test_text_head import GROUPS, PER_GROUP, grouped_model

NEW = {f"new-{w}": f"{w} brand new item" for w in GROUPS}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("hy")
    base = grouped_model(d)
    items = d / "new.jsonl"
    items.write_text("".join(json.dumps({"item_id": i, "title": t}) + "\n" for i, t in NEW.items()))

    def add(name, *flags):
        argv = [
            "catalog",
            "add",
            "--model",
            str(base),
            "--items",
            str(items),
            "--out",
            str(d / name),
        ]
        assert main([*argv, *flags]) == 0
        return d / name

    return {
        "base": base,
        "lead": add("lead", "--new-item-text-alpha", "5", "--new-item-bonus", "100"),
        "last": add("last", "--new-item-text-alpha", "5", "--new-item-bonus", "-100"),
        "beam": add("beam"),
        "shaped": add(
            "shaped",
            *("--new-item-text-alpha", "5", "--new-item-bonus", "0"),
            *("--new-item-text-norm-top", "3", "--new-item-text-guide", "0.5"),
        ),
        "quota": add(
            "quota",
            *("--new-item-text-alpha", "5", "--new-item-bonus", "100"),
            *("--new-item-text-max-new", "1"),
        ),
    }


def _history(group, n=4):
    g = GROUPS.index(group)
    return [str(g * PER_GROUP + k) for k in range(n)]


def test_new_items_come_by_their_text(models):
    rec = Recommender.from_pretrained(models["lead"], engine="hf", max_k=20)
    assert recorded_new_item_text_alpha(models["lead"]) == 5.0
    assert rec.text_new is not None and rec.fresh is None
    for group in GROUPS:
        got = rec.recommend(_history(group), k=5)
        assert got[0].item_id == f"new-{group}"  # the new item of the history's own group
        # its score is the text score: 5 x cosine + 100
        want = rec.text_new.candidates([_history(group)], 1)[0][0]
        assert (got[0].item_id, got[0].score) == pytest.approx(want)
        assert got[0].title == NEW[f"new-{group}"]
    # control: the plain beam over the same added items never puts them first for every group
    beam = Recommender.from_pretrained(models["beam"], engine="hf", max_k=20)
    assert [beam.recommend(_history(g), k=1)[0].item_id for g in GROUPS] != [
        f"new-{g}" for g in GROUPS
    ]


def test_trained_items_keep_the_stale_ranking(models):
    """Ranked exhaustively (every item), the hybrid's trained items are the stale model's list,
    items and scores; the new items (bonus -100) come after them all."""
    every = len(GROUPS) * PER_GROUP
    stale = Recommender.from_pretrained(models["base"], engine="hf", max_k=64)
    rec = Recommender.from_pretrained(models["last"], engine="hf", max_k=64)
    beam = Recommender.from_pretrained(models["beam"], engine="hf", max_k=64)
    moved = 0
    for group in GROUPS:
        want = stale.recommend(_history(group), k=every, num_beams=every)
        got = rec.recommend(_history(group), k=every + len(NEW), num_beams=every + len(NEW))
        assert [r.item_id for r in got[:every]] == [r.item_id for r in want]
        assert [r.score for r in got[:every]] == pytest.approx([r.score for r in want], abs=1e-5)
        assert {r.item_id for r in got[every:]} == set(NEW)
        # control: one search over the whole catalog puts new items among the trained ones
        plain = beam.recommend(_history(group), k=every + len(NEW), num_beams=every + len(NEW))
        moved += [r.item_id for r in plain[:every]] != [r.item_id for r in want]
    assert moved > 0


def test_filters_reach_the_new_items(models):
    rec = Recommender.from_pretrained(models["lead"], engine="hf", max_k=20)
    h = _history("guitar")
    got = rec.recommend(h, k=5, exclude=["new-guitar"])
    assert "new-guitar" not in [r.item_id for r in got]
    only = rec.recommend(h, k=3, allow=[*[*NEW][:2], "0"])
    assert {r.item_id for r in only} <= {*[*NEW][:2], "0"}
    with pytest.raises(UserError, match="nope"):
        rec.recommend(h, k=3, exclude=["nope"])


def _add_refused(models, tmp_path, capsys, *flags):
    """`catalog add` with ``flags`` exits 2, writes nothing, and returns its error text."""
    items = tmp_path / "n.jsonl"
    items.write_text(json.dumps({"item_id": "z", "title": "camera lens"}) + "\n")
    argv = ["catalog", "add", "--model", str(models["base"]), "--items", str(items)]
    assert main([*argv, "--out", str(tmp_path / "o"), *flags]) == 2
    assert not (tmp_path / "o").exists()
    return capsys.readouterr().err


def test_bad_alpha_is_refused(models, tmp_path, capsys):
    err = _add_refused(models, tmp_path, capsys, "--new-item-text-alpha", "0")
    assert "--new-item-text-alpha" in err
    with pytest.raises(UserError, match="alpha"):
        TextNewItems.build(None, None, [], float("nan"), 0.0)


def test_recorded_norm_top_and_guide_shape_the_scores(models):
    """`catalog add --new-item-text-norm-top 3 --new-item-text-guide 0.5` is recorded, read by
    the Recommender, and its new items' scores are the guided, normalised text scores of the
    trained items it found."""
    assert recorded_new_item_text(models["shaped"]) == {"norm_top": 3, "guide": 0.5}
    assert recorded_new_item_text(models["lead"]) == {}  # none recorded: the plain hybrid
    rec = Recommender.from_pretrained(models["shaped"], engine="hf", max_k=20)
    assert (rec.text_new.norm_top, rec.text_new.guide) == (3, 0.5)
    h = _history("guitar")
    got = rec.recommend(h, k=20)
    new = [(r.item_id, r.score) for r in got if r.item_id in NEW]
    assert new  # a new item made the list
    found = [(r.item_id, r.score) for r in got if r.item_id not in NEW]
    want = dict(rec.text_new.candidates([h], len(NEW), found=[found])[0])
    assert all(s == pytest.approx(want[i]) for i, s in new)
    # control: the same text scores without the guide and the base differ
    plain = dataclasses.replace(rec.text_new, norm_top=0, guide=0.0)
    other = dict(plain.candidates([h], len(NEW))[0])
    assert any(abs(other[i] - s) > 1e-3 for i, s in new)


def test_recorded_quota_caps_the_new_items(models):
    """`catalog add --new-item-text-max-new 1`: every list holds one new item, the history's
    best by text; the control (the same model without the quota) puts several first."""
    assert recorded_new_item_text(models["quota"]) == {"max_new": 1}
    rec = Recommender.from_pretrained(models["quota"], engine="hf", max_k=20)
    lead = Recommender.from_pretrained(models["lead"], engine="hf", max_k=20)
    stale = Recommender.from_pretrained(models["base"], engine="hf", max_k=20)
    for group in GROUPS:
        got = rec.recommend(_history(group), k=8, num_beams=16)
        assert [r.item_id for r in got if r.item_id in NEW] == [f"new-{group}"]
        assert got[0].item_id == f"new-{group}" and len(got) == 8
        # the other 7 places: the stale model's list
        want = stale.recommend(_history(group), k=7, num_beams=16)
        assert [r.item_id for r in got[1:]] == [r.item_id for r in want]
        plain = [r.item_id for r in lead.recommend(_history(group), k=8, num_beams=16)]
        assert sum(i in NEW for i in plain) > 1


def test_text_shape_needs_alpha(models, tmp_path, capsys):
    err = _add_refused(models, tmp_path, capsys, "--new-item-text-guide", "0.5")
    assert "--new-item-text-alpha" in err
    flags = ["--new-item-text-alpha", "1", "--new-item-text-guide", "2"]
    assert "0 <= guide <= 1" in _add_refused(models, tmp_path, capsys, *flags)
    err = _add_refused(models, tmp_path, capsys, "--new-item-text-max-new", "1")
    assert "--new-item-text-alpha" in err
    flags = ["--new-item-text-alpha", "1", "--new-item-text-max-new", "-1"]
    assert "max-new >= 0" in _add_refused(models, tmp_path, capsys, *flags)
