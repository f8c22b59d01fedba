"""recipes/dpo.py through `accelerate launch` on a tiny chat recommender: two mine -> DPO rounds,
each mined with the newest policy; DPO's loss starts at ln 2 (policy == reference) and falls; the
model moves off the SFT weights and loads with its SID map; bad input stops in one line."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from recllm.align.mining import load_preferences
from recllm.testing import save_tiny_recommender
from recllm.vocab import load_model_with_sids
from tests.scripts.running import ROOT


def launch(*args, cwd):
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1"]
    cmd += [str(ROOT / "recipes" / "dpo.py"), "--config", str(ROOT / "recipes" / "dpo.yaml")]
    return subprocess.run(
        [*cmd, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"},
        timeout=600,
    )


def test_two_rounds_of_mined_dpo(tmp_path):
    sft = save_tiny_recommender(tmp_path / "tiny")
    out = tmp_path / "dpo"
    proc = launch(
        *("--model_dir", str(sft), "--output_dir", str(out), "--rounds", "2"),
        *("--reward", "exact_hit=1,prefix_credit=0.5", "--beams", "6", "--mining_users", "16"),
        *("--loss_type", "sigmoid", "--loss_weights", "1.0", "--learning_rate", "3e-4"),
        *("--max_steps", "6", "--per_device_train_batch_size", "4", "--logging_steps", "1"),
        *("--bf16", "false"),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]

    for r in (1, 2):
        prefs, meta = load_preferences(out / f"round{r}" / "preferences")
        assert meta["round"] == r and meta["examples"] == 16 and len(prefs) > 0
        assert meta["policy"] == str(sft if r == 1 else out / "round1" / "model")
        _, _, sid_map = load_model_with_sids(out / f"round{r}" / "model")
        assert all(i in sid_map for row in prefs["beam_items"] for i in row)  # 0 invalid beams
        assert all(
            c > j for c, j in zip(prefs["chosen_reward"], prefs["rejected_reward"], strict=True)
        )

    log = json.loads((out / "dpo_log.json").read_text())
    for rnd in log["rounds"]:
        losses = [h["loss"] for h in rnd["dpo"] if "loss" in h]
        assert all(math.isfinite(x) for x in losses)
    first = [h["loss"] for h in log["rounds"][0]["dpo"] if "loss" in h]
    assert first[0] == pytest.approx(math.log(2), abs=1e-3)  # policy == reference at step 1
    assert first[-1] < first[0]

    start, _, _ = load_model_with_sids(sft)
    final, _, _ = load_model_with_sids(out / "model")
    moved = [
        n
        for (n, a), (_, b) in zip(start.named_parameters(), final.named_parameters(), strict=True)
        if not torch.equal(a, b)
    ]
    assert moved  # DPO changed the policy
    round2, _, _ = load_model_with_sids(out / "round2" / "model")
    assert all(
        torch.equal(a, b) for a, b in zip(final.parameters(), round2.parameters(), strict=True)
    )


def test_missing_model_dir_is_one_line(tmp_path):
    out = tmp_path / "dpo"
    cmd = [sys.executable, str(ROOT / "recipes" / "dpo.py"), "--config"]
    cmd += [str(ROOT / "recipes" / "dpo.yaml"), "--output_dir", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("dpo: error: --model_dir: is required")
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model_dir", "nowhere"], "--model_dir nowhere: is not a recllm model directory"),
        (["--reward", "magic=1"], "reward 'magic' is not one of"),
        (["--reward", "sasrec=x"], "weight 'x' is not a number"),
        (["--pair_policy", "x"], "pair_policy must be one of"),
        (["--rounds", "0"], "rounds must be >= 1"),
    ],
)
def test_bad_input_errors_before_anything_is_written(tmp_path, args, message):
    from recllm.align.dpo import PreferenceArguments, run_dpo
    from recllm.errors import UserError
    from recllm.train.recipe_args import parse_recipe_args

    sft = save_tiny_recommender(tmp_path / "tiny")
    if args[0] != "--model_dir":
        args = ["--model_dir", str(sft), *args]
    out = tmp_path / "dpo"
    argv = ["--config", str(ROOT / "recipes" / "dpo.yaml"), "--output_dir", str(out), *args]
    from trl import DPOConfig

    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        run_dpo(*parse_recipe_args((PreferenceArguments, DPOConfig), argv, prog="dpo"))
    assert not out.exists()


def test_a_reward_model_of_other_data_is_refused(tmp_path):
    """--reward_model must have been trained on the model's split: a SASRec of other data (or
    one recording no data) stops the run; the same artifact with the right fingerprint runs."""
    from trl import DPOConfig

    from recllm.align.dpo import PreferenceArguments, run_dpo
    from recllm.baselines.sasrec import SASRecConfig, save_sasrec, train_sasrec
    from recllm.data import DataConfig, load_rec_dataset, split_dataset
    from recllm.data.fingerprint import data_fingerprint
    from recllm.errors import UserError
    from recllm.tasks.prompting import PromptSpec
    from recllm.train.recipe_args import parse_recipe_args

    sft = save_tiny_recommender(tmp_path / "tiny")
    other = save_tiny_recommender(tmp_path / "other", seed=1)
    fingerprints = {}
    for name, model_dir in (("own", sft), ("other", other)):
        cfg = DataConfig(**PromptSpec.from_model_dir(model_dir).data)
        dataset = load_rec_dataset(config=cfg)
        split = split_dataset(dataset, cfg)
        fingerprints[name] = data_fingerprint(split, dataset.catalog)
        if name == "own":
            rm, _ = train_sasrec(split, dataset.catalog, SASRecConfig(epochs=1), progress=False)
    for name, meta in (("other", {"data_fingerprint": fingerprints["other"]}), ("none", {})):
        save_sasrec(rm, tmp_path / name, meta=meta)
    save_sasrec(rm, tmp_path / "own", meta={"data_fingerprint": fingerprints["own"]})

    def run(rm_dir, out):
        argv = ["--config", str(ROOT / "recipes" / "dpo.yaml"), "--output_dir", str(out)]
        argv += ["--model_dir", str(sft), "--reward_model", str(rm_dir), "--rounds", "1"]
        argv += ["--beams", "4", "--mining_users", "8", "--max_steps", "1", "--bf16", "false"]
        return run_dpo(*parse_recipe_args((PreferenceArguments, DPOConfig), argv, prog="dpo"))

    with pytest.raises(UserError, match="was not trained on this model's data"):
        run(tmp_path / "other", tmp_path / "out_other")
    with pytest.raises(UserError, match="records no data fingerprint"):
        run(tmp_path / "none", tmp_path / "out_none")
    assert (run(tmp_path / "own", tmp_path / "out_own") / "sid_map.json").is_file()  # control
