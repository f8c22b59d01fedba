"""scripts/align_benchmark.py on a tiny chat recommender: the reward model trained and scored,
the start scored, a DPO stage (slow) compared user by user, the last line one JSON object."""

from __future__ import annotations

import json

import pytest

from recllm.testing import save_tiny_recommender
from tests.scripts.running import run_script

SMALL = ["--sasrec-minutes", "0.02", "--sasrec-batch", "16", "--eval-users", "10", "--beams", "10"]


def test_align_benchmark_start_and_reward_model(tmp_path):
    sft = save_tiny_recommender(tmp_path / "tiny")
    out = tmp_path / "out"
    proc, figures = run_script(
        "align_benchmark.py", "--sft", str(sft), "--out", str(out), "--stages", *SMALL, cwd=tmp_path
    )
    assert set(figures) == {"SFT start", "SASRec (the reward model, same run)"}
    start = figures["SFT start"]
    assert 0 <= start["N@10"] <= start["R@10"] <= 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["users"] == 10 and summary["split"] == "test" and summary["beams"] == 10
    assert summary["rows"]["SFT start"]["invalid_rate"] == 0.0
    assert (out / "reward_model" / "sasrec.json").is_file()
    assert (out / "align_benchmark.png").read_bytes()[:4] == b"\x89PNG"
    assert "SFT start" in proc.stdout
    # --replot draws from the summary alone
    _, again = run_script("align_benchmark.py", "--replot", str(out), cwd=tmp_path)
    assert again == figures


@pytest.mark.slow  # a DPO round through accelerate launch
def test_align_benchmark_one_dpo_stage_paired_with_the_start(tmp_path):
    sft = save_tiny_recommender(tmp_path / "tiny")
    out = tmp_path / "out"
    dpo = "--rounds 1 --beams 4 --mining_users 8 --max_steps 2 --bf16 false"
    args = ["--sft", str(sft), "--out", str(out), "--stages", "dpo", "--dpo-args", dpo, *SMALL]
    _, figures = run_script("align_benchmark.py", *args, cwd=tmp_path)
    row = figures["+ DPO (seed 0)"]
    assert 0 <= row["R@10"] <= 1 and row["minutes"] > 0 and 0 <= row["R@10_p"] <= 1
    summary = json.loads((out / "summary.json").read_text())
    paired = summary["paired_vs_sft"]["+ DPO (seed 0)"]
    assert paired["users_gained"] + paired["users_lost"] <= 10
    assert (out / "dpo_seed0" / "arm.json").is_file()
    # a rerun trains nothing and reads every score from the cache
    stamp = (out / "dpo_seed0" / "arm.json").stat().st_mtime_ns
    _, again = run_script("align_benchmark.py", *args, cwd=tmp_path)
    assert again == figures and (out / "dpo_seed0" / "arm.json").stat().st_mtime_ns == stamp
