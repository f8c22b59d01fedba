"""scripts/learning_curve.py on a tiny model and data set: the recipe trains, the model is ranked
every N steps beside most-popular, curve.json/curve.png written, the last line one JSON object."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from recllm.testing import save_tiny_model, save_tiny_recommender

ROOT = Path(__file__).resolve().parents[2]


def test_curve_points_every_n_steps_and_at_the_end(tmp_path):
    data = save_tiny_recommender(tmp_path / "tiny").parent / "data"
    base = save_tiny_model(tmp_path / "base")
    out = tmp_path / "curve"
    recipe = ["--model_name_or_path", str(base), "--data_path", str(data), "--bf16", "false"]
    recipe += ["--codebook_size", "8", "--max_steps", "5", "--per_device_train_batch_size", "2"]
    recipe += ["--output_dir", str(tmp_path / "run"), "--logging_steps", "1"]
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "learning_curve.py"),
            *("--config", str(ROOT / "recipes" / "quickstart.yaml")),
            *("--every", "2", "--eval-users", "12", "--out", str(out)),
            *recipe,
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["users"] == 12
    assert [p["step"] for p in summary["curve"]] == [2, 4, 5]  # every 2 steps and the last
    minutes = [p["train_min"] for p in summary["curve"]]
    assert minutes == sorted(minutes) and minutes[0] >= 0
    for point in summary["curve"]:
        assert 0 <= point["R10"] <= 1 and 0 <= point["N10"] <= point["R10"] + 1e-9
        assert point["popR10"] == summary["curve"][0]["popR10"]  # same users every time
    assert json.loads((out / "curve.json").read_text())["curve"] == summary["curve"]
    assert (out / "curve.png").read_bytes()[:4] == b"\x89PNG"
    # the trained model is the recipe's ordinary output
    assert (tmp_path / "run" / "model" / "recllm_vocab.json").is_file()
