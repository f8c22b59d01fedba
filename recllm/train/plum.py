"""The PLUM-style SFT recipe as a function: SID vocabulary -> embedding-only warm-up -> SFT.

``recipes/plum_sft.py`` parses its YAML and command line into the six configs and calls
:func:`run_plum`; ``recllm quickstart`` calls it with a small configuration.

Steps: log the resolved config -> data and split -> SID map (loaded, or built on the fly into
OUTPUT_DIR/sids) -> extend the tokenizer and embeddings with one token per (level, code) ->
training texts (behaviour, catalog, recommendation; training split only) -> warm-up that trains
only the new SID rows -> SFT on the mixture (full fine-tuning, or LoRA with ``--use_peft``) ->
save a model directory that carries its tokenizer and SID map (OUTPUT_DIR/model).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, set_seed
from trl import ModelConfig, SFTConfig, get_quantization_config

from recllm.data import DataConfig, load_rec_dataset, split_dataset
from recllm.data.fingerprint import data_fingerprint
from recllm.errors import UserError
from recllm.io import write_json_atomic
from recllm.models import check_model_source, resolve_model
from recllm.provenance import library_versions
from recllm.sid.build import build_sid_map, write_sid_artifact
from recllm.sid.config import SIDConfig
from recllm.sid.sidmap import SIDMap
from recllm.tasks import TaskBuilder, TaskConfig
from recllm.train import recipe_args
from recllm.train.checkpoints import (
    load_stage_rows,
    plan_resume,
    save_stage_rows,
    set_aside_incomplete,
)
from recllm.train.lora import merge_adapter_full_precision, sid_lora_config
from recllm.train.rows import train_top_layers
from recllm.train.rundir import check_output_dir, check_sid_artifact
from recllm.train.sft import (
    bf16_fast,
    embedding_warmup,
    gather_full_model,
    is_sharded,
    train_stage,
    whole_model_loading,
)
from recllm.vocab import SID_FORMAT, extend_vocab, save_model_with_sids

logger = logging.getLogger(__name__)


@dataclass
class PlumArguments:
    """Recipe-level options (the rest comes from the data, SID, task, SFT and model configs)."""

    sid_map: str | None = field(
        default=None,
        metadata={
            "help": "SID artifact directory to use; default: build one into OUTPUT_DIR/sids."
        },
    )
    init_weights: str = field(
        default="pretrained",
        metadata={
            "help": "`pretrained`: the model's weights; `random`: the same architecture and "
            "tokenizer with freshly drawn weights (the model's own initialiser, seeded by "
            "`seed`): PLUM's from-scratch control (scripts/pretrained_vs_scratch.py)."
        },
    )
    vocab_init: str = field(
        default="item_text",
        metadata={
            "help": "New SID rows start at: `mean` of all rows, `item_text` (mean of the "
            "title tokens of the items carrying each code) or `item_text_spread` (those means "
            "centred per level and scaled to the vocabulary's spread: as distinct as words)."
        },
    )
    warmup_steps_embed: int = field(
        default=50, metadata={"help": "Steps of the embedding-only warm-up (0 = skip)."}
    )
    warmup_learning_rate: float = field(
        default=1e-3, metadata={"help": "Learning rate of the warm-up (only SID rows move)."}
    )
    train_top_layers: int | None = field(
        default=None,
        metadata={
            "help": "SFT trains only the top N decoder layers and the SID rows (output side); "
            "lower layers stay frozen and backward stops above them: with 6 of SmolLM2's 30, "
            "a step costs ~40% of full fine-tuning. null = full fine-tuning."
        },
    )
    max_train_examples: int | None = field(
        default=None,
        metadata={"help": "Cap on training examples after mixing (seeded); null = all."},
    )
    dialogues: str | None = field(
        default=None,
        metadata={
            "help": "Conversation dataset for the dialogue task (`recllm dialogue generate --out "
            "DIR`, e.g. a teacher's rewrite); default: conversations built from the training "
            "split's metadata at training time."
        },
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Replace the recipe's artifacts in OUTPUT_DIR (SIDs, checkpoints, model) when "
            "they were made with other settings; without it such a rerun stops with the keys "
            "that differ."
        },
    )


def run_plum(
    plum: PlumArguments,
    data_cfg: DataConfig,
    sid_cfg: SIDConfig,
    task_cfg: TaskConfig,
    sft_cfg: SFTConfig,
    model_cfg: ModelConfig,
    *,
    callbacks: list | None = None,
    rationales: Any = None,
    think_record: dict[str, Any] | None = None,
) -> Path:
    """Run the recipe end to end and return the saved model directory (OUTPUT_DIR/model).

    Every rank calls this (under ``accelerate launch`` or ``torchrun``); rank 0 builds the SID
    map and saves, the others wait for it. ``callbacks`` (``transformers.TrainerCallback``)
    join the SFT stage, e.g. an evaluation every N steps (``scripts/learning_curve.py``).
    ``rationales`` (rows of :mod:`recllm.tasks.reasoning`) feed the ``reason_rec`` task of the
    mixture and ``think_record`` is saved with the model (``recipes/onerec_think.py``).
    """
    if not torch.cuda.is_available() and not sft_cfg.use_cpu:
        # no GPU: train on CPU, as several gloo data-parallel ranks when launched with
        # `accelerate launch --multi_gpu --num_processes N` (plain --cpu runs one process)
        sft_cfg = replace(sft_cfg, use_cpu=True)
    if sft_cfg.use_cpu and sft_cfg.bf16 and not bf16_fast():
        # no AVX512-BF16/AMX: bf16 is emulated, about 2x slower than float32 (bench_sft.py)
        logger.warning(
            "bf16: this CPU has no native bf16 (AVX512-BF16/AMX): training in float32, which "
            "is faster here (pass --bf16 false to silence this)"
        )
        sft_cfg = replace(sft_cfg, bf16=False)
    _ = sft_cfg.device  # sets up the distributed state the trainer will use
    state = PartialState()
    out = Path(sft_cfg.output_dir)
    # Same seed -> same run in every process: the SID rows' init, the embedding's padding rows
    # and the data order all draw from seeded generators from here on.
    set_seed(sft_cfg.seed)

    # validate everything cheap before anything expensive runs or anything is written
    if plum.train_top_layers is not None and plum.train_top_layers < 1:
        raise UserError(
            f"--train_top_layers {plum.train_top_layers}",
            "must be at least 1",
            "pass the number of top layers to train, or null for full fine-tuning",
        )
    if plum.train_top_layers is not None and model_cfg.use_peft:
        raise UserError(
            f"--train_top_layers {plum.train_top_layers}",
            "freezes layers of a full fine-tuning; with --use_peft the adapters decide what trains",
            "drop one of --train_top_layers and --use_peft",
        )
    if plum.init_weights not in ("pretrained", "random"):
        raise UserError(
            f"--init_weights {plum.init_weights}",
            "is not a weight initialisation",
            "pass pretrained (the checkpoint's weights) or random (same architecture, new weights)",
        )
    with state.main_process_first():  # a known name is converted into the cache once, by rank 0
        model_path = resolve_model(model_cfg.model_name_or_path)
    check_model_source(model_path, model_cfg.model_name_or_path)
    quant = get_quantization_config(model_cfg)  # QLoRA: --load_in_4bit (bitsandbytes)
    if quant is not None and plum.init_weights == "random":
        raise UserError(
            "--init_weights random",
            "draws new weights, which a quantized checkpoint cannot take",
            "drop --load_in_4bit/--load_in_8bit, or train the pretrained weights",
        )
    if plum.init_weights == "random" and (model_cfg.use_peft or plum.train_top_layers):
        logger.warning(
            "init_weights random with %s: the frozen part of the model keeps random weights",
            "--use_peft" if model_cfg.use_peft else "--train_top_layers",
        )
    if quant is not None and not model_cfg.use_peft:
        raise UserError(
            "--load_in_4bit/--load_in_8bit",
            "a quantized base only trains through adapters (QLoRA)",
            "add --use_peft, or drop --load_in_4bit/--load_in_8bit",
        )
    dataset = load_rec_dataset(config=data_cfg)
    split = split_dataset(dataset, data_cfg)
    resolved = {
        "plum": asdict(plum),
        "data": asdict(data_cfg),
        "sid": asdict(sid_cfg),
        "tasks": asdict(task_cfg),
        "model": asdict(model_cfg),
        "sft": {k: v for k, v in sft_cfg.to_dict().items() if not k.startswith("_")},
        "world_size": state.num_processes,
        "versions": library_versions(),
    }
    warmup_stage = quant is None and plum.warmup_steps_embed > 0
    if state.is_main_process:
        check_output_dir(out, resolved, overwrite=plum.overwrite_output_dir)
    state.wait_for_everyone()
    resume = plan_resume(sft_cfg.resume_from_checkpoint, out, warmup=warmup_stage)
    state.wait_for_everyone()
    if state.is_main_process:
        for stage_dir in (out, out / "warmup"):  # a save that was killed: never resumed from
            set_aside_incomplete(stage_dir)
        write_json_atomic(out / "resolved_config.json", resolved)
        logger.info(
            "resolved config in %s: model %s, data %s (max_users %s), SIDs %s %d x %d, "
            "warm-up %d steps, SFT %s steps x batch %d x %d ranks, lr %g, peft %s%s",
            out / "resolved_config.json",
            model_cfg.model_name_or_path,
            data_cfg.data_path,
            data_cfg.max_users,
            sid_cfg.method,
            sid_cfg.levels,
            sid_cfg.codebook_size,
            plum.warmup_steps_embed,
            sft_cfg.max_steps if sft_cfg.max_steps > 0 else f"{sft_cfg.num_train_epochs} epochs of",
            sft_cfg.per_device_train_batch_size,
            state.num_processes,
            sft_cfg.learning_rate,
            model_cfg.use_peft,
            f"; resuming ({resume})" if resume.resuming else "",
        )
        logger.debug("resolved config: %s", resolved)

    # SID map: given (--sid_map), reused when it was built with exactly these settings, or built
    # by rank 0 (the other ranks read what it wrote)
    sid_dir = Path(plum.sid_map) if plum.sid_map else out / "sids"
    with state.main_process_first():
        if not (sid_dir / "sid_map.json").is_file():
            write_sid_artifact(build_sid_map(dataset, sid_cfg, data_cfg, split=split), sid_dir)
        sid_map = SIDMap.load(sid_dir)
    if not plum.sid_map:
        expected = {"sid_config": asdict(sid_cfg), "data_config": asdict(data_cfg)}
        check_sid_artifact(sid_dir, sid_map.meta, expected)

    # model + vocabulary extension
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    dtype = getattr(torch, model_cfg.dtype) if model_cfg.dtype not in (None, "auto") else "auto"
    with whole_model_loading(sft_cfg):  # ZeRO-3 would build 0-row placeholders: extend first
        if plum.init_weights == "random":  # same config and tokenizer, weights drawn afresh
            model = AutoModelForCausalLM.from_config(
                AutoConfig.from_pretrained(model_path),
                **({} if dtype == "auto" else {"dtype": dtype}),
            )
            logger.info("init_weights random: %s's architecture, new weights", model_path)
        else:
            model = AutoModelForCausalLM.from_pretrained(
                model_path, dtype=dtype, quantization_config=quant
            )
        ext = extend_vocab(model, tokenizer, sid_map, init=plum.vocab_init, catalog=dataset.catalog)

    # training texts (training split only) and their mixture
    builder = TaskBuilder(
        dataset.catalog, lambda item: SID_FORMAT.render(sid_map.code(item)), task_cfg
    )
    builder.rationales = rationales
    if plum.dialogues and task_cfg.mixture.get("dialogue", 0) > 0:
        builder.dialogues = _load_dialogues(plum.dialogues, split, dataset.catalog)
    data = builder.build(split)
    train = data["train"]
    if plum.max_train_examples is not None and len(train) > plum.max_train_examples:
        train = train.shuffle(seed=task_cfg.task_seed).select(range(plum.max_train_examples))
    log: dict[str, object] = {
        "world_size": state.num_processes,
        "train_examples": len(train),
        "quantized": "4bit"
        if getattr(model, "is_loaded_in_4bit", False)
        else "8bit"
        if getattr(model, "is_loaded_in_8bit", False)
        else None,
    }

    # stage 1: only the new SID rows train; stage 2: SFT on the mixture
    sid_rows = ext.ids().tolist()
    # rec_sequence rows are also supervised on the code tokens of their history SIDs (not on
    # the begin/end markers around them: the end follows the last level, a begin the newline)
    code_ids = [t for level in range(sid_map.levels) for t in ext.level_ids(level).tolist()]
    history_sids = (code_ids, sid_map.levels)
    if quant is not None and plum.warmup_steps_embed > 0:
        logger.warning(
            "QLoRA: no embedding-only warm-up on a quantized base (the trainer "
            "refuses it); the SID rows train together with the adapters"
        )
    elif resume.warmup_rows is not None:
        log["warmup"] = load_stage_rows(model, sid_rows, out / "warmup")
        logger.info("warm-up done in an earlier run: its SID rows loaded from %s", out / "warmup")
    elif warmup_stage:
        warm_args = replace(
            sft_cfg,
            max_steps=plum.warmup_steps_embed,
            num_train_epochs=1,
            learning_rate=plum.warmup_learning_rate,
            lr_scheduler_type="constant",
            warmup_steps=0,
            output_dir=str(out / "warmup"),
        )
        warm = embedding_warmup(
            model,
            tokenizer,
            train,
            warm_args,
            sid_rows,
            resume_from_checkpoint=resume.warmup_checkpoint,
            history_sids=history_sids,
        )
        log["warmup"] = warm.state.log_history
        # every rank: under FSDP the rows are gathered from the shards (a collective)
        save_stage_rows(model, sid_rows, log["warmup"], out / "warmup", write=state.is_main_process)
        state.wait_for_everyone()
    peft_config = sid_lora_config(model, sid_rows, model_cfg) if model_cfg.use_peft else None
    top = None
    if plum.train_top_layers is not None:
        top = train_top_layers(model, plum.train_top_layers, sid_rows)
        if sft_cfg.weight_decay:
            logger.info(
                "train_top_layers: weight_decay %s -> 0 (it would move frozen rows)",
                sft_cfg.weight_decay,
            )
            sft_cfg = replace(sft_cfg, weight_decay=0.0)
    try:
        trainer = train_stage(
            model,
            tokenizer,
            train,
            sft_cfg,
            peft_config=peft_config,
            resume_from_checkpoint=resume.sft_checkpoint,
            history_sids=history_sids,
            callbacks=callbacks,
        )
    finally:
        if top is not None:
            top.remove()
            model.requires_grad_(True)
    log["sft"] = trainer.state.log_history

    # save: merged weights + tokenizer + SID map, checked to belong together. Under FSDP/ZeRO-3
    # each rank holds shards: all ranks gather, rank 0 gets the full plain model (None elsewhere)
    final = gather_full_model(trainer) if is_sharded(trainer) else trainer.model
    if quant is not None:  # merge the QLoRA adapter into the full-precision base, not into 4 bits
        adapter_dir = out / "adapter"
        if state.is_main_process:
            final.save_pretrained(adapter_dir)
        state.wait_for_everyone()
        final, tokenizer = merge_adapter_full_precision(
            adapter_dir,
            model_path,
            sid_map,
            init=plum.vocab_init,
            catalog=dataset.catalog,
            dtype=dtype,
        )
    elif model_cfg.use_peft:
        final = final.merge_and_unload()
    model_dir = out / "model"
    if state.is_main_process:
        save_model_with_sids(
            final,
            tokenizer,
            sid_map,
            model_dir,
            overwrite=True,
            recommender={
                **chat_recommender(task_cfg, data_cfg, data_fingerprint(split, dataset.catalog)),
                **({"think": think_record} if think_record else {}),
            },
            prompt_files=[Path(task_cfg.prompts_dir) / "rec.jinja"]
            + ([Path(task_cfg.prompts_dir) / "reason_rec.jinja"] if think_record else [])
            + (
                [Path(task_cfg.prompts_dir) / "dialogue.jinja"]
                if task_cfg.mixture.get("dialogue", 0) > 0
                else []
            ),
        )
        write_json_atomic(out / "train_log.json", log)  # both stages' loss curves
        print(f"model with {len(ext.ids())} SID tokens saved to {model_dir}")
        print(f"load it with recllm.vocab.load_model_with_sids({str(model_dir)!r})")
    state.wait_for_everyone()
    return model_dir


def _load_dialogues(path: str, split: Any, catalog: Any) -> list[Any]:
    """The conversations of ``--dialogues``, checked to come from this run's data."""
    import json

    from recllm.errors import UserError
    from recllm.tasks.dialogue import load_dialogues

    conversations, record = load_dialogues(path)
    actual = json.loads(json.dumps(data_fingerprint(split, catalog)))
    if record.get("data_fingerprint") != actual:
        raise UserError(
            f"--dialogues {path}",
            "was made from other data than this run's (its data fingerprint differs)",
            "generate the conversations from the same data settings (recllm dialogue generate "
            "--model-dir START_MODEL, or the same --data and flags)",
        )
    logger.info("dialogue task: %d conversations from %s", len(conversations), path)
    return conversations


def chat_recommender(
    task_cfg: TaskConfig, data_cfg: DataConfig, fingerprint: dict[str, object] | None = None
) -> dict[str, object]:
    """What evaluation, serving and chat need to prompt a PLUM-trained model as it was trained
    (``dialogue``: whether it learned conversations), and the data it was trained on (evaluation defaults to the same users and split, and refuses
    other data: ``fingerprint`` is :func:`recllm.data.fingerprint.data_fingerprint`)."""
    return {
        "prompt_style": "chat",
        "max_history": data_cfg.max_history,
        "data": asdict(data_cfg),
        "data_fingerprint": fingerprint,
        "task": {
            "rec_history_titles": task_cfg.rec_history_titles,
            "max_title_chars": task_cfg.max_title_chars,
            "max_text_chars": task_cfg.max_text_chars,
            "facet_labels": dict(task_cfg.facet_labels),
        },
        # conversations in the mixture: chat and the playground prompt it with dialogue turns
        "dialogue": {
            "weight": task_cfg.mixture["dialogue"],
            "steer": task_cfg.dialogue_steer,
            "turns": task_cfg.dialogue_turns,
        }
        if task_cfg.mixture.get("dialogue", 0) > 0
        else None,
    }


RECIPE_TYPES = (PlumArguments, DataConfig, SIDConfig, TaskConfig, SFTConfig, ModelConfig)


def recipe_parser():
    """The recipe's ``TrlParser`` over its six config dataclasses; bad flags raise
    :class:`~recllm.errors.UserError` (one line) instead of printing the whole usage."""
    return recipe_args.recipe_parser(RECIPE_TYPES, "plum_sft")


def parse_recipe_args(argv: list[str] | None = None):
    """Parse YAML + command line into the six configs of :func:`run_plum`
    (:func:`recllm.train.recipe_args.parse_recipe_args`: one-line errors naming the flag, the
    file and line, or the key; ``--use_cpu true`` added without a GPU)."""
    return recipe_args.parse_recipe_args(RECIPE_TYPES, argv, prog="plum_sft")
