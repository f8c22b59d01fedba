"""The saved SID quantizer: it re-encodes the training items as the build did, and assign_items
gives new items unique codes without moving any existing item."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recllm.data import load_rec_dataset
from recllm.data.config import DataConfig
from recllm.data.splits import split_dataset
from recllm.data.types import Catalog
from recllm.errors import UserError
from recllm.sid.build import build_sid_map, write_sid_artifact
from recllm.sid.collab import collaborative_embeddings
from recllm.sid.config import SIDConfig
from recllm.sid.quantizer import SIDQuantizer, assign_items
from recllm.sid.sidmap import SIDMap

WORDS = [
    "red",
    "blue",
    "steel",
    "wood",
    "drill",
    "saw",
    "tape",
    "glue",
    "lamp",
    "cable",
    "pro",
    "mini",
]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A 300-item LC-Rec-layout dataset with text and co-occurrences."""
    rng = np.random.default_rng(0)
    d = tmp_path_factory.mktemp("lc")
    items = {
        str(i): {"title": " ".join(rng.choice(WORDS, 3)) + f" model {i % 17}", "brand": f"b{i % 9}"}
        for i in range(300)
    }
    inter = {str(u): [int(x) for x in rng.choice(300, size=8, replace=False)] for u in range(400)}
    (d / "Toy.item.json").write_text(json.dumps(items))
    (d / "Toy.inter.json").write_text(json.dumps(inter))
    return load_rec_dataset(str(d))


def _cfg(method: str, collab: float = 0.0, **kw) -> SIDConfig:
    return SIDConfig(
        method=method,
        levels=3,
        codebook_size=8,
        collab_weight=collab,
        collab_dim=16,
        text_dim=32,
        **kw,
    )


def _built(toy, cfg, tmp_path):
    build = build_sid_map(toy, cfg, cache=False)
    out = write_sid_artifact(build, tmp_path / "sids")
    return build, SIDQuantizer.load(out)


@pytest.mark.parametrize(
    "method,collab,first",
    [
        ("rq-kmeans", 0.0, "fused"),
        ("rq-kmeans", 0.3, "fused"),
        ("rq-kmeans", 0.3, "collab"),
        ("rq-vae", 0.0, "fused"),
        ("rq-vae", 0.3, "fused"),
    ],
)
def test_loaded_quantizer_reproduces_training_codes(toy, tmp_path, method, collab, first):
    build, q = _built(toy, _cfg(method, collab, first_level=first), tmp_path)
    rows = None
    if collab > 0:  # training items: their stored collaborative rows, as the build fused them
        split = split_dataset(toy, DataConfig())
        rows = collaborative_embeddings(split.train, toy.catalog.ids, 16, window=3, seed=0)
    codes = q.encode_texts(q.texts_of(toy.catalog), rows)
    np.testing.assert_array_equal(codes, build.result.codes)
    # control: a quantizer fitted with another seed gives other codes for the same texts
    _, other = _built(toy, _cfg(method, collab, sid_seed=7, first_level=first), tmp_path / "o")
    assert (other.encode_texts(q.texts_of(toy.catalog), rows) != codes).any(1).mean() > 0.2


def test_balanced_encodes_by_nearest_code(toy, tmp_path):
    """Balanced builds assign under equal-size capacities; a new item has no capacity to share,
    so it takes its nearest code per level (documented). Most training items agree at level 0."""
    build, q = _built(toy, _cfg("balanced"), tmp_path)
    codes = q.encode_texts(q.texts_of(toy.catalog))
    assert codes.shape == build.result.codes.shape
    assert ((codes >= 0) & (codes < 8)).all()


def test_new_item_collab_block_is_zero(toy, tmp_path):
    """A new item (no interactions) gets a zero collaborative block, as the build gives a catalog
    item without training co-occurrence: its code is that of [sqrt(1-w) text, 0]."""
    _, q = _built(toy, _cfg("rq-kmeans", 0.3), tmp_path)
    texts = ["title: red saw pro model 3; brand: b2", "title: lamp glue; brand: b5"]
    zero = np.zeros((2, 16), dtype=np.float32)
    np.testing.assert_array_equal(q.encode_texts(texts), q.encode_texts(texts, zero))
    fused = q.fuse(np.eye(2, q._text_dim(), dtype=np.float32))
    assert fused.shape[1] == q._text_dim() + 16
    assert (fused[:, q._text_dim() :] == 0).all()
    np.testing.assert_allclose(np.linalg.norm(fused, axis=1), np.sqrt(0.7), rtol=1e-6)


def test_collab_first_level_places_new_items_by_text(toy, tmp_path):
    """first_level collab: a training item's first code comes from its collaborative row alone;
    a new item (zero block) takes the code whose items are nearest in text, and its later levels
    quantize the residual as for any item."""
    build, q = _built(toy, _cfg("rq-kmeans", 0.3, first_level="collab"), tmp_path)
    assert "first_text.0" in q.arrays
    split = split_dataset(toy, DataConfig())
    rows = collaborative_embeddings(split.train, toy.catalog.ids, 16, window=3, seed=0)
    texts = q.texts_of(toy.catalog)
    # the first code does not move when the text does (same collaborative rows, shuffled texts)
    shuffled = q.encode_texts(texts[::-1], rows)
    np.testing.assert_array_equal(shuffled[:, 0], build.result.codes[:, 0])
    # control: a fused first level moves with the text
    _, fused = _built(toy, _cfg("rq-kmeans", 0.3), tmp_path / "f")
    moved = fused.encode_texts(texts[::-1], rows)[:, 0] != fused.encode_texts(texts, rows)[:, 0]
    assert moved.mean() > 0.3
    # new items: first code = nearest text centroid of the first level
    new = ["title: red saw pro model 3; brand: b2", "title: lamp glue cable; brand: b5"]
    codes = q.encode_texts(new)
    from recllm.sid.collab import l2_normalize

    fused_new = q.fuse(l2_normalize(q.embed_texts(new)))
    text_part = fused_new[:, : q._text_dim()]
    d = ((text_part[:, None] - q.arrays["first_text.0"][None]) ** 2).sum(-1)
    np.testing.assert_array_equal(codes[:, 0], d.argmin(1))
    # and assign_items gives them unique codes next to the unchanged old ones
    out = assign_items(q, build.sid_map, _new_catalog(20))
    np.testing.assert_array_equal(out.sid_map.codes[:300], build.sid_map.codes)
    assert len({tuple(c) for c in out.sid_map.codes}) == 320


def test_collab_first_level_config_errors(toy, tmp_path):
    with pytest.raises(ValueError, match="needs --collab-weight above 0"):
        _cfg("rq-kmeans", 0.0, first_level="collab")
    with pytest.raises(ValueError, match="needs --collab-weight above 0"):
        _cfg("rq-vae", 0.3, first_level="collab")
    with pytest.raises(ValueError, match="is not one of"):
        _cfg("rq-kmeans", 0.3, first_level="text")
    emb = tmp_path / "e.npz"
    np.savez(emb, ids=np.array(toy.catalog.ids), embeddings=np.zeros((300, 4), np.float32))
    with pytest.raises(UserError, match="precomputed-embeddings file does not say"):
        build_sid_map(toy, _cfg("rq-kmeans", 0.3, first_level="collab"), embeddings=emb)


def test_quantizer_files_checked(toy, tmp_path):
    _, q = _built(toy, _cfg("rq-kmeans"), tmp_path)
    qdir = tmp_path / "sids" / "quantizer"
    doc = json.loads((qdir / "quantizer.json").read_text())
    assert doc["content_hash"] == q.content_hash and doc["cold_collab"] == "zero"
    doc["sid_config"]["sid_seed"] = 3
    (qdir / "quantizer.json").write_text(json.dumps(doc))
    with pytest.raises(UserError, match="content hash mismatch"):
        SIDQuantizer.load(qdir)
    (qdir / "arrays.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(UserError, match="truncated or corrupt"):
        SIDQuantizer.load(qdir)
    with pytest.raises(UserError, match=r"built before recllm saved its quantizer.*sid build"):
        SIDQuantizer.load(tmp_path)


def _new_catalog(n: int, start: int = 1000, seed: int = 1) -> Catalog:
    rng = np.random.default_rng(seed)
    return Catalog(
        {
            str(start + i): {"title": " ".join(rng.choice(WORDS, 3)), "brand": f"b{i % 4}"}
            for i in range(n)
        },
        ("title", "brand"),
    )


@pytest.mark.parametrize("strategy", ["reassign", "extra-level"])
def test_assign_keeps_old_codes_and_places_every_new_item(toy, tmp_path, strategy):
    build, q = _built(toy, _cfg("rq-kmeans", collisions=strategy), tmp_path)
    old = build.sid_map
    new = _new_catalog(60)
    a = assign_items(q, old, new)
    m = a.sid_map
    assert a.new_items == new.ids and m.item_ids == old.item_ids + new.ids
    np.testing.assert_array_equal(m.codes[: len(old)], old.codes)
    assert len(np.unique(m.codes, axis=0)) == len(m)
    # the old items' lines of sid_map.json are byte-identical
    old_lines = [ln for ln in old.to_json().splitlines() if ln.startswith('  "')]
    new_json = m.to_json()
    assert all(ln in new_json for ln in old_lines)
    assert m.meta["additions"][-1] == {"parent_content_hash": old.content_hash, "added_items": 60}
    r = a.report
    assert r["new_items"] == 60
    raw = q.encode_texts(q.texts_of(new))
    # every new item whose raw code was free keeps it (reassign) / keeps it as its prefix
    taken = {tuple(c) for c in old.codes[:, :3].tolist()}
    clash = sum(tuple(c) in taken for c in raw.tolist())
    assert r["collisions_with_existing"] == clash > 0
    if strategy == "extra-level":
        np.testing.assert_array_equal(m.codes[len(old) :, :3], raw)
    # a chained second assignment keeps everything of the first
    b = assign_items(q, m, _new_catalog(5, start=5000, seed=9))
    np.testing.assert_array_equal(b.sid_map.codes[: len(m)], m.codes)
    assert len(b.sid_map.meta["additions"]) == 2


def test_forced_collision_extra_level_grows(toy, tmp_path):
    build, q = _built(toy, _cfg("rq-kmeans", collisions="extra-level"), tmp_path)
    old = build.sid_map
    # copies of the text of the item in the largest group: all collide with it and each other
    group_key = max(
        {tuple(c[:3]) for c in old.codes.tolist()},
        key=lambda k: sum(tuple(c[:3]) == k for c in old.codes.tolist()),
    )
    src = next(
        i
        for i, c in zip(old.item_ids, old.codes.tolist(), strict=True)
        if tuple(c[:3]) == group_key
    )
    rec = toy.catalog.items[src]
    size = old.codebook_sizes[-1]
    new = Catalog({f"n{k}": dict(rec) for k in range(size + 1)}, toy.catalog.text_fields)
    a = assign_items(q, old, new)
    assert a.report["collisions_with_existing"] == size + 1
    assert (
        a.grown_levels == {3: a.sid_map.codebook_sizes[-1]} and a.sid_map.codebook_sizes[-1] > size
    )
    np.testing.assert_array_equal(a.sid_map.codes[: len(old)], old.codes)
    assert len(np.unique(a.sid_map.codes, axis=0)) == len(a.sid_map)


def test_forced_collision_reassign(toy, tmp_path):
    build, q = _built(toy, _cfg("rq-kmeans"), tmp_path)
    old = build.sid_map
    src = old.item_ids[0]
    new = Catalog(
        {f"n{k}": dict(toy.catalog.items[src]) for k in range(3)}, toy.catalog.text_fields
    )
    raw = q.encode_texts(q.texts_of(new))
    a = assign_items(q, old, new)
    r = a.report
    in_old = tuple(raw[0]) in {tuple(c) for c in old.codes.tolist()}
    assert r["collisions_with_existing"] == (3 if in_old else 0)
    assert r["collisions_among_new"] == (0 if in_old else 2)
    assert a.grown_levels == {} and a.sid_map.codebook_sizes == old.codebook_sizes
    np.testing.assert_array_equal(a.sid_map.codes[: len(old)], old.codes)
    assert len(np.unique(a.sid_map.codes, axis=0)) == len(a.sid_map)
    # moved items stay under the nearest prefixes: the first two levels unchanged where possible
    assert (a.sid_map.codes[len(old) :, 0] == raw[:, 0]).all()


def test_assign_refuses_existing_ids_and_foreign_map(toy, tmp_path):
    build, q = _built(toy, _cfg("rq-kmeans"), tmp_path)
    old = build.sid_map
    dup = Catalog({old.item_ids[3]: {"title": "x", "brand": "y"}}, ("title", "brand"))
    with pytest.raises(UserError, match=r"already in the catalog.*never move"):
        assign_items(q, old, dup)
    other = SIDMap(old.item_ids[:-1], old.codes[:-1], old.codebook_sizes)
    with pytest.raises(UserError, match="not with this map"):
        assign_items(q, other, _new_catalog(2))


def test_lm_quantizer_reproduces_codes_and_refuses_a_changed_model(
    toy, tmp_path, tiny_tokenizer, torch_single_thread
):
    from recllm.testing import save_tiny_model

    model_dir = save_tiny_model(tmp_path / "tiny", tokenizer=tiny_tokenizer)
    cfg = SIDConfig(
        method="rq-kmeans", levels=3, codebook_size=8, embedding="lm", text_model=str(model_dir)
    )
    build, q = _built(toy, cfg, tmp_path)
    assert q.featurizer["kind"] == "lm" and len(q.featurizer["fingerprint"]) == 64
    codes = q.encode_texts(q.texts_of(toy.catalog))
    np.testing.assert_array_equal(codes, build.result.codes)
    # the model's files change (e.g. fine-tuned in place): encoding is refused
    weights = next(model_dir.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-8] + b"\x00" * 8)
    with pytest.raises(UserError, match="its files changed since the SID build"):
        q.encode_texts(["title: red saw"])
