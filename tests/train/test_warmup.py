"""The embedding-only warm-up through the real TRL SFTTrainer: only SID rows move."""

from __future__ import annotations

import datasets
import pytest
import torch
from trl import SFTConfig

from recllm.testing import build_tiny_qwen3, build_tiny_tokenizer
from recllm.train.sft import embedding_warmup

NEW = [f"<a_{i}>" for i in range(6)] + ["<|sid_begin|>", "<|sid_end|>"]


def data() -> datasets.Dataset:
    rows = []
    for i in range(12):
        sid = f"<|sid_begin|><a_{i % 6}><|sid_end|>"
        rows.append(
            {
                "prompt": [{"role": "user", "content": f"item number {i % 6}?"}],
                "completion": [{"role": "assistant", "content": sid}],
            }
        )
    return datasets.Dataset.from_list(rows)


@pytest.mark.parametrize("tied", [True, False])
def test_only_sid_rows_change(tmp_path, tied, torch_single_thread):
    tok = build_tiny_tokenizer()
    model = build_tiny_qwen3(tok, tie_word_embeddings=tied)
    tok.add_tokens(NEW)
    model.resize_token_embeddings(len(tok), pad_to_multiple_of=64)
    new_ids = tok.convert_tokens_to_ids(NEW)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    args = SFTConfig(
        output_dir=str(tmp_path),
        max_steps=8,
        per_device_train_batch_size=4,
        learning_rate=5e-2,
        weight_decay=0.1,  # must be ignored by the warm-up: decay would move frozen rows
        report_to="none",
        bf16=False,
        logging_steps=1,
        save_strategy="no",
        use_cpu=True,
    )
    trainer = embedding_warmup(model, tok, data(), args, new_ids)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 8 and all(torch.isfinite(torch.tensor(losses)))
    after = model.state_dict()
    others = torch.ones(before["model.embed_tokens.weight"].shape[0], dtype=torch.bool)
    others[new_ids] = False
    for name, old in before.items():
        new = after[name]
        if name in ("model.embed_tokens.weight", "lm_head.weight"):
            assert torch.equal(new[others], old[others]), name  # bit-identical
            assert not torch.equal(new[new_ids], old[new_ids]), name  # SID rows trained
        else:
            assert torch.equal(new, old), name
    assert all(p.requires_grad for p in model.parameters())  # unfrozen for the next stage
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == tied
