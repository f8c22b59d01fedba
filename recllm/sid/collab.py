"""Collaborative signal from TRAINING interactions only: co-occurrence pairs and item factors.

Everything here takes ``Split.train`` (never valid/test targets), so the semantic IDs a model is
evaluated with carry no information about the held-out items.
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp

from recllm.data.types import Interactions

logger = logging.getLogger(__name__)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32); all-zero rows stay zero."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.where(norms > 0, x / np.maximum(norms, 1e-12), 0.0).astype(np.float32)


def cooccurrence_pairs(
    train: Interactions, item_index: dict[str, int], window: int = 3
) -> np.ndarray:
    """Ordered pairs ``(i, j)`` of item indices that occur within ``window`` steps of each other.

    Args:
        train: Training interactions only.
        item_index: Item id -> row index of the embedding matrix. Items missing from it are
            skipped (they have no row to pull).
        window: Items at distance ``1..window`` in a user's sequence form a pair.

    Returns:
        ``(P, 2)`` int64, each unordered pair once per occurrence with ``i != j``, in a
        deterministic order (users in order, then positions).
    """
    out: list[np.ndarray] = []
    for seq in train.sequences.values():
        idx = np.asarray([item_index[i] for i in seq if i in item_index], dtype=np.int64)
        for gap in range(1, min(window, len(idx) - 1) + 1):
            a, b = idx[:-gap], idx[gap:]
            keep = a != b
            out.append(np.stack([a[keep], b[keep]], axis=1))
    if not out:
        return np.zeros((0, 2), dtype=np.int64)
    return np.concatenate(out)


def cooccurrence_matrix(
    train: Interactions, item_index: dict[str, int], window: int = 3
) -> sp.csr_matrix:
    """Symmetric ``(N, N)`` count matrix of :func:`cooccurrence_pairs`."""
    n = len(item_index)
    pairs = cooccurrence_pairs(train, item_index, window)
    rows = np.concatenate([pairs[:, 0], pairs[:, 1]])
    cols = np.concatenate([pairs[:, 1], pairs[:, 0]])
    data = np.ones(len(rows), dtype=np.float64)
    return sp.csr_matrix((data, (rows, cols)), shape=(n, n))


def ppmi(counts: sp.csr_matrix) -> sp.csr_matrix:
    """Positive pointwise mutual information of a co-occurrence count matrix."""
    total = counts.sum()
    if total == 0:
        return counts.astype(np.float64)
    row = np.asarray(counts.sum(1)).ravel()
    coo = counts.tocoo()
    pmi = np.log(coo.data * total / (row[coo.row] * row[coo.col]))
    keep = pmi > 0
    return sp.csr_matrix(
        (pmi[keep], (coo.row[keep], coo.col[keep])), shape=counts.shape, dtype=np.float64
    )


def collaborative_embeddings(
    train: Interactions,
    item_ids: list[str],
    dim: int = 64,
    *,
    window: int = 3,
    seed: int = 0,
) -> np.ndarray:
    """Item factors from a truncated SVD of the PPMI co-occurrence matrix of training data.

    Items that never co-occur in training get a zero row (fusion then relies on their text).

    Returns:
        ``(N, dim)`` float32, rows L2-normalized (zero rows stay zero).
    """
    from sklearn.decomposition import TruncatedSVD

    index = {item: k for k, item in enumerate(item_ids)}
    m = ppmi(cooccurrence_matrix(train, index, window))
    dim = min(dim, len(item_ids) - 1)
    svd = TruncatedSVD(n_components=dim, algorithm="randomized", random_state=seed)
    u = svd.fit_transform(m)  # (N, dim) = U * S
    u /= np.sqrt(np.maximum(svd.singular_values_, 1e-12))  # U * sqrt(S): symmetric split
    u = l2_normalize(u)
    cold = int((np.asarray(m.sum(1)).ravel() == 0).sum())
    if cold:
        logger.info("%d items have no training co-occurrence: zero collaborative vector", cold)
    return u.astype(np.float32)
