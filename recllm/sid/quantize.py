"""Residual quantizers that turn item embeddings into code tuples.

All quantizers share one result type, :class:`QuantizeResult`, so collision handling, metrics and
the SID map never care which method made the codes.

- :func:`rq_kmeans`: residual k-means. Level ``l`` clusters the residuals left by levels
  ``0..l-1`` (faiss k-means underneath when installed, scikit-learn otherwise).
- :func:`balanced_rq_kmeans`: the same with balanced clusters at every level, as OneRec
  describes: every code of a level holds ``N // K`` or ``N // K + 1`` items.
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
    """

    codes: np.ndarray
    codebook_sizes: tuple[int, ...]
    codebooks: list[np.ndarray]
    last_input: np.ndarray
    recon_error: list[float]
    extras: dict[str, object] = field(default_factory=dict)


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
) -> QuantizeResult:
    residual = x.copy()
    codes = np.empty((len(x), levels), dtype=np.int64)
    codebooks: list[np.ndarray] = []
    errors: list[float] = []
    last_input = residual
    for level in tqdm(range(levels), desc=desc, unit="level", leave=False):
        centroids, assign = fit_level(residual, level)
        # Final M-step on all points: each code vector becomes the mean of the residuals it
        # holds. Then every level provably lowers (never raises) the mean squared error.
        centroids = _cluster_means(residual, assign, centroids)
        codes[:, level] = assign
        codebooks.append(centroids)
        if level == levels - 1:
            last_input = residual  # keep the last level's input; the residual becomes new
            residual = residual - centroids[assign]
        else:
            residual -= centroids[assign]
        errors.append(float(np.einsum("ij,ij->", residual, residual, dtype=np.float64)) / len(x))
        logger.debug("%s level %d: mse %.6f", desc, level, errors[-1])
    return QuantizeResult(codes, (codebook_size,) * levels, codebooks, last_input, errors)


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
    x: np.ndarray, levels: int = 3, codebook_size: int = 256, *, seed: int = 0, niter: int = 20
) -> QuantizeResult:
    """Residual k-means: level ``l`` runs k-means on the residuals of levels ``< l``.

    Args:
        x: ``(N, d)`` item embeddings.
        levels: Number of code levels ``L``.
        codebook_size: Codes per level ``K``.
        seed: Seeds level ``l`` with ``seed + l``.
        niter: Lloyd iterations per level.
    """
    x = check_embeddings(x, codebook_size)

    def fit(residual: np.ndarray, level: int) -> tuple[np.ndarray, np.ndarray]:
        centroids = kmeans(residual, codebook_size, niter=niter, seed=seed + level)
        return centroids, nearest(residual, centroids)

    return _residual_levels(x, levels, codebook_size, fit, "rq-kmeans")


def balanced_assign(dist: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Assign ``N`` points to ``K`` clusters of sizes ``N // K`` or ``N // K + 1``.

    OneRec's greedy: visit the clusters in a random order; each takes its nearest still
    unassigned points up to its size. ``dist`` is ``(K, N)`` (cluster-major, so each cluster's
    row is contiguous).
    """
    k, n = dist.shape
    sizes = np.full(k, n // k, dtype=np.int64)
    sizes[: n % k] += 1
    assign = np.full(n, -1, dtype=np.int64)
    pool = np.arange(n)  # unassigned points
    for c in rng.permutation(k):
        size = sizes[c]
        row = dist[c, pool]
        if size < len(pool):
            take = np.argpartition(row, size - 1)[:size]
        else:
            take = np.arange(len(pool))
        assign[pool[take]] = c
        keep = np.ones(len(pool), dtype=bool)
        keep[take] = False
        pool = pool[keep]
    return assign


def _augment_points(x: np.ndarray) -> np.ndarray:
    """``[-2x, 1, |x|^2]`` so one GEMM with :func:`_augment_centroids` gives squared distances."""
    out = np.empty((len(x), x.shape[1] + 2), dtype=np.float32)
    np.multiply(x, -2.0, out=out[:, :-2])
    out[:, -2] = 1.0
    out[:, -1] = np.einsum("ij,ij->i", x, x)
    return out


def _augment_centroids(c: np.ndarray) -> np.ndarray:
    """``[c, |c|^2, 1]``; ``aug_c @ aug_x.T`` = ``|x|^2 - 2 x.c + |c|^2``."""
    out = np.empty((len(c), c.shape[1] + 2), dtype=np.float32)
    out[:, :-2] = c
    out[:, -2] = np.einsum("ij,ij->i", c, c)
    out[:, -1] = 1.0
    return out


def balanced_kmeans(
    x: np.ndarray,
    k: int,
    *,
    niter: int = 20,
    seed: int = 0,
    max_points_per_centroid: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """Balanced k-means: Lloyd iterations with :func:`balanced_assign` as the assignment step.

    Centroids are trained on a subsample of ``max_points_per_centroid * k`` points (as faiss
    does for plain k-means); the final balanced assignment covers all points.

    Returns:
        ``(centroids (k, d), assignment (N,))`` with cluster sizes differing by at most 1.
    """
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    cap = max_points_per_centroid * k
    sample = x if len(x) <= cap else x[np.sort(rng.choice(len(x), cap, replace=False))]
    sample_aug = _augment_points(sample)  # (n, d + 2)
    centroids = sample[rng.choice(len(sample), k, replace=False)].copy()
    ones = np.ones(len(sample), dtype=np.float32)
    cols = np.arange(len(sample))
    for _ in range(niter):
        # (k, n) squared distances in one GEMM, cluster-major for balanced_assign
        assign = balanced_assign(_augment_centroids(centroids) @ sample_aug.T, rng)
        # cluster sums as one sparse (K, n) @ (n, d) product; sizes are never 0
        onehot = sp.csr_matrix((ones, (assign, cols)), shape=(k, len(sample)))
        centroids = (onehot @ sample) / np.bincount(assign, minlength=k)[:, None]
        centroids = centroids.astype(np.float32)
    if sample is not x:
        assign = balanced_assign(_augment_centroids(centroids) @ _augment_points(x).T, rng)
    return centroids, assign


def balanced_rq_kmeans(
    x: np.ndarray, levels: int = 3, codebook_size: int = 256, *, seed: int = 0, niter: int = 20
) -> QuantizeResult:
    """Residual k-means whose every level is balanced (OneRec): equal-size clusters per level."""
    x = check_embeddings(x, codebook_size)

    def fit(residual: np.ndarray, level: int) -> tuple[np.ndarray, np.ndarray]:
        return balanced_kmeans(residual, codebook_size, niter=niter, seed=seed + level)

    return _residual_levels(x, levels, codebook_size, fit, "balanced")
