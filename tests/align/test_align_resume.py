"""Resume of the align recipes, bit for bit on CPU.

Iterated DPO killed with SIGKILL in the middle of its second round (after a checkpoint of that
round was saved) and rerun with ``--resume_from_checkpoint true`` keeps round 1 as it was (never
redone), continues round 2 from its checkpoint, and ends with exactly the weights of a run that
was never interrupted. The control shows the comparison can fail: the half-finished round's
checkpoint (what a naive rerun that reused it as the round's result would publish) differs from
the final weights, and so does the finished round 1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from recllm.testing import save_tiny_recommender
from tests.scripts.running import ROOT

HARNESS = ROOT / "tests" / "recipes" / "kill_harness.py"
#: Two rounds of four DPO steps each, a checkpoint every two steps.
DPO = [
    *("--rounds", "2", "--reward", "exact_hit=1,prefix_credit=0.5", "--beams", "4"),
    *("--mining_users", "8", "--loss_type", "sigmoid", "--loss_weights", "1.0"),
    *("--learning_rate", "3e-4", "--max_steps", "4", "--per_device_train_batch_size", "2"),
    *("--save_strategy", "steps", "--save_steps", "2", "--logging_steps", "1"),
    *("--bf16", "false", "--report_to", "none"),
]


def run(recipe: str, out: Path, *args: str, kill: str = "-") -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(HARNESS), str(ROOT / "recipes" / f"{recipe}.py")]
    cmd += ["--config", str(ROOT / "recipes" / f"{recipe}.yaml"), "--output_dir", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "KILL": kill}
    return subprocess.run(
        [*cmd, *args], capture_output=True, text=True, cwd=out.parent, env=env, timeout=600
    )


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(model_dir / "model.safetensors")


def differing(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k], b[k])]


@pytest.fixture(scope="module")
def sft(tmp_path_factory) -> Path:
    return save_tiny_recommender(tmp_path_factory.mktemp("tiny") / "tiny")


@pytest.mark.slow  # four recipe processes: about 2.5 min on one shared CPU thread
def test_dpo_killed_in_round_two_resumes_bit_identical(sft, tmp_path):
    reference = tmp_path / "reference"
    proc = run("dpo", reference, "--model_dir", str(sft), *DPO)
    assert proc.returncode == 0, proc.stderr[-3000:]

    out = tmp_path / "run"
    killed = run(
        "dpo", out, "--model_dir", str(sft), *DPO, kill=f"{out / 'round2' / 'trainer'}:3:step"
    )
    assert killed.returncode == -9, killed.stderr[-3000:]
    half = out / "round2" / "trainer" / "checkpoint-2"
    assert (half / "recllm_complete.json").is_file()
    assert (out / "round1" / "recllm_round_complete.json").is_file()
    assert not (out / "round2" / "recllm_round_complete.json").exists()
    assert not (out / "model").exists()
    round1 = weights(out / "round1" / "model")
    round1_mtime = (out / "round1" / "model" / "model.safetensors").stat().st_mtime_ns

    # without --resume_from_checkpoint the rerun refuses to silently start over
    again = run("dpo", out, "--model_dir", str(sft), *DPO)
    assert again.returncode == 2, again.stderr[-3000:]
    assert "--resume_from_checkpoint true" in again.stderr and "Traceback" not in again.stderr

    resumed = run("dpo", out, "--model_dir", str(sft), *DPO, "--resume_from_checkpoint", "true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"round 2 continues from {half}" in resumed.stderr
    # round 1 was not redone: its model file is the one the killed run wrote
    assert (out / "round1" / "model" / "model.safetensors").stat().st_mtime_ns == round1_mtime
    final = weights(out / "model")
    assert differing(weights(reference / "model"), final) == []
    assert differing(weights(reference / "round1" / "model"), round1) == []

    # the controls: the half-finished round and the finished round 1 both differ from the end,
    # so the equality above is not vacuous
    half_weights = load_file(half / "model.safetensors")
    assert differing(half_weights, final)
    assert differing(round1, final)


@pytest.mark.slow  # three recipe processes: over a minute on one shared CPU thread
def test_grpo_killed_between_checkpoints_resumes_bit_identical(sft, tmp_path):
    grpo = [
        *("--model_dir", str(sft), "--reward", "exact_hit=1,prefix_credit=0.5,rank_shaped=0.2"),
        *("--mining_users", "8", "--num_generations", "4", "--per_device_train_batch_size", "4"),
        *("--max_steps", "4", "--learning_rate", "1e-3", "--save_strategy", "steps"),
        *("--save_steps", "2", "--logging_steps", "1", "--bf16", "false", "--report_to", "none"),
    ]
    reference = tmp_path / "reference"
    proc = run("grpo", reference, *grpo)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "run"
    killed = run("grpo", out, *grpo, kill=f"{out / 'trainer'}:3:step")
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert (out / "trainer" / "checkpoint-2" / "recllm_complete.json").is_file()
    resumed = run("grpo", out, *grpo, "--resume_from_checkpoint", "true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = weights(out / "model")
    assert differing(weights(reference / "model"), final) == []
    half = load_file(out / "trainer" / "checkpoint-2" / "model.safetensors")
    assert differing(half, final)  # the control


def _awsft(out: Path, sft: Path, *extra: str):
    from trl import SFTConfig

    from recllm.align.awsft import AWSFTArguments, run_awsft
    from recllm.train.recipe_args import parse_recipe_args

    argv = ["--config", str(ROOT / "recipes" / "awsft.yaml"), "--output_dir", str(out)]
    argv += ["--model_dir", str(sft), "--reward", "exact_hit=1,prefix_credit=0.5"]
    argv += ["--rounds", "2", "--beams", "4", "--mining_users", "4", "--max_steps", "2"]
    argv += ["--save_strategy", "steps", "--save_steps", "1", "--bf16", "false"]
    argv += ["--learning_rate", "1e-3", "--report_to", "none", *extra]
    return run_awsft(*parse_recipe_args((AWSFTArguments, SFTConfig), argv, prog="awsft"))


def test_awsft_resume_never_redoes_a_finished_round(sft, tmp_path):
    """In process: after a run stopped between round 2's model and its completion record,
    ``--resume_from_checkpoint true`` keeps round 1 untouched, finishes round 2 from its last
    checkpoint and publishes the same weights; without the flag the rerun is refused."""
    from recllm.errors import UserError

    out = tmp_path / "awsft"
    _awsft(out, sft)
    final = weights(out / "model")
    round1 = out / "round1" / "model" / "model.safetensors"
    stamp = round1.stat().st_mtime_ns
    (out / "round2" / "recllm_round_complete.json").unlink()  # the kill fell between the two
    with pytest.raises(UserError, match="pass --resume_from_checkpoint true"):
        _awsft(out, sft)
    finished = out / "round1" / "trainer" / "checkpoint-1"
    with pytest.raises(UserError, match="is not a checkpoint of round 2, the first unfinished"):
        _awsft(out, sft, "--resume_from_checkpoint", str(finished))
    _awsft(out, sft, "--resume_from_checkpoint", "true")
    assert round1.stat().st_mtime_ns == stamp  # round 1 was not redone
    assert (out / "round2" / "recllm_round_complete.json").is_file()
    assert differing(final, weights(out / "model")) == []
    log = json.loads((out / "awsft_log.json").read_text())
    assert [r["round"] for r in log["rounds"]] == [1, 2]
    assert differing(weights(out / "round1" / "model"), final)  # the control: rounds differ
