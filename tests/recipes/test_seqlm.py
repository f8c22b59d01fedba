"""recipes/seqlm.py as users run it: the YAML parses into its dataclasses, and a tiny run writes
model directories that `recllm eval` scores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from trl import SFTConfig

from recllm.data import DataConfig
from recllm.errors import UserError
from recllm.sid.config import SIDConfig
from recllm.testing import save_tiny_recommender
from recllm.train.recipe_args import parse_recipe_args
from recllm.train.seqlm import SeqLMArguments

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "seqlm.py"
YAML = ROOT / "recipes" / "seqlm.yaml"
TYPES = (SeqLMArguments, DataConfig, SIDConfig, SFTConfig)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
#: A decoder and SID map small enough for a few seconds of CPU.
TINY = [
    *("--codebook_size", "4", "--hidden_size", "32", "--num_heads", "2"),
    *("--intermediate_size", "64", "--per_device_train_batch_size", "8", "--warmup_steps", "0"),
    *("--learning_rate", "3e-3", "--logging_steps", "1", "--time_budget_minutes", "null"),
]


def test_yaml_parses_into_the_recipe_dataclasses():
    seqlm, data, sid, sft = parse_recipe_args(TYPES, ["--config", str(YAML)], prog="seqlm")
    assert isinstance(seqlm, SeqLMArguments) and isinstance(sft, SFTConfig)
    assert (seqlm.hidden_size, seqlm.num_layers, seqlm.ensemble) == (256, 2, 2)
    assert (seqlm.valid_users, seqlm.select_metric, seqlm.time_budget_minutes) == (
        2000,
        "recall@10",
        30,
    )
    assert (data.data_path, data.max_history, data.split) == ("ml-100k", 20, "loo")
    assert (sid.method, sid.levels, sid.codebook_size, sid.collab_weight) == (
        "balanced",
        3,
        256,
        0.6,
    )
    assert (sft.learning_rate, sft.num_train_epochs, sft.max_length) == (2e-3, 14, None)
    # every key of the YAML carries a comment on its effect
    for line in YAML.read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            assert "#" in line, f"uncommented key: {line}"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--hiden_size", "3"], "--hiden_size: unknown flag. Fix: did you mean --hidden_size?"),
        (["--select_metric", "mrr"], "'mrr' is not one of recall@5, recall@10"),
        (["--ensemble", "0"], "--ensemble: must be >= 1"),
        (["--hidden_size", "30", "--num_heads", "4"], "is not a multiple of num_heads 4"),
    ],
    ids=["typo", "metric", "ensemble", "heads"],
)
def test_bad_flags_fail_in_one_line(argv, message):
    with pytest.raises(UserError) as e:
        parse_recipe_args(TYPES, ["--config", str(YAML), *argv], prog="seqlm")
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=ENV, timeout=600
    )


def test_recipe_trains_saves_and_evaluates(tmp_path):
    data = save_tiny_recommender(tmp_path / "tiny").parent / "data"
    out = tmp_path / "run"
    proc = run(
        str(RECIPE),
        *("--config", str(YAML), "--data_path", str(data), "--output_dir", str(out)),
        *("--ensemble", "2", "--valid_users", "20", "--num_train_epochs", "2", *TINY),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert f"model 2/2 saved to {out / 'model_seed1'}" in proc.stdout
    resolved = json.loads((out / "resolved_config.json").read_text())
    assert resolved["seqlm"]["ensemble"] == 2 and resolved["sid"]["codebook_size"] == 4
    log = json.loads((out / "train_log.json").read_text())
    for seed in ("0", "1"):
        member = log["seeds"][seed]
        assert member["final_loss"] < member["first_loss"]  # it learned something
        assert [h["epoch"] for h in member["valid"]] == [1.0, 2.0]
        assert member["best_epoch"] in (1.0, 2.0)

    recllm = str(Path(sys.executable).with_name("recllm"))
    proc = subprocess.run(
        [recllm, "eval", "--model", str(out / "model"), str(out / "model_seed1")],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    metrics = json.loads((out / "model" / "eval_test" / "metrics.json").read_text())["metrics"]
    assert metrics["users"] == 40 and metrics["invalid_rate"] == 0.0
    assert 0.0 <= metrics["recall@10"] <= 1.0 and "ndcg@10" in metrics

    # a rerun with other settings stops before writing, naming what differs
    proc = run(
        str(RECIPE),
        *("--config", str(YAML), "--data_path", str(data), "--output_dir", str(out), *TINY),
        *("--codebook_size", "5"),
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "sid.codebook_size: 4 -> 5" in proc.stderr
    assert json.loads((out / "resolved_config.json").read_text()) == resolved
