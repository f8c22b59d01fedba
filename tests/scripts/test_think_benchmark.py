"""scripts/think_benchmark.py on a tiny start model (a 1-step PLUM run on 30 ml-100k users): the
rationales, both arms, the rows scored on the same users, the last line one JSON object."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from recllm.testing import save_tiny_model
from tests.scripts.running import ROOT, run_script


@pytest.mark.slow  # a PLUM run, rationales, two onerec_think arms under accelerate launch
def test_think_benchmark_smoke(tmp_path, shared_data_or_none):
    data = str(shared_data_or_none / "ml-100k") if shared_data_or_none else "ml-100k"
    base = save_tiny_model(tmp_path / "base", tie_word_embeddings=False)
    plum = [sys.executable, str(ROOT / "recipes" / "plum_sft.py")]
    plum += ["--config", str(ROOT / "recipes" / "plum_sft.yaml"), "--model_name_or_path", str(base)]
    plum += ["--data_path", data, "--max_users", "30", "--codebook_size", "16"]
    plum += ["--warmup_steps_embed", "0", "--max_steps", "1", "--output_dir", str(tmp_path / "s")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(plum, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = tmp_path / "out"
    args = ["--start", str(tmp_path / "s" / "model"), "--out", str(out), "--steps", "2"]
    args += ["--batch", "2", "--per-user", "1", "--eval-users", "6", "--beams", "10"]
    args += ["--think-tokens", "12", "--ahead-engine", "hf", "--paths", "1", "--prefixes", "2"]
    args += ["--depth", "1", "--rows", "start", "nothink", "think_greedy", "ahead_nothink"]
    _, last = run_script("think_benchmark.py", *args, cwd=tmp_path)
    rows = [k for k in last if k not in ("prefix_recall", "think_ahead_users_per_second")]
    assert len(rows) == 4 and "no-think SFT (control arm)" in rows
    for name in rows:
        assert 0 <= last[name]["N@10"] <= last[name]["R@10"] <= 1
        assert last[name]["invalid_rate"] == 0.0 and last[name]["users_per_second"] > 0
    assert 0 <= last["prefix_recall"] <= 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["users"] == 6 and set(summary["train_minutes"]) == {"nothink", "think"}
    assert summary["rows"]["no-think SFT (control arm)"]["paired_vs_nothink"] is None
    think_row = summary["rows"]["think SFT, thinking (1 greedy rationale)"]
    assert set(think_row["paired_vs_nothink"]) >= {"R@10", "N@10", "users_gained"}
    assert (out / "think_benchmark.png").read_bytes()[:4] == b"\x89PNG"
