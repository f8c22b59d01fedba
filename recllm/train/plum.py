"""The PLUM-style SFT recipe as a function: SID vocabulary -> embedding-only warm-up -> SFT.

``recipes/plum_sft.py`` parses its YAML and command line into the six configs and calls
:func:`run_plum`; ``recllm quickstart`` calls it with a small configuration, and
``recipes/onerec_think.py`` (:func:`recllm.train.think.run_think`) runs the same stages with its
rationales. A mixture with the ``dialogue`` task trains conversations through the same stages.

:func:`run_plum` reads top to bottom as the stages it runs (:mod:`recllm.train.stages` holds
those before training):

- ``validate``: every flag, the model and the ``max_length`` floor, before anything is read;
- ``load_data``: data and split, what the data allows (a codebook no larger than the catalog),
  the resolved settings with the data's content fingerprint;
- ``open_output_dir``: a rerun or resume must match the recorded settings and data; the first
  write (``resolved_config.json``);
- ``build_sids``: the SID map, loaded or built into OUTPUT_DIR/sids;
- ``extend_vocabulary``: one token per (level, code) in the tokenizer and the embeddings;
- ``build_texts``: the training mixture (training split only);
- :func:`warm_up`: only the new SID rows train;
- :func:`fine_tune`: SFT on the mixture (full fine-tuning, top layers, or (Q)LoRA);
- :func:`save`: a model directory that carries its tokenizer and SID map (OUTPUT_DIR/model).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from trl import ModelConfig, SFTConfig

from recllm.data import DataConfig
from recllm.io import write_json_atomic
from recllm.sid.config import SIDConfig
from recllm.tasks import TaskConfig
from recllm.train import recipe_args
from recllm.train.checkpoints import load_stage_rows, save_stage_rows
from recllm.train.distill_args import DistillArguments, check_teacher_provider, teacher_record
from recllm.train.init_model import carry_catalog_files
from recllm.train.lora import merge_adapter_full_precision, sid_lora_config
from recllm.train.rows import train_top_layers
from recllm.train.sft import embedding_warmup, gather_full_model, is_sharded, train_stage
from recllm.train.stages import (
    PlumRun,
    build_sids,
    build_texts,
    extend_vocabulary,
    load_data,
    load_dialogues_of,
    open_output_dir,
    validate,
)
from recllm.vocab import save_model_with_sids

logger = logging.getLogger(__name__)


@dataclass
class PlumArguments(DistillArguments):
    """Recipe-level options (the rest comes from the data, SID, task, SFT and model configs)."""

    sid_map: str | None = field(
        default=None,
        metadata={
            "help": "SID artifact directory to use; default: build one into OUTPUT_DIR/sids."
        },
    )
    init_model: str | None = field(
        default=None,
        metadata={
            "help": "Continue a saved recllm model directory (incremental training): its "
            "weights, tokenizer and SID map; the SID build, vocabulary extension and warm-up "
            "are skipped. Items of the data its SID map lacks: add them first with `recllm "
            "catalog add`."
        },
    )
    train_since: float | None = field(
        default=None,
        metadata={
            "help": "Train only on the examples whose target event happened at or after this "
            "time (seconds since the epoch; training split only): the new interactions."
        },
    )
    train_until: float | None = field(
        default=None,
        metadata={
            "help": "Train on the data as it was before this time (seconds since the epoch): "
            "every training sequence cut there, the SID build included; e.g. the base model of "
            "an incremental run."
        },
    )
    replay_ratio: float = field(
        default=0.0,
        metadata={
            "help": "With --train_since: add this many older training examples per new one "
            "(a sample seeded by task_seed, at most all of them) against forgetting."
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
            "a step costs ~40%% of full fine-tuning. null = full fine-tuning."
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
    teacher_provider: Any = None,
) -> Path:
    """Run the recipe end to end and return the saved model directory (OUTPUT_DIR/model).

    Every rank calls this (under ``accelerate launch`` or ``torchrun``); rank 0 builds the SID
    map and saves, the others wait for it. ``callbacks`` (``transformers.TrainerCallback``)
    join the SFT stage, e.g. an evaluation every N steps (``scripts/learning_curve.py``).
    ``rationales`` (rows of :mod:`recllm.tasks.reasoning`) feed the ``reason_rec`` task of the
    mixture and ``think_record`` is saved with the model (``recipes/onerec_think.py``).

    Raises:
        UserError: A bad setting, model or data, found before anything is written.
    """
    check_teacher_provider(plum, teacher_provider)
    run = validate(plum, data_cfg, sid_cfg, task_cfg, sft_cfg, model_cfg)
    run.teacher_provider = teacher_provider
    load_data(run)
    return train_and_save(
        run, callbacks=callbacks, rationales=rationales, think_record=think_record
    )


def train_and_save(
    run: PlumRun,
    *,
    callbacks: list | None = None,
    rationales: Any = None,
    think_record: dict[str, Any] | None = None,
) -> Path:
    """The stages from the output directory on, for a validated run whose data is loaded."""
    check_teacher_provider(run.plum, run.teacher_provider)
    if run.plum.teacher is not None:  # a given teacher must be of this split: checked first
        run.teacher = run.teacher_provider(
            run.plum, run.split, run.dataset.catalog, run.out, run.sft_cfg.seed, run.state
        )
    open_output_dir(run)  # the first write
    build_sids(run)
    extend_vocabulary(run)
    build_texts(run, rationales)
    warm_up(run)  # stage 1: only the new SID rows train
    fine_tune(run, callbacks)  # stage 2: SFT on the mixture
    return save(run, think_record)


#: The conversations of ``--dialogues``, checked to come from this run's data.
_load_dialogues = load_dialogues_of


# -- training ---------------------------------------------------------------------------------


def warm_up(run: PlumRun) -> None:
    """Train only the new SID rows (or load them from an earlier run's finished warm-up)."""
    plum, out = run.plum, run.out
    if run.quant is not None and plum.warmup_steps_embed > 0:
        logger.warning(
            "QLoRA: no embedding-only warm-up on a quantized base (the trainer "
            "refuses it); the SID rows train together with the adapters"
        )
    elif run.resume.warmup_rows is not None:
        run.log["warmup"] = load_stage_rows(run.model, run.sid_rows(), out / "warmup")
        logger.info("warm-up done in an earlier run: its SID rows loaded from %s", out / "warmup")
    elif run.warmup_stage:
        warm_args = replace(
            run.sft_cfg,
            max_steps=plum.warmup_steps_embed,
            num_train_epochs=1,
            learning_rate=plum.warmup_learning_rate,
            lr_scheduler_type="constant",
            warmup_steps=0,
            output_dir=str(out / "warmup"),
        )
        warm = embedding_warmup(
            run.model,
            run.tokenizer,
            run.train,
            warm_args,
            run.sid_rows(),
            resume_from_checkpoint=run.resume.warmup_checkpoint,
            history_sids=run.history_sids(),
        )
        run.log["warmup"] = warm.state.log_history
        # every rank: under FSDP the rows are gathered from the shards (a collective)
        save_stage_rows(
            run.model,
            run.sid_rows(),
            run.log["warmup"],
            out / "warmup",
            write=run.state.is_main_process,
        )
        run.state.wait_for_everyone()


def fine_tune(run: PlumRun, callbacks: list | None = None) -> None:
    """SFT on the mixture: full fine-tuning, the top layers only, or (Q)LoRA."""
    sid_rows = run.sid_rows()
    peft_config = (
        sid_lora_config(run.model, sid_rows, run.model_cfg) if run.model_cfg.use_peft else None
    )
    sft_cfg, top = run.sft_cfg, None
    if run.plum.train_top_layers is not None:
        top = train_top_layers(run.model, run.plum.train_top_layers, sid_rows)
        if sft_cfg.weight_decay:
            logger.info(
                "train_top_layers: weight_decay %s -> 0 (it would move frozen rows)",
                sft_cfg.weight_decay,
            )
            sft_cfg = replace(sft_cfg, weight_decay=0.0)
    distill = None
    if run.plum.distill_weight:
        distill = (sid_teacher(run), run.plum.distill_weight)
        run.log["teacher"] = teacher_record(run.plum, run.out)
    try:
        run.trainer = train_stage(
            run.model,
            run.tokenizer,
            run.train,
            sft_cfg,
            peft_config=peft_config,
            resume_from_checkpoint=run.resume.sft_checkpoint,
            history_sids=run.history_sids(),
            callbacks=callbacks,
            distill=distill,
        )
    finally:
        if top is not None:
            top.remove()
            run.model.requires_grad_(True)
    run.log["sft"] = run.trainer.state.log_history


def sid_teacher(run: PlumRun) -> Any:
    """The run's SASRec teacher (given, or trained into OUTPUT_DIR/teacher) read in the chat
    tokenizer's SID tokens (:class:`recllm.train.distill.SIDTeacher`)."""
    from recllm.train.distill import SIDTeacher
    from recllm.vocab import SID_FORMAT

    if run.teacher is None:
        run.teacher = run.teacher_provider(
            run.plum, run.split, run.dataset.catalog, run.out, run.sft_cfg.seed, run.state
        )
    token_ids = SID_FORMAT.token_ids(run.tokenizer, run.sid_map.codebook_sizes)
    run.teacher.to(run.model.device)
    return SIDTeacher(run.teacher, run.sid_map, token_ids, run.plum.distill_temperature)


def chat_recommender(
    task_cfg: TaskConfig, data_cfg: DataConfig, fingerprint: dict[str, object] | None = None
) -> dict[str, object]:
    """What evaluation, serving and chat need to prompt a PLUM-trained model as it was trained
    (``dialogue``: whether it learned conversations), and the data it was trained on (evaluation
    defaults to the same users and split, and refuses other data: ``fingerprint`` is
    :func:`recllm.data.fingerprint.data_fingerprint`)."""
    return {
        "prompt_style": "chat",
        "max_history": data_cfg.max_history,
        "data": asdict(data_cfg),
        "data_fingerprint": fingerprint,
        "task": {
            "rec_history_titles": task_cfg.rec_history_titles,
            "rec_history_markers": task_cfg.rec_history_markers,
            "max_title_chars": task_cfg.max_title_chars,
            "max_text_chars": task_cfg.max_text_chars,
            "facet_labels": dict(task_cfg.facet_labels),
            "session_length": task_cfg.session_length,
        },
        # the session task in the mixture: slates are asked for with its prompt (rec_session)
        "session": {
            "weight": task_cfg.mixture["rec_session"],
            "length": task_cfg.session_length,
        }
        if task_cfg.mixture.get("rec_session", 0) > 0
        else None,
        # conversations in the mixture: chat and the playground prompt it with dialogue turns
        "dialogue": {
            "weight": task_cfg.mixture["dialogue"],
            "steer": task_cfg.dialogue_steer,
            "turns": task_cfg.dialogue_turns,
        }
        if task_cfg.mixture.get("dialogue", 0) > 0
        else None,
    }


# -- save -------------------------------------------------------------------------------------


def save(run: PlumRun, think_record: dict[str, Any] | None = None) -> Path:
    """Save merged weights + tokenizer + SID map, checked to belong together, into
    OUTPUT_DIR/model, and both stages' loss logs; returns the model directory.

    Under FSDP/ZeRO-3 each rank holds shards: all ranks gather, rank 0 gets the full plain
    model (None elsewhere). ``think_record`` is saved with the model (``onerec_think``).
    """
    state, out, task_cfg = run.state, run.out, run.task_cfg
    trainer, tokenizer = run.trainer, run.tokenizer
    final = gather_full_model(trainer) if is_sharded(trainer) else trainer.model
    if run.quant is not None:  # merge the QLoRA adapter into the full-precision base, not 4 bits
        adapter_dir = out / "adapter"
        if state.is_main_process:
            final.save_pretrained(adapter_dir)
        state.wait_for_everyone()
        final, tokenizer = merge_adapter_full_precision(
            adapter_dir,
            run.model_path,
            run.sid_map,
            init=run.plum.vocab_init,
            catalog=run.dataset.catalog,
            dtype=run.dtype,
        )
    elif run.model_cfg.use_peft:
        final = final.merge_and_unload()
    model_dir = out / "model"
    if state.is_main_process:
        prompts = Path(task_cfg.prompts_dir)
        save_model_with_sids(
            final,
            tokenizer,
            run.sid_map,
            model_dir,
            overwrite=True,
            recommender={
                **chat_recommender(task_cfg, run.data_cfg, run.fingerprint),
                **({"think": think_record} if think_record else {}),
            },
            prompt_files=[prompts / "rec.jinja"]
            + ([prompts / "reason_rec.jinja"] if think_record else [])
            + ([prompts / "dialogue.jinja"] if task_cfg.mixture.get("dialogue", 0) > 0 else [])
            + (
                [prompts / "rec_session.jinja"]
                if task_cfg.mixture.get("rec_session", 0) > 0
                else []
            ),
            quantizer_dir=None
            if run.plum.init_model is not None  # carried from init_model below
            else (Path(run.plum.sid_map) if run.plum.sid_map else out / "sids") / "quantizer",
        )
        if run.plum.init_model is not None:
            carry_catalog_files(Path(run.plum.init_model), model_dir)
        write_json_atomic(out / "train_log.json", run.log)  # both stages' loss curves
        print(f"model with {len(run.ext.ids())} SID tokens saved to {model_dir}")
        print(f"load it with recllm.vocab.load_model_with_sids({str(model_dir)!r})")
    state.wait_for_everyone()
    return model_dir


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
