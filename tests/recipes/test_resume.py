"""Resume and reproducibility of recipes/plum_sft.py, bit for bit on CPU.

A run killed with SIGKILL (between checkpoints, inside a checkpoint save, or during the warm-up)
and resumed with ``--resume_from_checkpoint true`` ends with the same weights and the same loss
log as a run that was never interrupted; two fresh runs with the same seed end identical too.
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

from recllm.testing import save_tiny_model

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "plum_sft.py"
HARNESS = Path(__file__).with_name("kill_harness.py")


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("base") / "m", tie_word_embeddings=False)


@pytest.fixture(scope="module")
def data(shared_data_or_none) -> str:
    return str(shared_data_or_none / "ml-100k") if shared_data_or_none else "ml-100k"


def run(base: Path, data: str, out: Path, *extra: str, kill: str = "-"):
    args = [
        *("--config", str(ROOT / "recipes" / "plum_sft.yaml")),
        *("--model_name_or_path", str(base), "--data_path", data, "--max_users", "30"),
        *("--codebook_size", "16", "--warmup_steps_embed", "3", "--max_train_examples", "96"),
        *("--per_device_train_batch_size", "4", "--logging_steps", "1", "--warmup_steps", "0"),
        *("--max_steps", "6", "--bf16", "false", "--save_strategy", "steps", "--save_steps", "2"),
        *("--output_dir", str(out), *extra),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "KILL": kill}
    return subprocess.run(
        [sys.executable, str(HARNESS), str(RECIPE), *args],
        capture_output=True,
        text=True,
        cwd=out.parent,
        env=env,
        timeout=900,
    )


def weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "model" / "model.safetensors")


def losses(out: Path) -> dict[str, list]:
    log = json.loads((out / "train_log.json").read_text())
    keys = ("step", "loss", "grad_norm", "learning_rate")
    return {
        stage: [tuple(h[k] for k in keys) for h in log[stage] if "loss" in h]
        for stage in ("warmup", "sft")
    }


def assert_same_run(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    differ = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not differ, differ
    la, lb = losses(a), losses(b)
    assert len(la["sft"]) == 6 and len(la["warmup"]) == 3
    assert la == lb


@pytest.fixture(scope="module")
def reference(base, data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "run"
    proc = run(base, data, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.slow  # the resume tests below compare runs across processes too
def test_same_seed_same_weights_across_processes(base, data, reference, tmp_path):
    out = tmp_path / "run"
    assert run(base, data, out).returncode == 0
    assert_same_run(reference, out)
    # the control: another seed changes the run, so equality above is not vacuous
    other = tmp_path / "other"
    assert run(base, data, other, "--seed", "1").returncode == 0
    assert any(not torch.equal(v, weights(other)[k]) for k, v in weights(out).items())


def test_sigkill_between_checkpoints_then_resume_is_bit_identical(base, data, reference, tmp_path):
    out = tmp_path / "run"
    killed = run(base, data, out, kill=f"{out}:5:step")
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert (out / "checkpoint-4" / "recllm_complete.json").is_file()
    assert not (out / "model").exists()
    # without --resume_from_checkpoint the rerun refuses to silently start over
    again = run(base, data, out)
    assert again.returncode == 2 and "--resume_from_checkpoint true" in again.stderr
    errors = [line for line in again.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "Traceback" not in again.stderr, again.stderr
    resumed = run(base, data, out, "--resume_from_checkpoint", "true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "checkpoint-4" in resumed.stderr
    assert_same_run(reference, out)


@pytest.mark.slow  # two more recipe processes
def test_sigkill_after_the_last_checkpoint_resumes_without_an_extra_step(
    base, data, reference, tmp_path
):
    """Killed after the last step's checkpoint was saved, before the model was written: the
    resume loads that checkpoint and trains nothing (transformers would train a 7th step of a
    6-step run: it checks max_steps only after a step)."""
    out = tmp_path / "run"
    killed = run(base, data, out, kill=f"{out}:6:saved")
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert (out / "checkpoint-6" / "recllm_complete.json").is_file()
    assert not (out / "model").exists()
    resumed = run(base, data, out, "--resume_from_checkpoint", "true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "no step trained" in resumed.stderr
    assert_same_run(reference, out)


@pytest.mark.slow  # default-suite budget (README, Tests): the kill-between-checkpoints resume test covers resuming
def test_a_save_killed_midway_never_becomes_the_latest(base, data, reference, tmp_path):
    out = tmp_path / "run"
    killed = run(base, data, out, kill=f"{out}:4:save")
    assert killed.returncode == -9
    half = out / "checkpoint-4"
    assert (half / "optimizer.pt").is_file() and not (half / "trainer_state.json").exists()
    # the control: transformers' own choice of the latest checkpoint is the half-written one
    from transformers.trainer_utils import get_last_checkpoint

    assert get_last_checkpoint(str(out)) == str(half)
    explicit = run(base, data, out, "--resume_from_checkpoint", str(half))
    assert explicit.returncode == 2 and "incomplete checkpoint" in explicit.stderr
    resumed = run(base, data, out, "--resume_from_checkpoint", "true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (out / "incomplete" / "checkpoint-4" / "optimizer.pt").is_file()
    assert_same_run(reference, out)


@pytest.mark.slow  # default-suite budget (README, Tests): the kill-between-checkpoints resume test covers resuming
def test_sigkill_in_the_warmup_resumes_the_warmup(base, data, reference, tmp_path):
    out = tmp_path / "run"
    killed = run(base, data, out, kill=f"{out / 'warmup'}:3:step")
    assert killed.returncode == -9
    assert (out / "warmup" / "checkpoint-2" / "recllm_complete.json").is_file()
    assert not (out / "warmup" / "sid_rows.pt").exists()
    resumed = run(base, data, out, "--resume_from_checkpoint", "true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(reference, out)
