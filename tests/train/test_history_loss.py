"""rec_sequence rows: every history SID is a target, through the real TRL SFTTrainer."""

from __future__ import annotations

import datasets
import pytest
import torch
from trl import SFTConfig

from recllm.testing import build_tiny_qwen3, build_tiny_tokenizer
from recllm.train.sft import train_stage

NEW = [f"<a_{i}>" for i in range(6)] + ["<|sid_begin|>", "<|sid_end|>"]


def sid(i: int) -> str:
    return f"<|sid_begin|><a_{i % 6}><|sid_end|>"


def rows(history_loss: bool) -> datasets.Dataset:
    out = []
    for i in range(8):
        history = "\n".join(sid(i + k) for k in range(3))
        out.append(
            {
                "prompt": [{"role": "user", "content": f"history:\n{history}\nnext?"}],
                "completion": [{"role": "assistant", "content": sid(i + 3)}],
                "history_loss": history_loss,
            }
        )
    return datasets.Dataset.from_list(out)


def args(tmp_path) -> SFTConfig:
    return SFTConfig(
        output_dir=str(tmp_path),
        max_steps=1,
        per_device_train_batch_size=4,
        report_to="none",
        bf16=False,
        save_strategy="no",
        use_cpu=True,
    )


@pytest.mark.parametrize("history_loss", [True, False])
def test_labels_cover_every_history_sid_after_the_first(
    tmp_path, history_loss, torch_single_thread
):
    tok = build_tiny_tokenizer()
    model = build_tiny_qwen3(tok)
    tok.add_tokens(NEW)
    model.resize_token_embeddings(len(tok), pad_to_multiple_of=64)
    ids = set(tok.convert_tokens_to_ids(NEW))
    codes = set(tok.convert_tokens_to_ids(NEW[:6]))
    trainer = train_stage(model, tok, rows(history_loss), args(tmp_path), history_sids=(codes, 1))
    for row in trainer.train_dataset:
        sid_pos = [p for p, t in enumerate(row["input_ids"]) if t in ids]
        code_pos = [p for p in sid_pos if row["input_ids"][p] in codes]
        labelled = [p for p, lab in enumerate(row["labels"]) if lab != -100]
        assert len(sid_pos) == 4 * 3 and len(code_pos) == 4  # 3 history SIDs + the target
        target = sid_pos[9:]  # the completion's SID: all three tokens, as TRL labels it
        if history_loss:  # the first history code is context only; every later one a target
            assert sorted(set(labelled) & set(sid_pos)) == sorted(set(code_pos[1:3]) | set(target))
        else:  # control: the completion alone
            assert sorted(set(labelled) & set(sid_pos)) == target
        assert all(p > sid_pos[-1] for p in set(labelled) - set(sid_pos))  # end of turn
        assert all(row["labels"][p] == row["input_ids"][p] for p in labelled)


def test_history_loss_rows_without_sids_are_refused(tmp_path, torch_single_thread):
    tok = build_tiny_tokenizer()
    model = build_tiny_qwen3(tok)
    tok.add_tokens(NEW)
    model.resize_token_embeddings(len(tok), pad_to_multiple_of=64)
    with pytest.raises(ValueError, match="history_loss rows"):
        train_stage(model, tok, rows(True), args(tmp_path))
    # control: the same rows unmarked train on their completion
    trainer = train_stage(model, tok, rows(False), args(tmp_path))
    assert torch.isfinite(torch.tensor(trainer.state.log_history[-1]["train_loss"]))
