"""scripts/bench_sid.py on small synthetic vectors: faiss, rq-kmeans and balanced rq-kmeans
timed on the same data, the last line one JSON object."""

from __future__ import annotations

import pytest

from tests.scripts.running import run_script


def test_bench_sid_smoke(tmp_path):
    pytest.importorskip("faiss")
    args = ["--items", "3000", "--dim", "16", "--centers", "40", "--levels", "2"]
    args += ["--codebook-size", "8", "--niter", "3"]
    proc, figures = run_script("bench_sid.py", *args, cwd=tmp_path)
    assert (figures["items"], figures["levels"], figures["codebook_size"]) == (3000, 2, 8)
    for method in ("faiss", "rq_kmeans", "balanced"):
        assert figures[f"seconds_{method}"] > 0
        # unit-norm vectors: a residual's squared norm is below the vector's (1)
        assert 0 < figures[f"mse_{method}"] < 1
    assert figures["ratio_rq_kmeans"] > 0 and figures["ratio_balanced"] > 0
    # balanced: cluster sizes within a few items of each other (3000 / 8 = 375 per code)
    assert figures["balanced_max_spread"] <= 375
    assert "recllm balanced" in proc.stdout
