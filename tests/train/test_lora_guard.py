"""Guards of recllm's private-API patches (TRL's ``_use_triton``, PEFT's TrainableTokensWrapper):
an untested version warns once naming the tested versions; a changed API is not patched, says
so loudly, and training still works (the SID rows still train)."""

from __future__ import annotations

import logging
import math

import datasets
import numpy as np
import pytest
import torch
import trl.trainer.utils as trl_utils
from peft.utils.other import TrainableTokensWrapper
from trl import ModelConfig, SFTConfig, SFTTrainer

from recllm import testing
from recllm.sid.sidmap import SIDMap
from recllm.train import compat, fast_head, lora
from recllm.vocab import SID_FORMAT, extend_vocab

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def sid_setup(tied: bool = True):
    smap = SIDMap(
        [f"i{k}" for k in range(6)], np.array([[k // 2, k % 2] for k in range(6)]), (3, 2)
    )
    tok = testing.build_tiny_tokenizer()
    model = testing.build_tiny_qwen3(tok, tie_word_embeddings=tied)
    ext = extend_vocab(model, tok, smap)
    rows = [
        {
            "prompt": [{"role": "user", "content": f"after film {k}, next?"}],
            "completion": [
                {"role": "assistant", "content": SID_FORMAT.render(smap.code(f"i{(k + 1) % 6}"))}
            ],
        }
        for k in range(8)
    ]
    return model, tok, ext, datasets.Dataset.from_list(rows)


def train_few_steps(model, tok, data, tmp_path, peft_config=None, compact=True):
    args = SFTConfig(
        output_dir=str(tmp_path),
        max_steps=3,
        per_device_train_batch_size=4,
        learning_rate=5e-2,
        report_to="none",
        bf16=False,
        use_cpu=True,
        save_strategy="no",
        logging_steps=1,
        gradient_checkpointing=False,
    )
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=data, processing_class=tok, peft_config=peft_config
    )
    with fast_head.compact_lm_head(compact):
        trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses), losses
    return trainer


def test_untested_version_warns_once_naming_tested_versions(monkeypatch, caplog):
    monkeypatch.setattr(compat, "_warned", set())
    monkeypatch.setattr(compat, "installed_version", lambda p: {"trl": "9.0.0"}.get(p, "0.21.2"))
    with caplog.at_level(logging.WARNING, logger="recllm.train.compat"):
        assert compat.warn_if_untested("trl", "the X patch") is False
        assert compat.warn_if_untested("trl", "the X patch") is False
        assert compat.warn_if_untested("peft", "the Y patch") is True  # 0.21.2 is tested
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("trl 9.0.0 is not a version recllm's the X patch was tested")
    assert "(trl >=1.16,<1.17)" in warnings[0]


def test_installed_versions_are_tested():
    """The environment the tests run in is the one the table names (else update both)."""
    assert compat.installed_version("trl") and compat.installed_version("peft")
    for package, spec in compat.TESTED_VERSIONS.items():
        from packaging.specifiers import SpecifierSet

        assert compat.installed_version(package) in SpecifierSet(spec), package


def test_trl_switch_changed_is_not_patched_and_trains(tmp_path, monkeypatch, caplog):
    # A TRL whose switch takes another signature: patching it would break TRL's own call.
    def other_switch(device, *, kernel=None):
        return False

    monkeypatch.setattr(trl_utils, "_use_triton", other_switch)
    monkeypatch.setattr(fast_head, "_missing_warned", False)
    with caplog.at_level(logging.WARNING, logger="recllm.train.fast_head"):
        with fast_head.compact_lm_head() as active:
            assert active is False and trl_utils._use_triton is other_switch
        with fast_head.compact_lm_head():
            pass
    loud = [r for r in caplog.records if "NOT patched" in r.getMessage()]
    assert len(loud) == 1  # once, not per block
    model, tok, _, data = sid_setup()
    train_few_steps(model, tok, data, tmp_path)  # TRL's dense path, under the same guard
    assert trl_utils._use_triton is other_switch


def test_trl_switch_missing_is_not_patched(monkeypatch):
    monkeypatch.delattr(trl_utils, "_use_triton")
    monkeypatch.setattr(fast_head, "_missing_warned", False)
    with fast_head.compact_lm_head() as active:
        assert active is False and not hasattr(trl_utils, "_use_triton")


def sid_rows(model, ext) -> torch.Tensor:
    return model.get_input_embeddings().weight[ext.first_id : ext.last_id + 1].detach().clone()


def merged(trainer):
    return trainer.model.merge_and_unload()


@pytest.mark.parametrize("wrapper_changed", [False, True])
def test_lora_sid_rows_train_with_patch_or_fallback(tmp_path, monkeypatch, caplog, wrapper_changed):
    if wrapper_changed:  # a PEFT whose wrapper keeps its layer elsewhere: the patch cannot apply
        monkeypatch.setattr(TrainableTokensWrapper, "adapter_layer_names", ("tokens.delta",))
        monkeypatch.setattr(lora, "_fallback_warned", False)
    model, tok, ext, data = sid_setup(tied=True)
    before = sid_rows(model, ext)
    cfg = ModelConfig(use_peft=True, lora_r=4, lora_alpha=8)
    with caplog.at_level(logging.WARNING, logger="recllm.train.lora"):
        config = lora.sid_lora_config(model, ext.token_ids.all_ids(), cfg)
    loud = [r for r in caplog.records if "no longer matches recllm's bias patch" in r.getMessage()]
    if wrapper_changed:
        assert len(loud) == 1 and config.trainable_token_indices is None
        assert set(config.modules_to_save) == {"embed_tokens", "lm_head"}
    else:
        assert not loud and config.trainable_token_indices is not None
    trainer = train_few_steps(model, tok, data, tmp_path, peft_config=config)
    after = sid_rows(merged(trainer), ext)
    moved = (after - before).abs().amax(dim=1) > 0
    # every SID row the answers use moved (begin, end and the codes of the 6 items: all of them)
    assert bool(moved.all()), moved
