"""Advantage-weighted SFT: weights from group-normalised rewards by hand; the weighted trainer's
loss equals a weighted NLL computed by hand from the model's logits (and TRL's own loss when all
weights are 1); the recipe through `accelerate launch` trains on the policy's own beams."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import datasets
import pytest
import torch
from trl import SFTConfig, SFTTrainer

from recllm.align.awsft import WeightedSFTTrainer, advantage_weights
from recllm.testing import build_tiny_qwen3, build_tiny_tokenizer, save_tiny_recommender
from recllm.vocab import load_model_with_sids
from tests.scripts.running import ROOT


def test_advantage_weights_by_hand():
    rewards = [1.0, 0.0, 0.0, 3.0]
    mean, std = 1.0, math.sqrt((0 + 1 + 1 + 4) / 4)
    adv = [(r - mean) / std for r in rewards]
    assert advantage_weights(rewards, "exp", beta=2.0, max_weight=1e9) == pytest.approx(
        [math.exp(a / 2) for a in adv]
    )
    assert advantage_weights(rewards, "exp", beta=0.5, max_weight=3.0)[3] == 3.0  # clipped
    assert advantage_weights(rewards, "positive") == pytest.approx([max(a, 0) for a in adv])
    assert advantage_weights([2.0, 2.0], "exp") == [1.0, 1.0]  # no signal: weight 1
    assert advantage_weights([2.0, 2.0], "positive") == [0.0, 0.0]
    with pytest.raises(ValueError, match="weighting must be one of"):
        advantage_weights([1.0], "softmax")


def _trainer(cls, rows, tmp_path):
    tok = build_tiny_tokenizer()
    torch.manual_seed(0)
    model = build_tiny_qwen3(tok)
    args = SFTConfig(
        output_dir=str(tmp_path / cls.__name__),
        per_device_train_batch_size=len(rows["prompt"]),
        use_cpu=True,
        bf16=False,
        report_to="none",
        remove_unused_columns=cls is SFTTrainer,
    )
    data = datasets.Dataset.from_dict(rows)
    if cls is SFTTrainer:
        data = data.remove_columns("sample_weight")
    return cls(model=model, args=args, train_dataset=data, processing_class=tok)


ROWS = {
    "prompt": [[{"role": "user", "content": t}] for t in ("a b c", "d e", "f g h i")],
    "completion": [[{"role": "assistant", "content": t}] for t in ("x y", "z", "w v u")],
}


def _batch(trainer):
    return next(iter(trainer.get_train_dataloader()))


def test_weighted_loss_equals_hand_computed_weighted_nll(tmp_path):
    weights = [0.5, 2.0, 0.0]
    trainer = _trainer(WeightedSFTTrainer, {**ROWS, "sample_weight": weights}, tmp_path)
    batch = _batch(trainer)
    w = batch["sample_weight"]
    assert sorted(w.tolist()) == sorted(weights)  # the weights reach the loss, row by row
    model = trainer.model
    model.eval()
    labels = batch["labels"]
    with torch.no_grad():
        loss = trainer.compute_loss(model, dict(batch))
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logp = torch.log_softmax(logits[:, :-1].float(), -1)
    target = labels[:, 1:]
    mask = target != -100
    nll = -logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask
    hand = (nll.sum(1) * w).sum() / mask.sum()
    assert loss.item() == pytest.approx(hand.item(), rel=1e-4)
    # scaling every weight scales the loss; a zero-weight row contributes nothing
    assert (nll.sum(1) * w)[w == 0].sum() == 0

    # control: with all weights 1 the loss is TRL's own
    ones = _trainer(WeightedSFTTrainer, {**ROWS, "sample_weight": [1.0, 1.0, 1.0]}, tmp_path)
    plain = _trainer(SFTTrainer, {**ROWS, "sample_weight": [1.0, 1.0, 1.0]}, tmp_path)
    with torch.no_grad():
        a = ones.compute_loss(ones.model.eval(), dict(_batch(ones)))
        b = plain.compute_loss(plain.model.eval(), dict(_batch(plain)))
    assert a.item() == pytest.approx(b.item(), rel=1e-5)
    assert loss.item() != pytest.approx(a.item(), rel=1e-3)  # the weights changed the loss


def test_recipe_trains_on_its_own_weighted_beams(tmp_path):
    sft = save_tiny_recommender(tmp_path / "tiny")
    out = tmp_path / "awsft"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1"]
    cmd += [str(ROOT / "recipes" / "awsft.py"), "--config", str(ROOT / "recipes" / "awsft.yaml")]
    cmd += ["--model_dir", str(sft), "--output_dir", str(out), "--beams", "4"]
    cmd += ["--reward", "exact_hit=1,prefix_credit=0.5", "--mining_users", "12"]
    cmd += ["--max_steps", "4", "--per_device_train_batch_size", "4", "--learning_rate", "1e-3"]
    cmd += ["--logging_steps", "1", "--bf16", "false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]

    rows = json.loads((out / "round1" / "weighted_rows.json").read_text())["rows"]
    by_user: dict[str, list] = {}
    for user, item, reward, weight in zip(
        rows["example_id"], rows["item"], rows["reward"], rows["sample_weight"], strict=True
    ):
        by_user.setdefault(user, []).append((item, reward, weight))
    assert len(by_user) == 12
    for entries in by_user.values():
        beams = [(r, w) for _, r, w in entries if r is not None]
        targets = [w for _, r, w in entries if r is None]
        assert targets == [1.0]  # the logged target, target_weight 1
        assert len(beams) == 4  # exp weighting keeps every beam
        expected = advantage_weights([r for r, _ in beams], "exp", 1.0, 5.0)
        assert [w for _, w in beams] == pytest.approx(expected)

    log = json.loads((out / "awsft_log.json").read_text())
    losses = [h["loss"] for h in log["rounds"][0]["sft"] if "loss" in h]
    assert losses and all(math.isfinite(x) for x in losses)
    start, _, _ = load_model_with_sids(sft)
    final, _, sid_map = load_model_with_sids(out / "model")
    assert len(sid_map) == 60
    assert any(
        not torch.equal(a, b) for a, b in zip(start.parameters(), final.parameters(), strict=True)
    )
