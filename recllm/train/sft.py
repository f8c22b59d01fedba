"""Stage glue over TRL's SFTTrainer: the embedding-only warm-up and supervised fine-tuning.

A stage is one ``SFTTrainer`` run on conversational prompt/completion data (loss on the
completion only). The warm-up stage trains only the new SID rows (:mod:`recllm.train.rows`).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Collection, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from recllm.train.checkpoints import MarkCompleteCheckpoints, train_from
from recllm.train.fast_head import compact_lm_head
from recllm.train.lora import keep_sid_rows_fp32
from recllm.train.rows import train_rows_only

if TYPE_CHECKING:
    import datasets
    from transformers import PreTrainedModel, PreTrainedTokenizerBase
    from trl import SFTConfig, SFTTrainer

    from recllm.train.distill import SIDTeacher

logger = logging.getLogger(__name__)


def bf16_fast() -> bool:
    """Whether bf16 autocast pays off here: on GPUs with bf16, and on CPUs with native bf16.

    On CPUs with AVX512-BF16 or AMX, oneDNN runs bf16 matmuls about 1.5x faster than float32
    (measured: a 2-layer, 256-wide Qwen3 decoder trains 1.5x faster per step on 2 EPYC cores);
    without them, bf16 is emulated and slower.
    """
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def train_stage(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train_dataset: datasets.Dataset,
    args: SFTConfig,
    *,
    eval_dataset: datasets.Dataset | None = None,
    peft_config=None,
    compact_head: bool = True,
    resume_from_checkpoint: str | os.PathLike[str] | None = None,
    history_sids: tuple[Collection[int], int] | None = None,
    callbacks: list | None = None,
    distill: tuple[SIDTeacher, float] | None = None,
) -> SFTTrainer:
    """Run one SFT stage and return its trainer (``trainer.state.log_history`` has the losses).

    Checkpoints the stage saves are marked complete only once fully written
    (:mod:`recllm.train.checkpoints`).

    Args:
        compact_head: On CPU, TRL's fused LM head scores only the completion positions
            (:mod:`recllm.train.fast_head`); same loss and gradients, less work.
        resume_from_checkpoint: A complete ``checkpoint-N`` of this stage to continue from
            (model, optimizer, scheduler, RNG and data position are restored).
        history_sids: ``(code token ids, levels)``: rows marked ``history_loss``
            (:data:`recllm.tasks.config.HISTORY_LOSS_TASKS`) are also supervised on the code
            tokens of every SID of their prompt after the first (:func:`supervise_history_sids`).
        distill: ``(teacher, weight)``: a :class:`recllm.train.distill.SIDTeacher` whose loss
            joins the next-token loss with that weight.

    Raises:
        ValueError: The data has ``history_loss`` rows and ``history_sids`` is not given.
    """
    from trl import SFTTrainer

    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        # a fresh copy sets up its own accelerator state: transformers' Trainer refuses to build
        # a second DeepSpeed Accelerator on a state an earlier stage (the warm-up) configured
        args = replace(args)
    trainer_class, extra = SFTTrainer, {}
    if distill is not None:
        from recllm.train.distill import distill_trainer_class

        trainer_class = distill_trainer_class(SFTTrainer)
        extra = {"teacher": distill[0], "distill_weight": distill[1]}
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[MarkCompleteCheckpoints(), *(callbacks or [])],
        **extra,
    )
    check_sharding(trainer, peft=peft_config is not None)
    if "history_loss" in trainer.train_dataset.column_names:
        if history_sids is not None:
            trainer.train_dataset = supervise_history_sids(trainer.train_dataset, *history_sids)
        elif any(trainer.train_dataset["history_loss"]):
            raise ValueError(
                "the training data has history_loss rows (rec_sequence) but no history_sids "
                "were given: they would train on their last item only"
            )
    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        cast = keep_sid_rows_fp32(trainer.model)
        logger.info("QLoRA: %d SID-row tensors kept in float32", cast)
    with compact_lm_head(compact_head):
        # a checkpoint of the stage's last step is loaded, not trained from (one step too many)
        train_from(trainer, Path(resume_from_checkpoint) if resume_from_checkpoint else None)
    return trainer


def supervise_history_sids(
    dataset: datasets.Dataset, code_token_ids: Collection[int], levels: int
) -> datasets.Dataset:
    """Labels on the history of ``history_loss`` rows: every SID code token (one per level)
    after the first SID's ``levels`` becomes a target, as the completion already is. The
    markers around each SID are not: they are trivially predictable, and each supervised
    position costs a row of the LM head (vocabulary-wide) in the step.

    The rows are TRL-prepared (``input_ids``, ``labels`` with -100 off the completion). A
    history's item k is then predicted from items 1..k-1 exactly as a recommendation prompt
    with that history would ask for it, so one row carries about one next-item example per
    history item. Other rows are returned unchanged.
    """
    ids = frozenset(int(t) for t in code_token_ids)

    def supervise(row: dict) -> dict:
        if not row["history_loss"]:
            return {"labels": row["labels"]}
        labels, seen = list(row["labels"]), 0
        for pos, tok in enumerate(row["input_ids"]):
            if tok in ids:
                seen += 1
                if seen > levels:
                    labels[pos] = tok
        return {"labels": labels}

    return dataset.map(supervise, desc="Supervising history SIDs")


@contextlib.contextmanager
def whole_model_loading(args: SFTConfig) -> Iterator[None]:
    """Within this block, models load whole on every rank, even under DeepSpeed ZeRO-3.

    Under ``accelerate launch`` with a DeepSpeed config, the training arguments register a
    DeepSpeed config with transformers as soon as they exist (whatever ``zero3_init_flag``
    says), and ``from_pretrained`` then builds a ZeRO-3 model partitioned at birth: each rank
    holds 0-row embedding placeholders that :func:`recllm.vocab.extend_vocab` cannot extend. The
    recipe extends the vocabulary first; the trainer partitions the model afterwards.
    """
    plugin = getattr(args, "deepspeed_plugin", None)
    if plugin is None:
        yield
        return
    from transformers.integrations import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        plugin.set_deepspeed_weakref()  # the trainer needs it back


def is_sharded(trainer: SFTTrainer) -> bool:
    """Whether the trainer's parameters are sharded over the ranks (FSDP, DeepSpeed ZeRO-3): then
    gathering them is a collective every rank must join (:func:`gather_full_model`)."""
    if trainer.is_fsdp_enabled:
        return True
    if trainer.is_deepspeed_enabled:
        return trainer.accelerator.state.deepspeed_plugin.zero_stage == 3
    return False


def check_sharding(trainer: SFTTrainer, *, peft: bool) -> None:
    """Fail or warn, before training, where a sharded launch would not do what it says.

    Raises:
        UserError: LoRA on sharded parameters: merging the adapters of a sharded model into one
            directory is not supported; the run would train and then fail to save.
    """
    from recllm.errors import UserError

    requested = {
        "FSDP": os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true",
        "DeepSpeed": os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true",
    }
    active = {"FSDP": trainer.is_fsdp_enabled, "DeepSpeed": trainer.is_deepspeed_enabled}
    for name, wanted in requested.items():
        if wanted and not active[name]:
            # accelerate (1.15) only enables FSDP/DeepSpeed for GPU-like devices; CPU ranks
            # silently fall back to plain data parallelism, which a user must know about
            logger.warning(
                "the launcher asked for %s but accelerate runs %s on %s: every rank holds the "
                "whole model (plain data parallelism)",
                name,
                trainer.accelerator.distributed_type,
                trainer.accelerator.device,
            )
    if peft and is_sharded(trainer):
        raise UserError(
            "--use_peft with FSDP/ZeRO-3",
            "merging LoRA adapters of a sharded model into one model directory is not supported",
            "train LoRA with data parallelism (recipes/accelerate/ddp.yaml), or fine-tune fully "
            "under FSDP/ZeRO-3",
        )


def gather_full_model(trainer: SFTTrainer) -> PreTrainedModel | None:
    """The trained model as one plain transformers model with full weights, on rank 0.

    Under FSDP and ZeRO-3 each rank holds a shard of every parameter: every rank must call this
    (gathering is a collective); rank 0 gets a plain model built on the meta device and given
    the gathered tensors (no second initialisation, no second copy), the other ranks ``None``.
    Without sharding this is the unwrapped model itself.
    """
    import torch
    from transformers import AutoModelForCausalLM

    model = trainer.accelerator.unwrap_model(trainer.model)
    if not is_sharded(trainer):
        return model if trainer.accelerator.is_main_process else None
    # full tensors on rank 0; DeepSpeed gathers through its engine, the wrapped model
    state_dict = trainer.accelerator.get_state_dict(trainer.model_wrapped)
    if not trainer.accelerator.is_main_process:
        return None
    # plain build: under ZeRO-3 from_config would otherwise partition it (a collective rank 0
    # would enter alone)
    with whole_model_loading(trainer.args), torch.device("meta"):
        # the FSDP2 class is a generated FSDP<Model> subclass: build from the config instead
        plain = AutoModelForCausalLM.from_config(model.config)
    missing, unexpected = plain.load_state_dict(state_dict, strict=False, assign=True)
    plain.tie_weights()  # a tied LM head is one tensor, gathered once
    tied = {n for n, p in plain.named_parameters(remove_duplicate=False) if not p.is_meta}
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise RuntimeError(
            f"gathered state dict does not fit {type(plain).__name__}: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    # non-persistent buffers (rotary frequencies) are in no state dict; every rank holds them
    # whole, so take them from the trained model
    source = dict(model.named_buffers())
    for name, buf in list(plain.named_buffers()):
        if buf.is_meta and name in source:
            owner, _, attr = name.rpartition(".")
            setattr(plain.get_submodule(owner), attr, source[name].detach().clone().cpu())
    leftover = [n for n, t in [*plain.named_parameters(), *plain.named_buffers()] if t.is_meta]
    if leftover:
        raise RuntimeError(f"gathered model still has meta tensors: {leftover[:5]}")
    plain.eval()
    return plain


def embedding_warmup(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train_dataset: datasets.Dataset,
    args: SFTConfig,
    sid_token_ids: Iterable[int],
    *,
    resume_from_checkpoint: str | os.PathLike[str] | None = None,
    history_sids: tuple[Collection[int], int] | None = None,
) -> SFTTrainer:
    """Train only the SID rows of the embedding matrices; every other weight stays bit-identical.

    Weight decay is forced to 0 for this stage (decay would shrink the frozen rows too), and the
    parameters are unfrozen again afterwards, ready for the next stage.
    """
    handles = train_rows_only(model, sid_token_ids)
    if args.weight_decay:
        logger.info(
            "embedding warm-up: weight_decay %s -> 0 (it would move frozen rows)", args.weight_decay
        )
    try:
        trainer = train_stage(
            model,
            tokenizer,
            train_dataset,
            replace(args, weight_decay=0.0),
            resume_from_checkpoint=resume_from_checkpoint,
            history_sids=history_sids,
        )
    finally:
        handles.remove()
        for p in model.parameters():
            p.requires_grad_(True)
    return trainer
