"""RQ-KMeans and balanced residual k-means: exact properties on small data."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from recllm.sid.quantize import (
    balanced_assign,
    balanced_assign_candidates,
    balanced_kmeans,
    balanced_rq_kmeans,
    check_embeddings,
    rq_kmeans,
)


def clustered(n: int = 2000, d: int = 16, centers: int = 40, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centers, d))
    return (c[rng.integers(0, centers, n)] + 0.2 * rng.normal(size=(n, d))).astype(np.float32)


@pytest.mark.parametrize("n", [1000, 1003, 1031])
def test_balanced_sizes_differ_by_at_most_one(n):
    x = clustered(n)
    centroids, assign = balanced_kmeans(x, 32, niter=5, seed=0, max_points_per_centroid=8)
    sizes = np.bincount(assign, minlength=32)
    assert sizes.max() - sizes.min() <= 1
    assert sizes.sum() == n
    assert centroids.shape == (32, 16)


def test_balanced_assign_exact_small_case():
    # 4 points, 2 clusters: both points near cluster 0 cannot both go there (size 2 each)
    dist = np.array([[0.0, 0.1, 5.0, 5.0], [1.0, 2.0, 0.0, 0.2]])  # (K, N)
    assign = balanced_assign(dist, np.random.default_rng(0))
    assert assign.tolist() == [0, 0, 1, 1]
    dist = np.array([[0.0, 0.1, 0.2, 5.0], [1.0, 2.0, 3.0, 0.0]])
    assign = balanced_assign(dist, np.random.default_rng(0))
    assert np.bincount(assign).tolist() == [2, 2]


@pytest.mark.parametrize("method", [rq_kmeans, balanced_rq_kmeans])
def test_levels_reduce_error_monotonically(method):
    x = clustered()
    r = method(x, levels=4, codebook_size=16, seed=0, niter=10)
    total = float((x * x).sum(1).mean())
    errors = [total, *r.recon_error]
    assert all(b <= a for a, b in itertools.pairwise(errors)), errors
    assert errors[-1] < 0.5 * total
    # the reported error is the true error of the reconstruction from the codebooks
    recon = sum(book[r.codes[:, lv]] for lv, book in enumerate(r.codebooks))
    assert np.isclose(((x - recon) ** 2).sum(1).mean(), r.recon_error[-1], rtol=1e-4)


def test_balanced_every_level_balanced():
    r = balanced_rq_kmeans(clustered(1000), levels=3, codebook_size=16, seed=1, niter=5)
    for level in range(3):
        sizes = np.bincount(r.codes[:, level], minlength=16)
        assert sizes.min() in (62, 63) and sizes.max() - sizes.min() <= 1


@pytest.mark.parametrize("method", [rq_kmeans, balanced_rq_kmeans])
def test_deterministic(method):
    x = clustered()
    a = method(x, levels=3, codebook_size=16, seed=3, niter=5)
    b = method(x, levels=3, codebook_size=16, seed=3, niter=5)
    assert np.array_equal(a.codes, b.codes)
    assert a.codes.dtype == np.int64 and a.codes.shape == (2000, 3)
    assert a.codes.min() >= 0 and a.codes.max() < 16


def test_rq_kmeans_groups_clustered_points():
    # two far-apart blobs: level 0 with 2 codes separates them exactly
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(50, 4)) + 100, rng.normal(size=(50, 4)) - 100]).astype(
        np.float32
    )
    r = rq_kmeans(x, levels=1, codebook_size=2, seed=0)
    assert len(set(r.codes[:50, 0])) == 1 and len(set(r.codes[50:, 0])) == 1
    assert r.codes[0, 0] != r.codes[50, 0]


def test_nan_embeddings_rejected():
    x = clustered(100)
    x[7, 3] = np.nan
    with pytest.raises(
        ValueError, match=r"1 rows contain NaN or infinite values \(first rows: \[7\]\).*Fix"
    ):
        check_embeddings(x, 16)


def test_too_few_items_rejected():
    with pytest.raises(
        ValueError, match=r"10 items but codebook size 16.*Fix: pass --codebook-size <= 10"
    ):
        rq_kmeans(clustered(10), levels=2, codebook_size=16)


def test_wrong_rank_rejected():
    with pytest.raises(ValueError, match="expected an \\(items, dim\\) matrix"):
        check_embeddings(np.zeros(5, dtype=np.float32), 2)


def test_candidate_assignment_balanced_even_when_all_points_agree():
    # every point prefers centroid 0: rounds fill it, the rest spill to the others, sizes exact
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(1000, 4)) * 0.01).astype(np.float32)
    centroids = np.array([[0, 0, 0, 0], [5, 0, 0, 0], [0, 5, 0, 0], [0, 0, 9, 0]], np.float32)
    assign = balanced_assign_candidates(x, centroids, rng, candidates=2, exact_below=10)
    assert np.bincount(assign, minlength=4).tolist() == [250, 250, 250, 250]
    # the 250 points nearest to centroid 0 are the ones it kept
    d0 = (x**2).sum(1)
    assert set(np.flatnonzero(assign == 0)) == set(np.argsort(d0, kind="stable")[:250])


def _behaviour_blobs(seed: int = 0):
    """Items whose behaviour (4 tight collaborative clusters) disagrees with their text (wide,
    random), and 12 items without interactions (zero collaborative block)."""
    rng = np.random.default_rng(seed)
    group = np.repeat(np.arange(4), 50)
    centers = 3.0 * np.eye(4, dtype=np.float32)
    collab = centers[group] + 0.1 * rng.standard_normal((200, 4)).astype(np.float32)
    cold = np.arange(0, 200, 17)
    collab[cold] = 0.0
    text = 5.0 * rng.standard_normal((200, 6)).astype(np.float32)
    return np.hstack([text, collab]), group, cold


def _purity(codes: np.ndarray, group: np.ndarray) -> float:
    """Share of items whose code holds mostly items of their own group."""
    hits = sum(np.bincount(group[codes == c]).max() for c in np.unique(codes))
    return hits / len(codes)


@pytest.mark.parametrize("fn", [rq_kmeans, balanced_rq_kmeans])
def test_collab_first_level_follows_behaviour(fn):
    x, group, cold = _behaviour_blobs()
    warm = np.setdiff1d(np.arange(200), cold)
    r = fn(x, levels=2, codebook_size=4, seed=0, collab_start=6)
    first = r.codes[:, 0]
    assert _purity(first[warm], group[warm]) == 1.0  # one code per behaviour cluster
    # control: the fused first level clusters the (wider) text and mixes the behaviour groups
    fused = fn(x, levels=2, codebook_size=4, seed=0).codes[:, 0]
    assert _purity(fused[warm], group[warm]) < 0.6
    # the first code of a warm item does not depend on its text
    y = x.copy()
    y[:, :6] = np.random.default_rng(5).standard_normal((200, 6)) * 5
    again = fn(y, levels=2, codebook_size=4, seed=0, collab_start=6).codes[:, 0]
    np.testing.assert_array_equal(again[warm], first[warm])
    # items without interactions: the code whose warm items are nearest in text on average
    means = np.stack([x[warm][first[warm] == c, :6].mean(0) for c in range(4)])
    expected = ((x[cold, None, :6] - means[None]) ** 2).sum(-1).argmin(1)
    np.testing.assert_array_equal(first[cold], expected)
    np.testing.assert_allclose(r.first_text_centroids, means, rtol=1e-5, atol=1e-5)
    # later levels quantize the residual of the fused means: the error falls level by level
    assert r.recon_error[1] < r.recon_error[0]


def test_collab_first_level_needs_collab_columns():
    x, _, _ = _behaviour_blobs()
    with pytest.raises(ValueError, match="collaborative columns"):
        rq_kmeans(x, levels=2, codebook_size=4, collab_start=10)
    y = x.copy()
    y[:, 6:] = 0.0
    y[:3, 6] = 1.0  # 3 items with interactions, 4 codes
    with pytest.raises(ValueError, match="3 items have interactions but the first level has 4"):
        rq_kmeans(y, levels=2, codebook_size=4, collab_start=6)
