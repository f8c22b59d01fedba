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
other PEFT wrappers). No upstream issue reports the missing ``bias`` attribute itself (searched
2026-11: PEFT and TRL issues); the code locations are trl/trainer/utils.py
``add_fused_lm_head`` (``weight, bias = lm_head.weight, lm_head.bias``) and
peft/utils/other.py ``TrainableTokensWrapper._hasattr_wrapped`` (``name == "weight"``). Remove
once PEFT exposes ``bias`` on ``TrainableTokensWrapper``.

Guard: the patch is applied only when the wrapper still keeps its layer in ``token_adapter``
(``adapter_layer_names``) with a ``get_base_layer``; a PEFT outside the tested versions logs one
warning (:mod:`recllm.train.compat`). When the wrapper has changed, :func:`sid_lora_config`
falls back loudly to the documented work-around: ``modules_to_save`` for the embedding (and
``lm_head``), which trains the SID rows too, at the cost of whole-matrix trainable parameters.
A PEFT whose wrapper has its own ``bias`` needs no patch and gets none.
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


def _wrapped_bias(self):  # the patched TrainableTokensWrapper.bias
    return getattr(self.token_adapter.get_base_layer(), "bias", None)


_BIAS = property(_wrapped_bias)
_fallback_warned = False


def _wrapper_fits_patch() -> bool:
    """Whether PEFT's ``TrainableTokensWrapper`` still has what the ``bias`` patch reads."""
    try:
        from peft.tuners.trainable_tokens import TrainableTokensLayer
        from peft.utils.other import TrainableTokensWrapper
    except ImportError:
        return False
    names = getattr(TrainableTokensWrapper, "adapter_layer_names", ())
    return any(n.startswith("token_adapter.") for n in names) and callable(
        getattr(TrainableTokensLayer, "get_base_layer", None)
    )


def ensure_trainable_tokens_bias() -> bool:
    """Give PEFT's ``TrainableTokensWrapper`` a ``bias`` attribute (see the module docstring).

    Returns:
        Whether a wrapped ``lm_head`` now answers ``.bias`` (patched here or by PEFT itself).
        False means the wrapper changed shape: use the ``modules_to_save`` work-around.
    """
    from recllm.train.compat import warn_if_untested

    warn_if_untested("peft", "TrainableTokensWrapper.bias patch")
    if not _wrapper_fits_patch():
        return False
    from peft.utils.other import TrainableTokensWrapper

    own = vars(TrainableTokensWrapper).get("bias")
    if own is None:
        TrainableTokensWrapper.bias = _BIAS  # type: ignore[attr-defined]
    elif own is not _BIAS:
        logger.info("PEFT's TrainableTokensWrapper has its own bias: recllm's patch is not needed")
    return True


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

    global _fallback_warned
    ids = [int(i) for i in sid_token_ids]
    tied = is_tied(model)
    layers = ["embed_tokens"] if tied else ["embed_tokens", "lm_head"]
    common = {
        "r": model_cfg.lora_r,
        "lora_alpha": model_cfg.lora_alpha,
        "lora_dropout": model_cfg.lora_dropout,
        "target_modules": model_cfg.lora_target_modules or "all-linear",
        "task_type": "CAUSAL_LM",
        "ensure_weight_tying": tied,
    }
    if ensure_trainable_tokens_bias():
        config = LoraConfig(trainable_token_indices=dict.fromkeys(layers, ids), **common)
    else:
        # The work-around of the module docstring: whole matrices train (and are saved with
        # the adapter), SID rows included; TRL's fused head reads lm_head.bias through PEFT's
        # ModulesToSaveWrapper, which forwards every attribute.
        if not _fallback_warned:
            _fallback_warned = True
            logger.warning(
                "PEFT's TrainableTokensWrapper no longer matches recllm's bias patch (it keeps no "
                "token_adapter.get_base_layer): training the SID rows through modules_to_save=%s "
                "instead, which trains the whole %s (more memory, a larger adapter). Install a "
                "tested PEFT (README, 'Tested versions') to train only the SID rows",
                ["embed_tokens", "lm_head"],
                "embedding and LM-head matrices",
            )
        layers = ["embed_tokens", "lm_head"]
        config = LoraConfig(modules_to_save=layers, **common)
    logger.info(
        "LoRA r=%d on %s; %d SID rows train in %s (%s embeddings, %s)",
        config.r,
        config.target_modules,
        len(ids),
        layers,
        "tied" if tied else "untied",
        "trainable_token_indices" if config.trainable_token_indices else "modules_to_save",
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
