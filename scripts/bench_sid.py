"""Benchmark: recllm's RQ-KMeans and balanced RQ-KMeans against faiss plain k-means per level.

    python scripts/bench_sid.py                       # 200,000 x 256, 3 levels x 256 codes
    python scripts/bench_sid.py --items 20000 --dim 64 # a quick run

All three run side by side in one process on the same synthetic clustered vectors, with the same
number of Lloyd iterations and the same training subsample (faiss' default of 256 points per
centroid). The baseline is faiss k-means trained on each level's residuals followed by a faiss
nearest-centroid search: residual k-means with nothing else. Printed: wall times, their ratios to
the baseline (target: both <= 1.5), reconstruction error per level and cluster-size spread.
The last line is one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from recllm.bench.machine import cpu_name


def synthetic(items: int, dim: int, centers: int, seed: int) -> np.ndarray:
    """Clustered vectors: Gaussian centres, Gaussian noise, scaled like unit-norm embeddings."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centers, dim)).astype(np.float32)
    x = c[rng.integers(0, centers, items)] + 0.5 * rng.normal(size=(items, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x, dtype=np.float32)


def faiss_residual_kmeans(
    x: np.ndarray, levels: int, k: int, niter: int, seed: int
) -> tuple[np.ndarray, list[float]]:
    import faiss

    residual = x.copy()
    codes = np.empty((len(x), levels), dtype=np.int64)
    errors = []
    for level in range(levels):
        km = faiss.Kmeans(x.shape[1], k, niter=niter, seed=seed + level, verbose=False)
        km.train(residual)
        _, assign = km.index.search(residual, 1)
        codes[:, level] = assign[:, 0]
        residual -= km.centroids[assign[:, 0]]
        errors.append(float((residual * residual).sum(1).mean()))
    return codes, errors


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    p.add_argument("--items", type=int, default=200_000)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--centers", type=int, default=2000, help="synthetic cluster centres")
    p.add_argument("--levels", type=int, default=3)
    p.add_argument("--codebook-size", type=int, default=256)
    p.add_argument("--niter", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=1, help="best-of-N wall time per method")
    args = p.parse_args()

    import faiss

    from recllm.sid.quantize import balanced_rq_kmeans, rq_kmeans

    x = synthetic(args.items, args.dim, args.centers, args.seed)
    print(
        f"machine: {cpu_name()}, {os.cpu_count()} cores, faiss {faiss.__version__} "
        f"({faiss.omp_get_max_threads()} threads), numpy {np.__version__}"
    )
    print(
        f"data: {args.items:,} x {args.dim} clustered synthetic ({args.centers} centres), "
        f"{args.levels} levels x {args.codebook_size} codes, {args.niter} iterations"
    )

    def timed(fn):
        best, out = float("inf"), None
        for _ in range(args.repeats):
            t = time.perf_counter()
            out = fn()
            best = min(best, time.perf_counter() - t)
        return best, out

    L, K, it, s = args.levels, args.codebook_size, args.niter, args.seed
    t_faiss, (codes_f, err_f) = timed(lambda: faiss_residual_kmeans(x, L, K, it, s))
    t_rq, res_rq = timed(lambda: rq_kmeans(x, L, K, seed=s, niter=it))
    t_bal, res_bal = timed(lambda: balanced_rq_kmeans(x, L, K, seed=s, niter=it))

    def spread(codes: np.ndarray) -> list[int]:
        return [
            int(
                np.bincount(codes[:, lv], minlength=K).max()
                - np.bincount(codes[:, lv], minlength=K).min()
            )
            for lv in range(L)
        ]

    rows = [
        ("faiss k-means per level", t_faiss, err_f, spread(codes_f)),
        ("recllm rq-kmeans", t_rq, res_rq.recon_error, spread(res_rq.codes)),
        ("recllm balanced", t_bal, res_bal.recon_error, spread(res_bal.codes)),
    ]
    print(
        f"{'method':26s} {'seconds':>8s} {'ratio':>6s}  mse per level            size spread per level"
    )
    for name, t, err, spr in rows:
        print(
            f"{name:26s} {t:8.2f} {t / t_faiss:6.2f}  {' '.join(f'{e:.4f}' for e in err):24s} {spr}"
        )
    figures = {
        "items": args.items,
        "dim": args.dim,
        "levels": L,
        "codebook_size": K,
        "niter": it,
        "seconds_faiss": round(t_faiss, 3),
        "seconds_rq_kmeans": round(t_rq, 3),
        "seconds_balanced": round(t_bal, 3),
        "ratio_rq_kmeans": round(t_rq / t_faiss, 3),
        "ratio_balanced": round(t_bal / t_faiss, 3),
        "mse_faiss": round(err_f[-1], 5),
        "mse_rq_kmeans": round(res_rq.recon_error[-1], 5),
        "mse_balanced": round(res_bal.recon_error[-1], 5),
        "balanced_max_spread": max(spread(res_bal.codes)),
        "target_ratio": 1.5,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
