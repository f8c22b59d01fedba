"""The alignment stages with ``--use_peft``: LoRA adapters plus trainable SID rows, merged into
each saved round model. Ordinary tokens' embedding rows stay bit-identical, SID rows and the
adapted linear layers move; DPO's reference is the adapter-disabled policy (loss ln 2 at the
first step), or the SFT model itself from round 2 on with ``--reference sft``."""

from __future__ import annotations

import json
import math

import pytest
import torch

from recllm.testing import save_tiny_recommender
from recllm.vocab import SID_FORMAT, load_model_with_sids
from tests.scripts.running import ROOT

COMMON = ["--use_peft", "true", "--lora_r", "4", "--lora_alpha", "8", "--bf16", "false"]
COMMON += ["--mining_users", "16", "--max_steps", "3", "--learning_rate", "1e-2"]
COMMON += ["--logging_steps", "1", "--reward", "exact_hit=1,prefix_credit=0.5"]


def run(recipe: str, argv: list[str]):
    from trl import DPOConfig, GRPOConfig, SFTConfig

    from recllm.align import awsft, dpo, grpo
    from recllm.train.recipe_args import parse_recipe_args

    types = {
        "dpo": (dpo.PreferenceArguments, DPOConfig, dpo.run_dpo),
        "awsft": (awsft.AWSFTArguments, SFTConfig, awsft.run_awsft),
        "grpo": (grpo.GRPOArguments, GRPOConfig, grpo.run_grpo),
    }[recipe]
    argv = ["--config", str(ROOT / "recipes" / f"{recipe}.yaml"), *argv]
    return types[2](*parse_recipe_args(types[:2], argv, prog=recipe))


@pytest.mark.parametrize(
    "recipe",
    [
        "dpo",
        pytest.param("awsft", marks=pytest.mark.slow),
        pytest.param("grpo", marks=pytest.mark.slow),
    ],
)  # ~15 s each: DPO in the default run, the others with -m slow
def test_lora_rounds_move_sid_rows_and_adapted_layers_only(tmp_path, recipe):
    sft = save_tiny_recommender(tmp_path / "tiny")
    out = tmp_path / recipe
    argv = ["--model_dir", str(sft), "--output_dir", str(out), *COMMON]
    if recipe == "grpo":
        argv += ["--num_generations", "4", "--per_device_train_batch_size", "4"]
    else:
        argv += ["--beams", "6", "--per_device_train_batch_size", "4"]
    if recipe == "dpo":
        argv += ["--rounds", "2", "--reference", "sft", "--loss_type", "sigmoid"]
        argv += ["--loss_weights", "1.0"]
    final = run(recipe, argv)

    start, tok, sid_map = load_model_with_sids(sft)
    after, _, after_map = load_model_with_sids(final)
    assert after_map.content_hash == sid_map.content_hash
    assert not any("lora" in n for n, _ in after.named_parameters())  # merged, plain model
    sid = torch.tensor(list(SID_FORMAT.token_ids(tok, sid_map.codebook_sizes).all_ids()))
    other = torch.ones(start.get_input_embeddings().weight.shape[0], dtype=torch.bool)
    other[sid] = False
    for get in ("get_input_embeddings", "get_output_embeddings"):
        a, b = getattr(start, get)().weight, getattr(after, get)().weight
        assert torch.equal(a[other], b[other])  # ordinary tokens: untouched
        assert not torch.equal(a[sid], b[sid])  # SID rows trained
    q0 = start.model.layers[0].self_attn.q_proj.weight
    assert not torch.equal(q0, after.model.layers[0].self_attn.q_proj.weight)  # adapter merged
    norm = "model.norm.weight"
    assert torch.equal(dict(start.named_parameters())[norm], dict(after.named_parameters())[norm])

    if recipe == "dpo":
        log = json.loads((out / "dpo_log.json").read_text())
        first = [h["loss"] for h in log["rounds"][0]["dpo"] if "loss" in h]
        second = [h["loss"] for h in log["rounds"][1]["dpo"] if "loss" in h]
        assert first[0] == pytest.approx(math.log(2), abs=1e-3)  # adapter off == policy
        # round 2 starts from round 1's policy against the SFT reference: not at ln 2
        assert abs(second[0] - math.log(2)) > 1e-3
