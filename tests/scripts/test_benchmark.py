"""scripts/benchmark.py end to end on a tiny data set: recllm's decoders and SASRec in one run,
the last line one JSON object, and data of no published table says so."""

from __future__ import annotations

import json

from recllm.testing import save_tiny_recommender
from tests.scripts.running import run_script


def test_benchmark_smoke(tmp_path):
    """One run: the recipe's decoder and SASRec measured, the published rows of the dataset named
    by --dataset printed beside them with their sources (matching by folder name:
    tests/eval/test_published.py)."""
    data = save_tiny_recommender(tmp_path / "tiny").parent / "data"
    out = tmp_path / "bench"
    proc, summary = run_script(
        "benchmark.py",
        *("--data", str(data), "--out", str(out), "--sasrec-minutes", "0.05"),
        *("--dataset", "beauty", "--ensemble", "1", "--valid_users", "20"),
        *("--num_train_epochs", "2", "--codebook_size", "4", "--hidden_size", "32"),
        *("--num_heads", "2", "--intermediate_size", "64", "--per_device_train_batch_size", "8"),
        *("--warmup_steps", "0", "--logging_steps", "5"),
        cwd=tmp_path,
    )
    assert set(summary["rows"]) == {"recllm SID decoder (beam 20)", "SASRec (same run)"}
    for figures in summary["rows"].values():
        assert {"recall@5", "ndcg@5", "recall@10", "ndcg@10"} <= set(figures)
    assert summary["rows"]["recllm SID decoder (beam 20)"]["invalid_rate"] == 0.0
    assert summary["users"] == 40
    assert summary["dataset"] == "beauty" and "TIGER (paper)" in summary["published"]
    assert "TIGER (paper)" in proc.stdout and "NeurIPS 2023, Table 1" in proc.stdout
    assert (out / "metrics.json").is_file() and (out / "recall.png").is_file()
    assert (out / "seqlm" / "model").is_dir()
    # the recipe's teacher (the YAML's distill_weight 1) is the SASRec row itself, not a second
    # SASRec trained inside the recipe
    recipe = json.loads((out / "seqlm" / "resolved_config.json").read_text())["seqlm"]
    assert recipe["distill_weight"] == 1.0 and recipe["teacher"] == str(out / "sasrec")
    assert summary["info"]["sasrec"]["saved_as_teacher"] == str(out / "sasrec")
    assert (out / "sasrec" / "sasrec.json").is_file() and not (out / "seqlm" / "teacher").exists()
