"""The alignment stages with ``--train_top_layers N``: only the top N decoder layers, the final
norm and the SID rows move; the layers below and every ordinary token's embedding rows stay
bit-identical. The control, the same DPO round training every weight, moves the bottom layer."""

from __future__ import annotations

import pytest
import torch

from recllm.errors import UserError
from recllm.testing import save_tiny_recommender
from recllm.vocab import SID_FORMAT, load_model_with_sids
from tests.align.test_lora_align import run

COMMON = ["--bf16", "false", "--mining_users", "16", "--max_steps", "3"]
COMMON += ["--learning_rate", "1e-2", "--logging_steps", "1"]
COMMON += ["--reward", "exact_hit=1,prefix_credit=0.5", "--weight_decay", "0.1"]


def _args(recipe: str, sft, out) -> list[str]:
    argv = ["--model_dir", str(sft), "--output_dir", str(out), *COMMON]
    if recipe == "grpo":
        return [*argv, "--num_generations", "4", "--per_device_train_batch_size", "4"]
    argv += ["--beams", "6", "--per_device_train_batch_size", "4"]
    if recipe == "dpo":
        argv += ["--rounds", "1", "--loss_type", "sigmoid", "--loss_weights", "1.0"]
    return argv


def _layer(model, i: int) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.model.layers[i].named_parameters()}


@pytest.mark.parametrize("recipe", ["dpo", "awsft", "grpo"])  # ~1-4 s each
def test_top_layers_only_move(tmp_path, recipe):
    sft = save_tiny_recommender(tmp_path / "tiny")
    final = run(recipe, [*_args(recipe, sft, tmp_path / recipe), "--train_top_layers", "1"])
    start, tok, sid_map = load_model_with_sids(sft)
    after, _, _ = load_model_with_sids(final)
    assert len(start.model.layers) == 2
    bottom0, bottom1 = _layer(start, 0), _layer(after, 0)
    assert all(torch.equal(bottom0[n], bottom1[n]) for n in bottom0)  # frozen: bit-identical
    top0, top1 = _layer(start, 1), _layer(after, 1)
    assert sum(not torch.equal(top0[n], top1[n]) for n in top0) >= len(top0) // 2
    sid = torch.tensor(list(SID_FORMAT.token_ids(tok, sid_map.codebook_sizes).all_ids()))
    other = torch.ones(start.get_output_embeddings().weight.shape[0], dtype=torch.bool)
    other[sid] = False
    a, b = start.get_output_embeddings().weight, after.get_output_embeddings().weight
    assert torch.equal(a[other], b[other])  # ordinary tokens (weight decay 0.1 asked: set to 0)
    assert not torch.equal(a[sid], b[sid])  # SID rows of the LM head trained
    if recipe == "dpo":  # the control: the same round training every weight
        full = run(recipe, _args(recipe, sft, tmp_path / "full"))
        moved, _, _ = load_model_with_sids(full)
        assert any(not torch.equal(bottom0[n], _layer(moved, 0)[n]) for n in bottom0)
        assert not torch.equal(a[other], moved.get_output_embeddings().weight[other])


def test_top_layers_flag_errors(tmp_path):
    sft = save_tiny_recommender(tmp_path / "tiny")
    base = _args("dpo", sft, tmp_path / "x")
    with pytest.raises(UserError, match="must be at least 1"):
        run("dpo", [*base, "--train_top_layers", "0"])
    with pytest.raises(UserError, match="drop one of --train_top_layers and --use_peft"):
        run("dpo", [*base, "--train_top_layers", "1", "--use_peft", "true"])
    assert not (tmp_path / "x").exists()
