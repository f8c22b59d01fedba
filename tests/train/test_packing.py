"""The recipe packs examples (TRL's best-fit-decreasing packing, no padding). Packing must not
change what the model learns from: attention stays inside each example and the loss covers the
same completion tokens, so the summed loss over an epoch equals the padded one."""

from __future__ import annotations

import datasets
import pytest
import torch
from trl import SFTConfig, SFTTrainer

from recllm.testing import build_tiny_qwen3, build_tiny_tokenizer


def rows() -> datasets.Dataset:
    out = []
    for i in range(14):
        history = " then ".join(f"film {j}" for j in range(i % 7 + 1))  # lengths vary a lot
        out.append(
            {
                "prompt": [{"role": "user", "content": f"I watched {history}. Next?"}],
                "completion": [{"role": "assistant", "content": f"film {i + 1} " * (1 + i % 3)}],
            }
        )
    return datasets.Dataset.from_list(out)


def summed_loss(model, tok, tmp_path, **packing) -> tuple[float, int, int]:
    """(sum of token losses, completion tokens, rows) over one pass of the train dataloader."""
    args = SFTConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        max_length=256,
        report_to="none",
        bf16=False,
        use_cpu=True,
        **packing,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=rows(), processing_class=tok)
    total, tokens, batches = 0.0, 0, 0
    model.eval()
    with torch.no_grad():
        for batch in trainer.get_train_dataloader():
            n = int((batch["labels"][:, 1:] != -100).sum())
            total += model(**batch).loss.item() * n
            tokens += n
            batches += batch["input_ids"].shape[0]
    return total, tokens, batches


@pytest.mark.parametrize("tied", [True, False])
def test_packed_loss_equals_padded_loss(tmp_path, tied, torch_single_thread):
    tok = build_tiny_tokenizer()
    model = build_tiny_qwen3(tok, tie_word_embeddings=tied)
    padded = summed_loss(model, tok, tmp_path / "padded", packing=False)
    packed = summed_loss(model, tok, tmp_path / "packed", packing=True, packing_strategy="bfd")
    assert packed[1] == padded[1] > 0  # the same completion tokens carry the loss
    assert packed[2] < padded[2]  # several examples share a row
    assert packed[0] == pytest.approx(padded[0], rel=1e-5)
