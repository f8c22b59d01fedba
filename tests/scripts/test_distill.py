"""scripts/distill.py end to end on the tiny data set: one teacher, a control arm and a
distilled arm from the same start, the weight chosen on validation, test rows paired with the
control, the summary, the plot, the last line; a rerun reuses every part."""

from __future__ import annotations

import json

import pytest

from recllm.testing import save_tiny_recommender
from tests.scripts.running import ROOT, run_script


@pytest.mark.slow  # a teacher, two recipe runs under accelerate launch, twice
def test_distill_smoke(tmp_path):
    data = save_tiny_recommender(tmp_path / "tiny").parent / "data"
    out = tmp_path / "out"
    args = ["--config", str(ROOT / "recipes" / "seqlm.yaml"), "--data", str(data)]
    args += ["--out", str(out), "--weights", "0", "2", "--teacher-minutes", "0.05"]
    args += ["--recipe-args", "--valid_users", "10", "--num_train_epochs", "2"]
    args += ["--codebook_size", "4", "--hidden_size", "32", "--num_heads", "2"]
    args += ["--intermediate_size", "64", "--per_device_train_batch_size", "8"]
    args += ["--warmup_steps", "0", "--time_budget_minutes", "null", "--bf16", "false"]
    args += ["--logging_steps", "2"]
    proc, last = run_script("distill.py", *args, cwd=tmp_path)
    assert list(last["rows"]) == [
        "no teacher (control)",
        "distill_weight 2",
        "SASRec (the teacher, same run)",
    ]
    assert last["chosen_weight"] == 2  # the only weight > 0
    summary = json.loads((out / "summary.json").read_text())
    assert (
        summary["test_users"] == 40 and summary["paired_vs_control"]["no teacher (control)"] is None
    )
    for name, f in summary["rows"].items():
        assert 0 <= f["ndcg@10"] <= f["recall@10"] <= 1, name
    # both arms were validated on the same seeded users; only the distilled one had a teacher
    control = json.loads((out / "w0" / "train_log.json").read_text())
    distilled = json.loads((out / "w2" / "train_log.json").read_text())
    assert "teacher" not in control and distilled["teacher"]["weight"] == 2.0
    steps = [h for h in distilled["seeds"]["0"]["log_history"] if "loss" in h]
    assert steps and all(h["distill_kl"] > 0 for h in steps)
    assert summary["rows"]["distill_weight 2"]["valid"]["recall@10"] >= 0
    assert (out / "distill.png").read_bytes()[:4] == b"\x89PNG"
    assert "| **distill_weight 2** |" in (out / "table.md").read_text()
    assert "user by user against the control" in proc.stdout
    # a rerun trains and scores nothing again: the same figures
    stamp = (out / "w2" / "model" / "model.safetensors").stat().st_mtime_ns
    _, again = run_script("distill.py", *args, cwd=tmp_path)
    assert again == last
    assert (out / "w2" / "model" / "model.safetensors").stat().st_mtime_ns == stamp
