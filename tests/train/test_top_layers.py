"""train_top_layers: only the top blocks, the final norm and the SID rows move; backward stops."""

from __future__ import annotations

import datasets
import pytest
import torch
from trl import SFTConfig

from recllm.testing import build_tiny_qwen3, build_tiny_tokenizer
from recllm.train.rows import train_top_layers
from recllm.train.sft import train_stage

NEW = [f"<a_{i}>" for i in range(6)] + ["<|sid_begin|>", "<|sid_end|>"]


def data() -> datasets.Dataset:
    return datasets.Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": f"item <a_{i % 6}> next?"}],
                "completion": [{"role": "assistant", "content": f"<a_{(i + 1) % 6}>"}],
            }
            for i in range(12)
        ]
    )


@pytest.mark.parametrize("tied", [True, False])
def test_only_the_top_layers_and_sid_rows_move(tmp_path, tied, torch_single_thread):
    tok = build_tiny_tokenizer()
    model = build_tiny_qwen3(tok, tie_word_embeddings=tied)
    tok.add_tokens(NEW)
    model.resize_token_embeddings(len(tok), pad_to_multiple_of=64)
    new_ids = tok.convert_tokens_to_ids(NEW)
    n_layers = len(model.model.layers)
    assert n_layers >= 2
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    handles = train_top_layers(model, 1, new_ids)
    args = SFTConfig(
        output_dir=str(tmp_path),
        max_steps=6,
        per_device_train_batch_size=4,
        learning_rate=5e-2,
        report_to="none",
        bf16=False,
        save_strategy="no",
        use_cpu=True,
    )
    seen: list[str] = []  # modules that ran a backward: none below the top block
    hooks = [
        m.register_full_backward_hook(lambda mod, gi, go, name=name: seen.append(name))
        for name, m in model.named_modules()
        if name.startswith("model.layers.") and name.count(".") == 2
    ]
    train_stage(model, tok, data(), args)
    handles.remove()
    for h in hooks:
        h.remove()
    assert set(seen) == {f"model.layers.{n_layers - 1}"}
    after = model.state_dict()
    top = f"model.layers.{n_layers - 1}."
    others = torch.ones(before["model.embed_tokens.weight"].shape[0], dtype=torch.bool)
    others[new_ids] = False
    moved = set()
    for name, old in before.items():
        new = after[name]
        if name in ("model.embed_tokens.weight", "lm_head.weight"):
            assert torch.equal(new[others], old[others]), name  # other rows bit-identical
            if not torch.equal(new[new_ids], old[new_ids]):
                moved.add(name)
        elif not torch.equal(new, old):
            moved.add(name)
    # the head side of the SID rows learns (tied: the shared matrix); an untied input side
    # stays as it was, because no gradient reaches below the frozen blocks
    head = "model.embed_tokens.weight" if tied else "lm_head.weight"
    assert head in moved
    assert (
        "model.embed_tokens.weight" in moved if tied else "model.embed_tokens.weight" not in moved
    )
    layer_moves = {n for n in moved if n.startswith("model.layers.")}
    assert layer_moves and all(n.startswith(top) for n in layer_moves)
    assert "model.norm.weight" in moved


def test_bounds(torch_single_thread):
    tok = build_tiny_tokenizer()
    model = build_tiny_qwen3(tok)
    with pytest.raises(ValueError, match="train_top_layers must be >= 1"):
        train_top_layers(model, 0, [0])
    train_top_layers(model, len(model.model.layers) + 4, [0])  # deeper than the model: all
    assert all(p.requires_grad for p in model.model.layers.parameters())
