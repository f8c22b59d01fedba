"""scripts/sid_levels.py on the tiny recommender: per-level teacher-forced hit rates of each model,
the PNG and JSON written, the last line one JSON object."""

from __future__ import annotations

import json

import pytest

from recllm.testing import save_tiny_recommender
from tests.scripts.running import run_script


@pytest.mark.slow  # default-suite budget (15 min on 2 cores): runs in CI's slow step
def test_sid_levels_smoke(tmp_path):
    model = save_tiny_recommender(tmp_path / "tiny")
    other = save_tiny_recommender(tmp_path / "other", seed=1)
    out = tmp_path / "levels"
    args = ["--model", str(model), str(other), "--data", str(model.parent / "data")]
    args += ["--max-users", "8", "--out", str(out), "--threads", "1"]
    proc, results = run_script("sid_levels.py", *args, cwd=tmp_path)
    assert list(results) == [str(model), str(other)]
    for rep in results.values():
        for k in (1, 5, 10, 20):
            hits = rep[f"hit@{k}"]
            assert len(hits) == 3 and all(0 <= h <= 1 for h in hits)  # three SID levels
        # a wider cut-off never holds fewer targets
        assert all(a <= b for a, b in zip(rep["hit@1"], rep["hit@20"], strict=True))
        # the trie allows at most the codebook's codes (6, 7, 8) at each level
        assert all(1 <= n <= size for n, size in zip(rep["mean_allowed"], (6, 7, 8), strict=True))
    assert json.loads((out / "levels.json").read_text())["results"] == results
    assert (out / "hit_at_10_by_level.png").read_bytes()[:4] == b"\x89PNG"
    assert "hit@10" in proc.stdout
