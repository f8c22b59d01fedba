"""compact_lm_head: on CPU, TRL's fused LM head projects only the labelled positions, with the
same loss, metrics and gradients as its dense path."""

from __future__ import annotations

import datasets
import pytest
import torch
import trl.trainer.utils as trl_utils
from trl import SFTConfig, SFTTrainer

from recllm.testing import build_tiny_qwen3, build_tiny_tokenizer
from recllm.train.fast_head import compact_lm_head

CHUNKED = trl_utils._ChunkedLogProbFunction


def rows() -> datasets.Dataset:
    out = []
    for i in range(8):
        history = " then ".join(f"film {j}" for j in range(i % 5 + 2))
        out.append(
            {
                "prompt": [{"role": "user", "content": f"I watched {history}. Next?"}],
                "completion": [{"role": "assistant", "content": f"film {i + 1}"}],
            }
        )
    return datasets.Dataset.from_list(out)


class RowCounter:
    """Wraps TRL's chunked log-prob function and records how many rows each call projects."""

    def __init__(self, fn):
        self.fn, self.rows = fn, []

    def apply(self, hidden, *args):
        self.rows.append(hidden.shape[0])
        return self.fn.apply(hidden, *args)


def fused_pass(trainer, batch, *, compact: bool, monkeypatch):
    """(loss, log_probs, entropy, is_top1, grads, rows projected) of one fused forward/backward."""
    counter = RowCounter(CHUNKED)
    monkeypatch.setattr(trl_utils, "_ChunkedLogProbFunction", counter)
    model = trainer.model
    model.zero_grad()
    with compact_lm_head(compact):
        out = model(**batch, fused_lm_head=True)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, grads, counter.rows


@pytest.mark.parametrize("tied", [True, False])
def test_compact_head_matches_dense_path(tmp_path, tied, monkeypatch, torch_single_thread):
    tok = build_tiny_tokenizer()
    model = build_tiny_qwen3(tok, tie_word_embeddings=tied)
    args = SFTConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=8,
        report_to="none",
        bf16=False,
        use_cpu=True,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=rows(), processing_class=tok)
    batch = next(iter(trainer.get_train_dataloader()))
    labelled = int((batch["labels"][:, 1:] != -100).sum())
    positions = batch["input_ids"].shape[0] * (batch["input_ids"].shape[1] - 1)
    assert 0 < labelled < positions / 2  # completion-only loss: most positions are prompt

    dense, dense_grads, dense_rows = fused_pass(
        trainer, batch, compact=False, monkeypatch=monkeypatch
    )
    compact, compact_grads, compact_rows = fused_pass(
        trainer, batch, compact=True, monkeypatch=monkeypatch
    )
    assert dense_rows == [positions]
    assert compact_rows == [labelled]
    torch.testing.assert_close(compact.loss, dense.loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(compact.log_probs, dense.log_probs, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(compact.entropy, dense.entropy, rtol=1e-5, atol=1e-5)
    assert torch.equal(compact.is_top1, dense.is_top1)
    assert dense_grads.keys() == compact_grads.keys() and dense_grads
    for name, g in dense_grads.items():
        torch.testing.assert_close(compact_grads[name], g, rtol=1e-4, atol=1e-6, msg=name)


def test_patch_is_scoped_and_nests():
    original = trl_utils._use_triton
    cpu = torch.device("cpu")
    assert not original(cpu)
    with compact_lm_head() as active:
        assert active and trl_utils._use_triton(cpu)
        with compact_lm_head():
            assert trl_utils._use_triton(cpu)
        assert trl_utils._use_triton(cpu)  # the inner block leaves the outer one's patch
    assert trl_utils._use_triton is original
    with compact_lm_head(False) as active:
        assert not active and trl_utils._use_triton is original
    with pytest.raises(RuntimeError), compact_lm_head():
        raise RuntimeError("training failed")
    assert trl_utils._use_triton is original
