"""Text nearest neighbours (TIGER's Semantic-KNN): rank items by the text similarity of their
embeddings to the user's recent items.

The reference row of a cold-start benchmark: it needs no interaction with an item, only its
text, so it ranks items no model trained on. Item vectors are the SID build's text featurizer
(TF-IDF over the item texts, reduced by a truncated SVD, rows L2-normalized;
:func:`recllm.sid.embed.fit_tfidf`), fitted on the training catalog and applied to every item,
as the frozen quantizer embeds a new item. A user is the recency-weighted mean of the vectors
of their last ``last`` items (weight ``decay ** age``, the newest item weighing 1), normalized;
items are ranked by cosine similarity to it. Items of the history are left out of the ranking by
default: each one's similarity to itself would otherwise fill the top of every list.

Example:
    >>> knn = TextKNN.from_catalog(catalog)                      # doctest: +SKIP
    >>> knn.rank([["i1", "i7"]], k=10)                            # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import numpy as np

from recllm.data.types import Catalog

logger = logging.getLogger(__name__)

__all__ = ["TextKNN"]


class TextKNN:
    """Cosine nearest neighbours of a user's recent items among the catalog's text vectors.

    Args:
        item_ids: The rankable items, in the order of ``vectors``' rows.
        vectors: ``(N, D)`` item vectors (normalized here).
        last: How many of the most recent history items make the user vector.
        decay: Weight ratio between an item and the next newer one (1 = plain mean).
        exclude_history: Leave the user's history items out of the ranking.

    Raises:
        ValueError: ``vectors`` has another number of rows than ``item_ids``, or ``last`` /
            ``decay`` is out of range.
    """

    def __init__(
        self,
        item_ids: Sequence[str],
        vectors: np.ndarray,
        *,
        last: int = 5,
        decay: float = 0.7,
        exclude_history: bool = True,
    ) -> None:
        x = np.asarray(vectors, dtype=np.float32)
        if x.ndim != 2 or x.shape[0] != len(item_ids):
            raise ValueError(f"vectors {x.shape} do not have one row per item ({len(item_ids)})")
        if last < 1:
            raise ValueError(f"last must be >= 1, got {last}")
        if not 0 < decay <= 1:
            raise ValueError(f"decay must lie in (0, 1], got {decay}")
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        self.vectors = x / np.where(norms > 0, norms, 1.0)
        self.item_ids = list(item_ids)
        self.index = {item: n for n, item in enumerate(self.item_ids)}
        self.last, self.decay, self.exclude_history = last, decay, exclude_history

    @classmethod
    def from_catalog(
        cls,
        catalog: Catalog,
        *,
        fit_ids: Iterable[str] | None = None,
        fields: list[str] | None = None,
        dim: int = 128,
        seed: int = 0,
        **kwargs: object,
    ) -> TextKNN:
        """Vectors of every catalog item from the SID build's TF-IDF featurizer.

        Args:
            catalog: The items to rank (all of them, new items included).
            fit_ids: The items the featurizer is fitted on (the training catalog); default all.
            fields: Text fields (default: all of the catalog's).
            dim: SVD dimensions (as ``SIDConfig``'s TF-IDF embedding).
            seed: SVD seed.
            kwargs: :class:`TextKNN` options (``last``, ``decay``, ``exclude_history``).
        """
        from recllm.sid.embed import fit_tfidf, item_texts, tfidf_transform

        texts = item_texts(catalog, fields)
        if fit_ids is None:
            x, _ = fit_tfidf(texts, dim, seed)
        else:
            fit = catalog.subset(fit_ids)
            _, state = fit_tfidf(item_texts(fit, fields), dim, seed)
            x = tfidf_transform(texts, state)
        return cls(catalog.ids, x, **kwargs)  # type: ignore[arg-type]

    def user_vector(self, history: Sequence[str]) -> np.ndarray | None:
        """The recency-weighted mean of the last ``last`` known history items (None: none)."""
        rows = [self.index[i] for i in history if i in self.index][-self.last :]
        if not rows:
            return None
        w = self.decay ** np.arange(len(rows) - 1, -1, -1, dtype=np.float32)  # newest: 1
        u = (w[:, None] * self.vectors[rows]).sum(axis=0)
        norm = float(np.linalg.norm(u))
        return u / norm if norm > 0 else u

    def rank(self, histories: Sequence[Sequence[str]], k: int = 10) -> list[list[str]]:
        """The top ``k`` items for each history (ties: catalog order; empty history: [])."""
        out = []
        for history in histories:
            u = self.user_vector(history)
            if u is None:
                out.append([])
                continue
            scores = self.vectors @ u  # (N,)
            if self.exclude_history:
                seen = [self.index[i] for i in history if i in self.index]
                scores[seen] = -np.inf
            top = np.argsort(-scores, kind="stable")[:k]
            out.append([self.item_ids[n] for n in top if np.isfinite(scores[n])])
        return out
