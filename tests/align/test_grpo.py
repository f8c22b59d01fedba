"""recipes/grpo.py through `accelerate launch` on a tiny chat recommender: TRL's GRPOTrainer with
recllm's constrained rollout_func. Every rollout is a catalog item (the unconstrained control that
emits non-catalog SIDs is tests/align/test_mining.py::test_unconstrained_control_emits_non_catalog_sids);
every logged reward is recomputed by hand from its own completion ids, user and beam rank; the
policy moves."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import torch

from recllm.align.mining import mining_examples
from recllm.data import DataConfig, load_rec_dataset, split_dataset
from recllm.tasks.prompting import PromptSpec
from recllm.testing import save_tiny_recommender
from recllm.vocab import SID_FORMAT, load_model_with_sids
from tests.scripts.running import ROOT


def test_grpo_with_constrained_beam_rollouts(tmp_path):
    sft = save_tiny_recommender(tmp_path / "tiny")
    out = tmp_path / "grpo"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1"]
    cmd += [str(ROOT / "recipes" / "grpo.py"), "--config", str(ROOT / "recipes" / "grpo.yaml")]
    cmd += ["--model_dir", str(sft), "--output_dir", str(out), "--mining_users", "8"]
    cmd += ["--reward", "exact_hit=1,prefix_credit=0.5,rank_shaped=0.2", "--miss_penalty", "0.5"]
    cmd += ["--num_generations", "4", "--per_device_train_batch_size", "4", "--max_steps", "3"]
    cmd += ["--learning_rate", "1e-3", "--logging_steps", "1", "--bf16", "false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]

    _, tok, sid_map = load_model_with_sids(sft)
    ids = SID_FORMAT.token_ids(tok, sid_map.codebook_sizes)
    rollouts = [json.loads(line) for line in (out / "rollouts.jsonl").read_text().splitlines()]
    assert rollouts
    for group in rollouts:
        assert group["ranks"] == [1, 2, 3, 4]  # a group is 4 constrained beams, best first
        assert len(set(group["items"])) == 4 and all(i in sid_map for i in group["items"])

    spec = PromptSpec.from_model_dir(sft)
    cfg = DataConfig(**spec.data)
    targets = {
        ex.user_id: ex.target
        for ex in mining_examples(split_dataset(load_rec_dataset(config=cfg), cfg), 20)
    }
    calls = [json.loads(line) for line in (out / "rewards.jsonl").read_text().splitlines()]
    checked = 0
    for call in calls:
        for user, rank, completion, reward in zip(
            call["example_id"], call["rank"], call["completion_ids"], call["reward"], strict=True
        ):
            at = completion.index(ids.begin_id)
            item = sid_map.item(ids.decode(completion[at : at + sid_map.levels + 2]))
            assert item is not None
            want, got = sid_map.code(targets[user]), sid_map.code(item)
            prefix = next((n for n in range(len(want)) if want[n] != got[n]), len(want))
            gain = 1 / math.log2(rank + 1)
            hit = item == targets[user]
            expected = float(hit) + 0.5 * prefix / len(want) + 0.2 * (gain if hit else -0.5 * gain)
            assert math.isclose(reward, expected, rel_tol=1e-9, abs_tol=1e-12)
            checked += 1
    assert checked == 4 * len(rollouts)

    log = json.loads((out / "grpo_log.json").read_text())
    losses = [h["loss"] for h in log["grpo"] if "loss" in h]
    assert losses and all(math.isfinite(x) for x in losses)
    start, _, _ = load_model_with_sids(sft)
    final, _, _ = load_model_with_sids(out / "model")
    assert any(
        not torch.equal(a, b) for a, b in zip(start.parameters(), final.parameters(), strict=True)
    )
