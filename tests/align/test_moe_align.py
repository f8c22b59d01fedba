"""The alignment stages on a Qwen3-MoE recommender (the mission's MoE models): DPO with the
router's auxiliary loss, and GRPO with constrained rollouts, each moving the experts."""

from __future__ import annotations

import json
import math

import pytest
import torch

from recllm.testing import save_tiny_recommender
from recllm.vocab import load_model_with_sids
from tests.align.test_lora_align import run


@pytest.mark.parametrize("recipe", ["dpo", "grpo"])
def test_moe_policy_trains(tmp_path, recipe):
    sft = save_tiny_recommender(tmp_path / "tiny", moe=True)
    start, _, _ = load_model_with_sids(sft)
    assert type(start).__name__ == "Qwen3MoeForCausalLM"
    out = tmp_path / recipe
    argv = ["--model_dir", str(sft), "--output_dir", str(out), "--bf16", "false"]
    argv += ["--mining_users", "16", "--max_steps", "3", "--learning_rate", "1e-3"]
    argv += ["--logging_steps", "1", "--reward", "exact_hit=1,prefix_credit=0.5"]
    argv += ["--per_device_train_batch_size", "4"]
    if recipe == "dpo":
        argv += ["--beams", "6", "--loss_type", "sigmoid", "--loss_weights", "1.0"]
    else:
        argv += ["--num_generations", "4"]
    final = run(recipe, argv)

    log = json.loads((out / f"{recipe}_log.json").read_text())
    history = log["rounds"][0]["dpo"] if recipe == "dpo" else log["grpo"]
    losses = [h["loss"] for h in history if "loss" in h]
    assert losses and all(math.isfinite(x) for x in losses)
    after, _, _ = load_model_with_sids(final)
    experts = [n for n, _ in start.named_parameters() if ".experts." in n]
    assert experts
    before, now = dict(start.named_parameters()), dict(after.named_parameters())
    assert any(not torch.equal(before[n], now[n]) for n in experts)  # the experts trained
