"""scripts/learning_curve.py on a tiny model and data set: the recipe trains, the model is ranked
every N steps beside most-popular, curve.json/curve.png written, the last line one JSON object."""

from __future__ import annotations

import json

from recllm.testing import save_tiny_model, save_tiny_recommender
from tests.scripts.running import ROOT, run_script


def test_curve_points_every_n_steps_and_at_the_end(tmp_path):
    data = save_tiny_recommender(tmp_path / "tiny").parent / "data"
    base = save_tiny_model(tmp_path / "base")
    out = tmp_path / "curve"
    recipe = ["--model_name_or_path", str(base), "--data_path", str(data), "--bf16", "false"]
    recipe += ["--codebook_size", "8", "--max_steps", "5", "--per_device_train_batch_size", "2"]
    recipe += ["--output_dir", str(tmp_path / "run"), "--logging_steps", "1"]
    _, summary = run_script(
        "learning_curve.py",
        *("--config", str(ROOT / "recipes" / "quickstart.yaml")),
        *("--every", "2", "--eval-users", "12", "--out", str(out)),
        *recipe,
        cwd=tmp_path,
    )
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
