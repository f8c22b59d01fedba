"""scripts/sasrec_beauty.py on a tiny data set given with --data: SASRec trained within its
budget, scored on the test users beside the published Beauty rows, the last line one JSON
object; --out writes metrics.json and recall.png."""

from __future__ import annotations

import json

from recllm.testing import save_tiny_recommender
from tests.scripts.running import run_script


def test_sasrec_beauty_smoke(tmp_path):
    data = save_tiny_recommender(tmp_path / "tiny").parent / "data"
    out = tmp_path / "out"
    args = ["--data", str(data), "--minutes", "0.1", "--threads", "1", "--out", str(out)]
    args += ["--epochs", "2", "--hidden-size", "16"]
    proc, summary = run_script("sasrec_beauty.py", *args, cwd=tmp_path)
    assert summary["dataset"] == "beauty" and summary["split"] == "test"
    assert summary["users"] == 40 and 1 <= summary["epochs"] <= 2
    for c in ("recall@5", "ndcg@5", "recall@10", "ndcg@10"):
        assert 0 <= summary[c] <= 1 and 0 <= summary["seen_removed"][c] <= 1
    assert summary["ndcg@10"] <= summary["recall@10"]
    assert summary["config"]["hidden_size"] == 16 and summary["config"]["dropout"] == 0.5
    assert "TIGER" in proc.stdout  # the published rows beside ours
    saved = json.loads((out / "metrics.json").read_text())
    assert round(saved["metrics"]["recall@10"], 4) == summary["recall@10"]  # the same run
    assert saved["dataset"] == "beauty" and len(saved["history"]) == summary["epochs"]
    assert (out / "recall.png").read_bytes()[:4] == b"\x89PNG"
