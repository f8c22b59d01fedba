"""recllm.vocab.catalog_add: new items reach a trained model without touching its weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from recllm.data.types import Catalog
from recllm.decode.beam import sid_beam_search
from recllm.decode.trie import SIDTrie
from recllm.errors import UserError
from recllm.sid.sidmap import SIDMap
from recllm.testing import save_tiny_recommender
from recllm.vocab import load_model_with_sids
from recllm.vocab.catalog_add import (
    ADDED_FILENAME,
    CatalogAddition,
    add_items_to_model,
    model_catalog,
)
from recllm.vocab.checkpoint import read_vocab_record
from recllm.vocab.format import SID_FORMAT

SIZES = (3, 3, 2)  # 18 codes
N_OLD = 12


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("cat")
    model_dir = save_tiny_recommender(root, num_items=N_OLD, num_users=6, codebook_sizes=SIZES)
    old = SIDMap.load(model_dir / "sid_map.json")
    used = {tuple(c) for c in old.codes.tolist()}
    free = [c for c in np.ndindex(*SIZES) if c not in used][:4]
    new_ids = [f"new{i}" for i in range(len(free))]
    new_map = SIDMap(
        old.item_ids + new_ids,
        np.concatenate([old.codes, np.array(free, dtype=np.int64)]),
        old.codebook_sizes,
    )
    catalog = Catalog({i: {"title": f"fresh {i}"} for i in new_ids}, ("title",))
    out = add_items_to_model(model_dir, CatalogAddition(new_map, new_ids), catalog, root / "new")
    return model_dir, out, old, new_map, new_ids


def test_weights_bit_identical_and_dir_loads(tiny):
    model_dir, out, old, new_map, _ = tiny
    assert (out / "model.safetensors").read_bytes() == (
        model_dir / "model.safetensors"
    ).read_bytes()
    m_old, _, _ = load_model_with_sids(model_dir)
    m_new, _, loaded = load_model_with_sids(out)  # every save/load check passes
    assert loaded.content_hash == new_map.content_hash
    a, b = m_old.state_dict(), m_new.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    record = read_vocab_record(out)
    assert record["catalog_additions"][0]["parent_sid_map_hash"] == old.content_hash
    assert record["catalog_additions"][0]["items_added"] == 4
    assert json.loads((out / "config.json").read_text())["recllm_sid_map_hash"] == (
        new_map.content_hash
    )


def _beam_items(model_dir, k):
    model, tok, sid_map = load_model_with_sids(model_dir)
    ids = SID_FORMAT.token_ids(tok, sid_map.codebook_sizes)
    trie = SIDTrie.from_sid_map(sid_map, ids)
    prompt = torch.tensor([tok("user likes movie 1").input_ids])
    out = sid_beam_search(model, prompt, None, trie, num_beams=k)
    rows = [r for r in out.items[0].tolist() if r >= 0]
    return {sid_map.item_ids[r] for r in rows}, sid_map


def test_new_items_reachable_exhaustively_and_stale_control(tiny):
    model_dir, out, _, new_map, new_ids = tiny
    # every new item's SID is a path of the new trie: beam search with k = catalog size
    found, _sid_map = _beam_items(out, len(new_map))
    assert found == set(new_map.item_ids)
    # control: the stale model and its trie cannot emit them
    stale, _ = _beam_items(model_dir, N_OLD)
    assert stale == set(new_map.item_ids[:N_OLD])
    assert not stale & set(new_ids)


def test_model_catalog_and_accumulation(tiny, tmp_path):
    model_dir, out, _, new_map, new_ids = tiny
    base = Catalog({i: {"title": f"movie {i}"} for i in new_map.item_ids[:N_OLD]}, ("title",))
    cat = model_catalog(out, base)
    assert cat.ids == new_map.item_ids
    assert cat.items["new2"]["title"] == "fresh new2"
    assert model_catalog(model_dir, base) is base
    # a second addition accumulates catalog_added.jsonl
    used = {tuple(c) for c in new_map.codes.tolist()}
    free = [c for c in np.ndindex(*SIZES) if c not in used][:1]
    map2 = SIDMap(
        [*new_map.item_ids, "later"],
        np.concatenate([new_map.codes, np.array(free, dtype=np.int64)]),
        SIZES,
    )
    out2 = add_items_to_model(
        out,
        CatalogAddition(map2, ["later"]),
        Catalog({"later": {"title": "late"}}, ("title",)),
        tmp_path / "m2",
    )
    lines = (out2 / ADDED_FILENAME).read_text().splitlines()
    assert [json.loads(x)["item_id"] for x in lines] == [*new_ids, "later"]
    assert len(read_vocab_record(out2)["catalog_additions"]) == 2
    load_model_with_sids(out2)


def test_refuses_assignment_that_moves_old_codes(tiny, tmp_path):
    model_dir, _, _old, new_map, new_ids = tiny
    codes = new_map.codes.copy()
    codes[[0, N_OLD]] = codes[[N_OLD, 0]]  # an old item moved to a new code
    bad = SIDMap(new_map.item_ids, codes, SIZES)
    cat = Catalog({i: {"title": i} for i in new_ids}, ("title",))
    with pytest.raises(UserError, match="keep the model's items first"):
        add_items_to_model(model_dir, CatalogAddition(bad, new_ids), cat, tmp_path / "x")
    assert not (tmp_path / "x").exists()
    # control: the same call with the right map works
    add_items_to_model(model_dir, CatalogAddition(new_map, new_ids), cat, tmp_path / "x")


def test_recommender_returns_added_items_with_titles(tiny):
    from recllm.apps.recommender import Recommender

    model_dir, out, _, new_map, new_ids = tiny
    rec = Recommender.from_pretrained(out, engine="hf", max_k=64)
    assert len(rec.catalog) == len(new_map)
    got = rec.recommend(["item1", "new0"], k=len(new_map))  # an added item in the history too
    titles = {r.item_id: r.title for r in got}
    assert set(titles) == set(new_map.item_ids)
    assert [titles[i] for i in new_ids] == [f"fresh {i}" for i in new_ids]
    # the data's catalog is the model's training catalog: accepted with an explicit --data
    data = str(model_dir.parent / "data")
    assert len(Recommender.from_pretrained(out, engine="hf", data=data).catalog) == len(new_map)
    # control: the stale model does not know them
    stale = Recommender.from_pretrained(model_dir, engine="hf", max_k=64)
    assert not {r.item_id for r in stale.recommend(["item1"], k=N_OLD)} & set(new_ids)


def test_check_catalog_accepts_base_plus_added_items():
    from recllm.data.fingerprint import check_catalog

    base = Catalog({f"i{k}": {"title": "t"} for k in range(5)}, ("title",))
    recorded = {"format": "recllm.data_fingerprint/1", "catalog_sha256": None, "items": 5}
    from recllm.data.fingerprint import _sha256

    recorded["catalog_sha256"] = _sha256(sorted(base.ids))
    cold = Catalog({**base.items, "new0": {"title": "n"}}, ("title",))  # the cold-start data
    check_catalog(recorded, base, model="m", data="d")
    check_catalog(recorded, cold, model="m", data="d", added=["new0", "new1"])
    # control: without the model's added items that catalog is another one
    with pytest.raises(UserError, match="another catalog"):
        check_catalog(recorded, cold, model="m", data="d")
    other = Catalog({**base.items, "zzz": {"title": "n"}}, ("title",))
    with pytest.raises(UserError, match="another catalog"):
        check_catalog(recorded, other, model="m", data="d", added=["new0"])


def test_eval_on_the_added_model_ranks_added_items(tiny, tmp_path):
    from recllm.cli import main

    _, out, _, new_map, _ = tiny
    k = str(len(new_map))
    preds = tmp_path / "p.jsonl"
    argv = ["eval", "--model", str(out), "--max-users", "2", "--beams", k, "--k", k]
    assert main([*argv, "--out", str(tmp_path / "ev"), "--predictions", str(preds)]) == 0
    rows = [json.loads(x) for x in preds.read_text().splitlines()]
    assert all(set(r["items"]) == set(new_map.item_ids) for r in rows)  # new items ranked too


def test_grown_last_level_adds_only_new_token_rows(tmp_path):
    model_dir = save_tiny_recommender(tmp_path, num_items=13, num_users=6, codebook_sizes=SIZES)
    old = SIDMap.load(model_dir / "sid_map.json")
    grown = (*SIZES[:-1], SIZES[-1] + 2)  # the extra level grows by 2 codes
    new_ids = ["g0", "g1", "g2"]
    codes = np.array([[0, 0, 2], [1, 2, 3], [2, 1, 2]])
    new_map = SIDMap([*old.item_ids, *new_ids], np.concatenate([old.codes, codes]), grown)
    cat = Catalog({i: {"title": f"fresh {i} gadget"} for i in new_ids}, ("title",))
    out = add_items_to_model(
        model_dir, CatalogAddition(new_map, new_ids, {2: grown[-1]}), cat, tmp_path / "g"
    )
    a, tok_a, _ = load_model_with_sids(model_dir)
    b, tok_b, loaded = load_model_with_sids(out)
    assert loaded.content_hash == new_map.content_hash
    first_new = SID_FORMAT.token_ids(tok_a, SIZES).last_id + 1
    assert SID_FORMAT.token_ids(tok_b, grown).last_id == first_new + 1
    new_rows = [first_new, first_new + 1]
    sa, sb = a.state_dict(), b.state_dict()
    for name in sa:
        if name in ("model.embed_tokens.weight", "lm_head.weight"):
            keep = torch.ones(sb[name].shape[0], dtype=torch.bool)
            keep[new_rows] = False
            keep[sa[name].shape[0] :] = False
            n = sa[name].shape[0]
            assert torch.equal(sa[name][keep[:n]], sb[name][keep]), name
            assert all(not torch.equal(sa[name][r], sb[name][r]) for r in new_rows), name
        else:
            assert torch.equal(sa[name], sb[name]), name
    found, _ = _beam_items(out, len(new_map))
    assert found == set(new_map.item_ids)  # the new codes are reachable
    assert read_vocab_record(out)["catalog_additions"][-1]["new_token_rows"] == 2


def test_new_item_bonus_recorded_and_used_by_the_recommender(tiny, tmp_path):
    from recllm.apps.recommender import Recommender
    from recllm.vocab.catalog_add import recorded_new_item_bonus

    model_dir, out, _, new_map, new_ids = tiny
    plain = Recommender.from_pretrained(out, engine="hf", max_k=64)
    assert plain.fresh is None and recorded_new_item_bonus(out) is None
    full = plain.recommend(["item1"], k=len(new_map))  # every item, model order
    scores = {r.item_id: r.score for r in full}
    wide = len(new_map)  # beams enough to be exhaustive: the figures compare exactly
    top3 = [r.item_id for r in plain.recommend(["item1"], k=3, num_beams=wide)]
    # a bonus larger than any score gap: the 3 best new items lead, in the model's order
    boosted = add_items_to_model(
        model_dir,
        CatalogAddition(new_map, new_ids),
        Catalog({i: {"title": f"fresh {i}"} for i in new_ids}, ("title",)),
        tmp_path / "boosted",
        new_item_bonus=100.0,
    )
    assert recorded_new_item_bonus(boosted) == 100.0
    rec = Recommender.from_pretrained(boosted, engine="hf", max_k=64)
    got = rec.recommend(["item1"], k=3, num_beams=wide)
    want = sorted(new_ids, key=lambda i: -scores[i])[:3]
    assert [r.item_id for r in got] == want
    assert [r.score for r in got] == pytest.approx([scores[i] + 100.0 for i in want], abs=1e-4)
    # control: without the bonus the same width returns the trained items' best
    assert set(top3) != set(want)
    # an explicit bonus of 0 overrides the record: the plain ranking (new items compete as is)
    zero = Recommender.from_pretrained(boosted, engine="hf", max_k=64, new_item_bonus=0.0)
    assert [r.item_id for r in zero.recommend(["item1"], k=3, num_beams=wide)] == [
        i for i, _ in sorted(scores.items(), key=lambda kv: -kv[1])[:3]
    ]


def test_eval_new_item_bonus_puts_the_added_items_first(tiny, tmp_path):
    from recllm.cli import main

    _, out, _, _, new_ids = tiny
    base = ["eval", "--model", str(out), "--max-users", "3", "--beams", "4", "--k", "4"]
    runs = {}
    for name, extra in (("plain", []), ("bonus", ["--new-item-bonus", "100"])):
        preds = tmp_path / f"{name}.jsonl"
        argv = [*base, "--out", str(tmp_path / name), "--predictions", str(preds)]
        assert main([*argv, *extra]) == 0
        runs[name] = [json.loads(x)["items"] for x in preds.read_text().splitlines()]
    assert all(sorted(r) == sorted(new_ids) for r in runs["bonus"])  # the 4 new items lead
    assert any(set(r) != set(new_ids) for r in runs["plain"])  # control: not without the bonus
    metrics = json.loads((tmp_path / "bonus" / "metrics.json").read_text())
    assert '"new_item_bonus": 100.0' in json.dumps(metrics)
