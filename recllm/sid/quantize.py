"""Residual quantizers that turn item embeddings into code tuples.

All quantizers share one result type, :class:`QuantizeResult`, so collision handling, metrics and
the SID map never care which method made the codes.

- :func:`rq_kmeans`: residual k-means. Level ``l`` clusters the residuals left by levels
  ``0..l-1`` (faiss k-means underneath when installed, scikit-learn otherwise).
- :func:`balanced_rq_kmeans`: the same with balanced clusters at every level, as OneRec
  describes: every code of a level holds ``N // K`` or ``N // K + 1`` items.

Both take ``collab_start``: the first level then clusters only the collaborative columns
``x[:, collab_start:]`` (what users do next), and the later levels the residuals, which are mostly
text (:func:`first_level_by_collab`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)


@dataclass
class QuantizeResult:
    """Codes and what collision handling and metrics need to know about them.

    Attributes:
        codes: ``(N, L)`` int64; ``codes[i, l]`` is item ``i``'s code at level ``l``.
        codebook_sizes: ``K_l`` per level.
        codebooks: Per level, the ``(K_l, d)`` code vectors in the space the level quantizes.
        last_input: ``(N, d)`` float32, the vectors the last level quantized (residuals for
            residual methods), so an item can be moved to its nearest free last-level code.
        recon_error: Mean squared reconstruction error after each level, in the input space.
        extras: Method-specific figures (training losses, iterations, ...), JSON-serializable.
        assign_codebooks: k-means methods: per level, the ``(K_l, d)`` centroids the codes were
            assigned to (before the final M-step moved them to ``codebooks``); a new item is
            encoded with these (codes) and ``codebooks`` (residuals), as the build was.
        encoder_state: rq-vae: the trained encoder's tensors and the input standardization
            (``mean``, ``scale``, ``config``), so new items can be encoded
            (:mod:`recllm.sid.quantizer`).
        first_text_centroids: A collaborative first level (``collab_start``): the ``(K_0,
            collab_start)`` text-column means of each first-level code's items with
            interactions, which place the items without any (:func:`first_level_by_collab`).
    """

    codes: np.ndarray
    codebook_sizes: tuple[int, ...]
    codebooks: list[np.ndarray]
    last_input: np.ndarray
    recon_error: list[float]
    extras: dict[str, object] = field(default_factory=dict)
    assign_codebooks: list[np.ndarray] | None = field(default=None, repr=False)
    encoder_state: dict[str, object] | None = field(default=None, repr=False)
    first_text_centroids: np.ndarray | None = field(default=None, repr=False)


def check_embeddings(x: np.ndarray, codebook_size: int, source: str = "embeddings") -> np.ndarray:
    """Validate an ``(N, d)`` embedding matrix and return it as contiguous float32.

    Raises:
        ValueError: Not 2-D, NaN or infinite values, or fewer items than codes per level.
    """
    if x.ndim != 2:
        raise ValueError(f"{source}: expected an (items, dim) matrix, got shape {x.shape}")
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise ValueError(
            f"{source}: {len(rows)} rows contain NaN or infinite values (first rows: "
            f"{rows[:5].tolist()}); Fix: recompute those items' embeddings or drop the items"
        )
    if x.shape[0] < codebook_size:
        raise ValueError(
            f"{source}: {x.shape[0]} items but codebook size {codebook_size}: every code needs "
            f"at least one item; Fix: pass --codebook-size <= {x.shape[0]}"
        )
    return np.ascontiguousarray(x, dtype=np.float32)


def _faiss():
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def kmeans(
    x: np.ndarray, k: int, *, niter: int = 20, seed: int = 0, max_points_per_centroid: int = 256
) -> np.ndarray:
    """Plain k-means centroids ``(k, d)``: faiss when installed, else scikit-learn.

    Both subsample to ``max_points_per_centroid * k`` training points, as faiss does by default.
    """
    faiss = _faiss()
    if faiss is not None:
        km = faiss.Kmeans(
            x.shape[1],
            k,
            niter=niter,
            seed=seed,
            max_points_per_centroid=max_points_per_centroid,
            verbose=False,
        )
        km.train(x)
        return np.asarray(km.centroids, dtype=np.float32)
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(seed)
    cap = max_points_per_centroid * k
    sample = x if len(x) <= cap else x[np.sort(rng.choice(len(x), cap, replace=False))]
    km = KMeans(k, n_init=1, max_iter=niter, random_state=seed).fit(sample)
    return km.cluster_centers_.astype(np.float32)


def sq_distances(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """``(N, K)`` squared Euclidean distances, one GEMM."""
    d = (x * x).sum(1, keepdims=True) - 2.0 * (x @ centroids.T) + (centroids * centroids).sum(1)
    return np.maximum(d, 0.0, out=d)


def nearest(x: np.ndarray, centroids: np.ndarray, batch: int = 65536) -> np.ndarray:
    """Index of the nearest centroid for every row (faiss' fused search when installed)."""
    faiss = _faiss()
    if faiss is not None:
        _, idx = faiss.knn(x, centroids, 1)
        return idx[:, 0].astype(np.int64)
    out = np.empty(len(x), dtype=np.int64)
    for s in range(0, len(x), batch):
        out[s : s + batch] = sq_distances(x[s : s + batch], centroids).argmin(1)
    return out


def _residual_levels(
    x: np.ndarray,
    levels: int,
    codebook_size: int,
    fit_level,
    desc: str,
    collab_start: int | None = None,
) -> QuantizeResult:
    """Fit ``levels`` levels with ``fit_level(residual, level) -> (centroids, assignment)``;
    with ``collab_start`` level 0 is :func:`first_level_by_collab` over the same fit."""
    residual = x.copy()
    first_text: np.ndarray | None = None
    codes = np.empty((len(x), levels), dtype=np.int64)
    codebooks: list[np.ndarray] = []
    assign_books: list[np.ndarray] = []
    errors: list[float] = []
    last_input = residual
    chosen = np.empty_like(residual)  # reused buffer: fresh (N, d) temporaries cost page faults
    for level in tqdm(range(levels), desc=desc, unit="level", leave=False):
        if level == 0 and collab_start is not None:
            centroids, assign, first_text = first_level_by_collab(
                residual, collab_start, codebook_size, lambda v: fit_level(v, 0)
            )
        else:
            centroids, assign = fit_level(residual, level)
        assign_books.append(np.asarray(centroids, dtype=np.float32).copy())
        # Final M-step on all points: each code vector becomes the mean of the residuals it
        # holds. Then every level provably lowers (never raises) the mean squared error.
        centroids = _cluster_means(residual, assign, centroids)
        codes[:, level] = assign
        codebooks.append(centroids)
        np.take(centroids, assign, axis=0, out=chosen)
        if level == levels - 1:
            last_input = residual  # keep the last level's input; the residual becomes new
            residual = np.subtract(residual, chosen, out=chosen)
        else:
            residual -= chosen
        errors.append(float(np.einsum("ij,ij->", residual, residual, dtype=np.float64)) / len(x))
        logger.debug("%s level %d: mse %.6f", desc, level, errors[-1])
    return QuantizeResult(
        codes,
        (codebook_size,) * levels,
        codebooks,
        last_input,
        errors,
        assign_codebooks=assign_books,
        first_text_centroids=first_text,
    )


def first_level_by_collab(
    x: np.ndarray, collab_start: int, k: int, fit
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A first level that follows behaviour: cluster the collaborative columns only.

    Items with interactions (a non-zero collaborative block ``x[:, collab_start:]``) are clustered
    on that block into ``k`` codes by ``fit(block) -> (centroids, assignment)``. Items without any (zero block: no
    training co-occurrence, or a new item) cannot be placed by behaviour; each takes the code
    whose items with interactions are nearest in the text columns on average. New items are
    encoded the same way (:class:`recllm.sid.quantizer.SIDQuantizer`), so a training item and a
    new item with the same text and no interactions get the same first code.

    Returns:
        ``(centroids (K, d), assignment (N,), text_centroids (K, collab_start))``: the
        centroids are zero in the text columns (assignment looks at the collaborative columns
        only); ``text_centroids`` place the items without interactions.

    Raises:
        ValueError: No collaborative columns, or fewer items with interactions than codes.
    """
    n, d = x.shape
    if not 0 < collab_start < d:
        raise ValueError(
            f"a collaborative first level needs collaborative columns: collab_start "
            f"{collab_start} of {d} columns; Fix: set --collab-weight above 0"
        )
    block = np.ascontiguousarray(x[:, collab_start:])
    warm = np.einsum("ij,ij->i", block, block) > 0
    warm_rows = np.flatnonzero(warm)
    if len(warm_rows) < k:
        raise ValueError(
            f"{len(warm_rows)} items have interactions but the first level has {k} codes; "
            "Fix: lower --codebook-size or use --first-level fused"
        )
    centroids_c, assign_w = fit(np.ascontiguousarray(block[warm_rows]))
    text = np.ascontiguousarray(x[:, :collab_start])
    text_centroids = _cluster_means(
        text[warm_rows], assign_w, np.zeros((k, collab_start), dtype=np.float32)
    )
    assign = np.empty(n, dtype=np.int64)
    assign[warm_rows] = assign_w
    cold_rows = np.flatnonzero(~warm)
    if cold_rows.size:
        assign[cold_rows] = nearest(np.ascontiguousarray(text[cold_rows]), text_centroids)
    logger.info(
        "first level from the collaborative block: %d items by behaviour, %d without "
        "interactions by text",
        len(warm_rows),
        len(cold_rows),
    )
    centroids = np.zeros((k, d), dtype=np.float32)
    centroids[:, collab_start:] = centroids_c
    return centroids, assign, text_centroids


def _cluster_means(x: np.ndarray, assign: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Mean of each cluster's points; an empty cluster keeps its ``fallback`` vector."""
    import scipy.sparse as sp

    k = len(fallback)
    onehot = sp.csr_matrix(
        (np.ones(len(x), dtype=np.float32), (assign, np.arange(len(x)))), shape=(k, len(x))
    )
    counts = np.bincount(assign, minlength=k)
    sums = onehot @ x  # (k, d), one sparse product
    means = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], fallback)
    return means.astype(np.float32)


def rq_kmeans(
    x: np.ndarray,
    levels: int = 3,
    codebook_size: int = 256,
    *,
    seed: int = 0,
    niter: int = 20,
    collab_start: int | None = None,
) -> QuantizeResult:
    """Residual k-means: level ``l`` runs k-means on the residuals of levels ``< l``.

    Args:
        x: ``(N, d)`` item embeddings.
        levels: Number of code levels ``L``.
        codebook_size: Codes per level ``K``.
        seed: Seeds level ``l`` with ``seed + l``.
        niter: Lloyd iterations per level.
        collab_start: First collaborative column: level 0 clusters those columns only
            (:func:`first_level_by_collab`); None = every level sees all columns.
    """
    x = check_embeddings(x, codebook_size)

    def fit(residual: np.ndarray, level: int) -> tuple[np.ndarray, np.ndarray]:
        centroids = kmeans(residual, codebook_size, niter=niter, seed=seed + level)
        return centroids, nearest(residual, centroids)

    return _residual_levels(x, levels, codebook_size, fit, "rq-kmeans", collab_start)


def balanced_sizes(n: int, k: int) -> np.ndarray:
    """Cluster sizes for ``n`` points in ``k`` clusters: ``n // k``, the first ``n % k`` one more."""
    sizes = np.full(k, n // k, dtype=np.int64)
    sizes[: n % k] += 1
    return sizes


def balanced_assign(
    dist: np.ndarray, rng: np.random.Generator, sizes: np.ndarray | None = None
) -> np.ndarray:
    """Exact greedy balanced assignment of ``N`` points to ``K`` clusters.

    OneRec's greedy: visit the clusters in a random order; each takes its nearest still
    unassigned points up to its size. ``dist`` is ``(K, N)`` (cluster-major, so each cluster's
    row is contiguous). Costs ``O(K * N)``; :func:`balanced_assign_candidates` is the fast path.

    Args:
        dist: ``(K, N)`` squared distances.
        rng: Orders the clusters.
        sizes: Capacity per cluster (must sum to ``N``); default :func:`balanced_sizes`.
    """
    k, n = dist.shape
    sizes = balanced_sizes(n, k) if sizes is None else sizes
    assign = np.full(n, -1, dtype=np.int64)
    pool = np.arange(n)  # unassigned points
    for c in rng.permutation(k):
        size = int(sizes[c])
        if size == 0:
            continue
        row = dist[c, pool]
        take = np.argpartition(row, size - 1)[:size] if size < len(pool) else np.arange(len(pool))
        assign[pool[take]] = c
        keep = np.ones(len(pool), dtype=bool)
        keep[take] = False
        pool = pool[keep]
    return assign


def _nearest_k(x: np.ndarray, centroids: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray]:
    """``(distances, indices)``, each ``(N, t)``, of every point's ``t`` nearest centroids,
    nearest first (faiss' fused search when installed)."""
    faiss = _faiss()
    if faiss is not None:
        d, i = faiss.knn(x, centroids, t)
        return d, i.astype(np.int64)
    dist = sq_distances(x, centroids)
    i = np.argpartition(dist, t - 1, axis=1)[:, :t]
    d = np.take_along_axis(dist, i, 1)
    order = np.argsort(d, axis=1, kind="stable")
    return np.take_along_axis(d, order, 1), np.take_along_axis(i, order, 1)


def balanced_assign_candidates(
    x: np.ndarray,
    centroids: np.ndarray,
    rng: np.random.Generator,
    candidates: int = 4,
    exact_below: int = 4096,
) -> np.ndarray:
    """Exactly balanced assignment (sizes ``N // K`` or ``+1``) in rounds over near centroids.

    Round ``r``: every unassigned point proposes to its ``r``-th nearest centroid among those
    with room; each centroid accepts its nearest proposers up to its remaining capacity. After
    ``candidates`` rounds the points left over search again among the centroids that still have
    room, and so on; the last few (fewer than ``exact_below``) go through the exact greedy of
    :func:`balanced_assign`. The candidate lists come from fused top-k searches, so the cost
    stays close to a plain k-means assignment step instead of the greedy's ``O(K * N)``
    selections.
    """
    n, k = len(x), len(centroids)
    remaining = balanced_sizes(n, k)
    assign = np.full(n, -1, dtype=np.int64)
    pending = np.arange(n)
    while pending.size:
        room = np.flatnonzero(remaining > 0)
        if pending.size < exact_below or len(room) <= candidates:
            sub = sq_distances(x[pending], centroids[room]).T  # (clusters with room, leftovers)
            greedy = balanced_assign(np.ascontiguousarray(sub), rng, remaining[room])
            assign[pending] = room[greedy]
            break
        d_top, i_top = _nearest_k(x[pending], centroids[room], candidates)
        i_top = room[i_top]  # (pending, candidates) centroid ids, nearest first
        rows = np.arange(len(pending))
        for r in range(candidates):
            c = i_top[rows, r]
            order = np.lexsort((d_top[rows, r], c))  # by centroid, then distance
            rows, c = rows[order], c[order]
            rank = np.arange(len(c)) - np.searchsorted(c, c, side="left")  # rank in centroid
            ok = rank < remaining[c]
            assign[pending[rows[ok]]] = c[ok]
            remaining -= np.bincount(c[ok], minlength=k)
            rows = np.sort(rows[~ok])
            if rows.size == 0:
                break
        pending = pending[rows]
    return assign


def balanced_kmeans(
    x: np.ndarray,
    k: int,
    *,
    niter: int = 20,
    seed: int = 0,
    refine: int = 2,
    max_points_per_centroid: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """Balanced k-means: every cluster ends with ``N // K`` or ``N // K + 1`` points.

    Plain k-means (:func:`kmeans`, ``niter`` iterations) places the centroids; ``refine``
    balanced Lloyd iterations on the same training subsample then move them to where balanced
    clusters want them, and a last balanced assignment covers all points. Every balanced
    assignment is exact (:func:`balanced_assign_candidates`).

    Returns:
        ``(centroids (k, d), assignment (N,))`` with cluster sizes differing by at most 1.
    """
    rng = np.random.default_rng(seed)
    cap = max_points_per_centroid * k
    sample = x if len(x) <= cap else x[np.sort(rng.choice(len(x), cap, replace=False))]
    centroids = kmeans(
        sample, k, niter=niter, seed=seed, max_points_per_centroid=max_points_per_centroid
    )
    for _ in range(refine):  # balanced Lloyd iterations
        assign = balanced_assign_candidates(sample, centroids, rng)
        centroids = _cluster_means(sample, assign, centroids)  # sizes are never 0
    return centroids, balanced_assign_candidates(x, centroids, rng)


def balanced_rq_kmeans(
    x: np.ndarray,
    levels: int = 3,
    codebook_size: int = 256,
    *,
    seed: int = 0,
    niter: int = 20,
    collab_start: int | None = None,
) -> QuantizeResult:
    """Residual k-means whose every level is balanced (OneRec): equal-size clusters per level.

    With ``collab_start`` level 0 balances the items with interactions over the collaborative
    columns, and the items without any join their nearest code by text
    (:func:`first_level_by_collab`), so that level is balanced up to those items.
    """
    x = check_embeddings(x, codebook_size)

    def fit(residual: np.ndarray, level: int) -> tuple[np.ndarray, np.ndarray]:
        return balanced_kmeans(residual, codebook_size, niter=niter, seed=seed + level)

    return _residual_levels(x, levels, codebook_size, fit, "balanced", collab_start)
