"""LoRA (and later QLoRA) in which the new SID rows of the embeddings stay trainable.

PEFT's ``trainable_token_indices`` trains only the listed rows of ``embed_tokens`` (and of
``lm_head`` when untied) as a small delta: ``n_sid x hidden`` values per matrix instead of the
whole ``vocab x hidden`` matrix that ``modules_to_save`` would train (155M parameters for Qwen3's
vocabulary at hidden 1024, against 0.8M for 770 SID tokens).

Work-around (trl 1.16.0, peft 0.21.2, the newest releases on 2026-11-22): TRL's fused LM-head
loss reads ``lm_head.bias`` (trl/trainer/utils.py, ``add_fused_lm_head``), and PEFT's
``TrainableTokensWrapper`` forwards only ``weight`` (peft/utils/other.py,
``_hasattr_wrapped``), so every SFT/DPO/GRPO step fails with ``AttributeError: ... has no
attribute 'bias'`` once lm_head is wrapped (always when tied). We give the wrapper a read-only
``bias`` that returns the wrapped layer's bias. ``weight`` already returns the merged weight
(base + trained SID rows), so the fused loss sees the trained rows; we checked that its loss
equals a plain forward of the merged model. Related upstream: huggingface/peft#3649 and PR
#3688 (bias dropped in TrainableTokens' forward); precedents PR #1530 and PR #2081 (``bias`` on
other PEFT wrappers). Remove once PEFT exposes ``bias`` on ``TrainableTokensWrapper``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from peft import LoraConfig
    from transformers import PreTrainedModel
    from trl import ModelConfig

logger = logging.getLogger(__name__)


def ensure_trainable_tokens_bias() -> None:
    """Give PEFT's ``TrainableTokensWrapper`` a ``bias`` attribute (see the module docstring)."""
    from peft.utils.other import TrainableTokensWrapper

    if "bias" not in vars(TrainableTokensWrapper):
        TrainableTokensWrapper.bias = property(  # type: ignore[attr-defined]
            lambda self: getattr(self.token_adapter.get_base_layer(), "bias", None)
        )


def is_tied(model: PreTrainedModel) -> bool:
    """Whether the input and output embeddings share one tensor."""
    out = model.get_output_embeddings()
    return out is not None and out.weight is model.get_input_embeddings().weight


def sid_lora_config(
    model: PreTrainedModel, sid_token_ids: Iterable[int], model_cfg: ModelConfig
) -> LoraConfig:
    """A LoRA config from TRL's ``ModelConfig`` whose SID rows also train.

    Args:
        model: The model after vocabulary extension, before PEFT wrapping.
        sid_token_ids: Rows to train in ``embed_tokens`` (and ``lm_head`` when untied).
        model_cfg: ``lora_r``, ``lora_alpha``, ``lora_dropout``, ``lora_target_modules``.
    """
    from peft import LoraConfig

    ensure_trainable_tokens_bias()
    ids = [int(i) for i in sid_token_ids]
    tied = is_tied(model)
    layers = ["embed_tokens"] if tied else ["embed_tokens", "lm_head"]
    config = LoraConfig(
        r=model_cfg.lora_r,
        lora_alpha=model_cfg.lora_alpha,
        lora_dropout=model_cfg.lora_dropout,
        target_modules=model_cfg.lora_target_modules or "all-linear",
        task_type="CAUSAL_LM",
        trainable_token_indices=dict.fromkeys(layers, ids),
        ensure_weight_tying=tied,
    )
    logger.info(
        "LoRA r=%d on %s; %d SID rows train in %s (%s embeddings)",
        config.r,
        config.target_modules,
        len(ids),
        layers,
        "tied" if tied else "untied",
    )
    return config


def keep_sid_rows_fp32(model) -> int:
    """Put the trainable SID-row deltas back in float32; returns how many tensors it cast.

    For quantized bases (QLoRA) TRL casts every trainable parameter to bfloat16 (trl 1.16,
    ``SFTTrainer.__init__``, following the QLoRA paper for LoRA matrices). SID rows start from
    averaged embeddings and move by small steps that bfloat16 rounds away: in a measured run only
    27% of the SID-row entries moved at lr 2e-5 against 100% in float32.
    """
    import torch

    n = 0
    for name, p in model.named_parameters():
        if "trainable_tokens_delta" in name and p.dtype != torch.float32:
            p.data = p.data.float()
            n += 1
    return n


def merge_adapter_full_precision(adapter_dir, base_dir, sid_map, *, init, catalog, dtype):
    """Rebuild the extended base in full precision, load a (Q)LoRA adapter and merge it.

    A QLoRA adapter trained on a 4-bit base is merged into the unquantized base instead of into
    4-bit weights, so the saved model is a plain full-precision directory. The vocabulary
    extension is deterministic, so the rebuilt SID rows equal the ones the adapter trained from.
    """
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from recllm.vocab import extend_vocab

    ensure_trainable_tokens_bias()
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype)
    extend_vocab(base, tokenizer, sid_map, init=init, catalog=catalog)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    return merged, tokenizer
