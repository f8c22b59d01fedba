"""The alignment recipes under a real 2-process ``accelerate launch`` on CPU (DDP over gloo), as
the SFT recipe runs on several GPUs: rank 0 mines and writes the pairs once, every rank trains
on its share of them (the step count shows the split), rank 0 saves the round models."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys

import pytest

from recllm.align.mining import load_preferences
from recllm.testing import save_tiny_recommender
from recllm.vocab import load_model_with_sids
from tests.scripts.running import ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "recipe",
    ["dpo", pytest.param("grpo", marks=pytest.mark.slow)],  # ~30 s each
)
def test_two_processes(tmp_path, recipe):
    sft = save_tiny_recommender(tmp_path / "tiny")
    out = tmp_path / recipe
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2"]
    cmd += ["--config_file", str(ROOT / "recipes" / "accelerate" / "ddp.yaml")]  # gloo on CPU
    cmd += ["--main_process_port", str(free_port()), "--mixed_precision", "no"]
    cmd += [str(ROOT / "recipes" / f"{recipe}.py")]
    cmd += ["--config", str(ROOT / "recipes" / f"{recipe}.yaml"), "--model_dir", str(sft)]
    cmd += ["--output_dir", str(out), "--mining_users", "16", "--bf16", "false"]
    cmd += ["--reward", "exact_hit=1,prefix_credit=0.5", "--logging_steps", "1"]
    cmd += ["--per_device_train_batch_size", "4", "--learning_rate", "1e-3"]
    if recipe == "dpo":
        cmd += ["--beams", "6", "--rounds", "1", "--loss_type", "sigmoid", "--loss_weights", "1.0"]
    else:
        cmd += ["--num_generations", "4", "--max_steps", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]

    log = json.loads((out / f"{recipe}_log.json").read_text())
    history = log["rounds"][0]["dpo"] if recipe == "dpo" else log["grpo"]
    losses = [h["loss"] for h in history if "loss" in h]
    assert losses and all(math.isfinite(x) for x in losses)
    if recipe == "dpo":
        prefs, meta = load_preferences(out / "round1" / "preferences")
        assert meta["examples"] == 16 and len(prefs) > 0
        # one epoch over the pairs, split over 2 ranks of 4 pairs a step
        assert history[-1]["step"] == math.ceil(len(prefs) / 8)
        assert losses[0] == pytest.approx(math.log(2), abs=1e-3)
    else:
        rollouts = (out / "rollouts.jsonl").read_text().splitlines()
        # rank 0 logs its own groups: 2 steps x (4 completions = 1 group) on that rank
        assert len(rollouts) == 2
    _, _, sid_map = load_model_with_sids(out / "model")
    assert len(sid_map) == 60
