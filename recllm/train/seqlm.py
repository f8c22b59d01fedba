"""A generative recommender trained from scratch on SID sequences (TIGER-style, decoder only).

When there is no budget for a pretrained LLM (or to measure what the SIDs alone carry), a small
Qwen3-architecture decoder learns the language of item sequences directly: a user's history is
the concatenation of its items' SIDs,

    <|im_start|><|sid_begin|><a_12><b_3><c_200><|sid_end|><|sid_begin|><a_7>...<|sid_end|>

and the model is trained with next-token loss on every position, so one sequence teaches every
next-item prediction in it (as SASRec does with item ids). Recommending is constrained SID
generation after ``history + <|sid_begin|>`` (:func:`recllm.decode.sid_beam_search`), so every
recommendation is a catalog item. The vocabulary is the SID tokens plus three specials; the
saved directory carries its SID map like any other recllm model, and records its prompt style
(``"sid_sequence"``) so evaluation and serving build the same prompts.

Training runs through TRL's ``SFTTrainer`` on pre-tokenized sequences (no packing: each window is
its own row, batched by length so padding stays small).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

# The SID-sequence text format lives in tasks, below train and eval, which both prompt with it,
# and the options beside this module (seqlm_config.py); these names stay importable from here.
from recllm.tasks.sequence import (  # noqa: F401
    BOS,
    EOS,
    PAD,
    PROMPT_STYLE,
    history_text,
    training_sequences,
    training_windows,
)
from recllm.train.seqlm_config import SeqLMArguments, SeqLMConfig

if TYPE_CHECKING:
    import datasets
    from transformers import PreTrainedModel, PreTrainedTokenizerBase
    from trl import SFTConfig

    from recllm.data.config import DataConfig
    from recllm.data.splits import Split
    from recllm.sid.config import SIDConfig
    from recllm.sid.sidmap import SIDMap
    from recllm.train.period import PeriodSelection

logger = logging.getLogger(__name__)


def sid_sequence_tokenizer() -> PreTrainedTokenizerBase:
    """A tokenizer that knows only three specials; :func:`recllm.vocab.extend_vocab` adds SIDs.

    Every SID token is an added token, so a sequence string tokenizes into exactly its tokens.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {PAD: 0, BOS: 1, EOS: 2, "<unk>": 3}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.Fuse()  # tokens decode back to back, no spaces
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token="<unk>",
    )
    tok.padding_side = "left"
    return tok


def build_seqlm(
    sid_map: SIDMap, cfg: SeqLMConfig | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A freshly initialized Qwen3 decoder and tokenizer whose vocabulary is ``sid_map``'s SIDs."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from recllm.vocab import extend_vocab

    cfg = cfg or SeqLMConfig()
    if cfg.hidden_size % cfg.num_heads:
        raise ValueError(
            f"hidden_size {cfg.hidden_size} is not a multiple of num_heads {cfg.num_heads}"
        )
    kv_heads = cfg.num_kv_heads or cfg.num_heads
    if cfg.num_heads % kv_heads:
        raise ValueError(f"num_heads {cfg.num_heads} is not a multiple of num_kv_heads {kv_heads}")
    tok = sid_sequence_tokenizer()
    per_item = sid_map.levels + 2
    config = Qwen3Config(
        vocab_size=len(tok),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=kv_heads,
        head_dim=cfg.hidden_size // cfg.num_heads,
        max_position_embeddings=max(
            512, 2 ** math.ceil(math.log2((cfg.max_items + cfg.session_length + 1) * per_item))
        ),
        attention_dropout=cfg.attention_dropout,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        use_cache=True,
    )
    with torch.random.fork_rng():
        torch.manual_seed(cfg.model_seed)
        model = Qwen3ForCausalLM(config)
        ext = extend_vocab(model, tok, sid_map, init="mean")
        # from scratch: every SID row gets its own random init (the "mean" of the few special
        # rows would make all of them identical)
        with torch.no_grad():
            model.get_input_embeddings().weight[ext.first_id :].normal_(
                0.0, config.initializer_range
            )
    model.generation_config.do_sample = False
    if cfg.hidden_dropout:
        add_hidden_dropout(model, cfg.hidden_dropout)
    return model, tok


def add_hidden_dropout(model: PreTrainedModel, p: float) -> list:
    """Dropout ``p`` on the embedding output and on every attention/MLP output projection.

    Qwen3 (like Llama) has no hidden or embedding dropout, which sparse from-scratch training
    needs (SASRec on Amazon data uses .5). Forward hooks add it without a model subclass, so a
    saved model is a plain Qwen3 checkpoint: the hooks live only on this Python object, act
    only in ``model.train()`` mode, and vLLM/transformers load the weights unchanged.

    Returns:
        The hook handles (``handle.remove()`` takes the dropout out again).
    """
    import torch.nn.functional as F

    if not 0.0 <= p < 1.0:
        raise ValueError(f"hidden dropout must lie in [0, 1), got {p}")

    def hook(module, args, output):
        return F.dropout(output, p, module.training)

    base = model.get_decoder()
    targets = [base.embed_tokens]
    for layer in base.layers:
        targets += [layer.self_attn.o_proj, layer.mlp.down_proj]
    return [m.register_forward_hook(hook) for m in targets]


def training_dataset(
    split: Split,
    sid_map: SIDMap,
    tokenizer: PreTrainedTokenizerBase,
    max_items: int,
    period: PeriodSelection | None = None,
    session_length: int = 1,
) -> datasets.Dataset:
    """Pre-tokenized ``{"input_ids"}`` rows, one per training window of
    ``max_items + session_length`` items (those ``period`` keeps, when given)."""
    import datasets

    texts = training_sequences(split, sid_map, max_items, session_length)
    if period is not None:
        texts = [texts[k] for k in period.indices]
    return datasets.Dataset.from_dict(
        {"input_ids": tokenizer(texts, add_special_tokens=False)["input_ids"]}
    )


def time_budget_callback(minutes: float | None):
    """A ``TrainerCallback`` that ends training once ``minutes`` have passed (None: never).

    ``callback.stopped_at`` is the step at which it stopped training (None if it did not).
    """
    from transformers import TrainerCallback

    class TimeBudget(TrainerCallback):
        def __init__(self) -> None:
            self.start = time.monotonic()
            self.stopped_at: int | None = None

        def on_step_end(self, args, state, control, **kwargs):
            if minutes is not None and time.monotonic() - self.start > 60 * minutes:
                control.should_training_stop = True
                if self.stopped_at is None:
                    self.stopped_at = state.global_step
                    logger.info(
                        "time budget of %.1f min reached at step %d", minutes, state.global_step
                    )
            return control

    return TimeBudget()


@dataclass
class SeqLMRun:
    """What :func:`run_seqlm` made: the model directories (first seed first) and the run log."""

    model_dirs: list[Path]
    log: dict[str, Any]


def model_dir_name(member: int, seed: int) -> str:
    """``model`` for the first decoder, ``model_seed<N>`` for the others."""
    return "model" if member == 0 else f"model_seed{seed}"


def item_token_map(item_ids: list[str]) -> SIDMap:
    """A 1-level "SID" map with one code per item (the ``item_tokens`` ablation)."""
    import numpy as np

    from recllm.sid.sidmap import SIDMap

    codes = np.arange(len(item_ids))[:, None]
    return SIDMap(item_ids, codes, (len(item_ids),), {"ablation": "one token per item"})


def window_period(split: Split, args: SeqLMArguments, max_items: int) -> PeriodSelection | None:
    """The training windows of ``--train_since`` plus the replay share, selected by each
    window's last (target) event; None without a period."""
    from recllm.train.period import event_times, select_period

    if args.train_since is None:
        return None
    windows = training_windows(split, max_items, args.session_length)
    return select_period(
        [user for user, _ in windows],
        [window[-1] for _, window in windows],
        event_times(split),
        since=args.train_since,
        replay_ratio=args.replay_ratio,
        seed=args.model_seed,
    )


def run_seqlm(
    args: SeqLMArguments,
    data_cfg: DataConfig,
    sid_cfg: SIDConfig,
    sft_cfg: SFTConfig,
    *,
    evaluate: Callable[..., Any] | None = None,
    callbacks: list | None = None,
    teacher_provider: Callable[..., Any] | None = None,
) -> SeqLMRun:
    """Data -> SIDs -> ``args.ensemble`` from-scratch decoders -> model directories.

    Validates the settings against ``OUTPUT_DIR`` (:func:`recllm.train.rundir.check_output_dir`)
    before anything is written, records them in ``OUTPUT_DIR/resolved_config.json``, builds
    (or reuses, when built with the same settings) the SID map in ``OUTPUT_DIR/sids``, trains
    each decoder through TRL's ``SFTTrainer`` within ``args.time_budget_minutes``, keeps the
    epoch with the best validation metric when ``args.valid_users`` > 0, and saves each as a
    model directory ``recllm eval`` reads (``model``, ``model_seed<N>``). Per-seed loss curves
    and validation histories go to ``OUTPUT_DIR/train_log.json``.

    Args:
        evaluate: Ranks validation users: called as ``evaluate(model, tokenizer, sid_map,
            examples, spec, catalog, beams=..., batch_size=..., progress=False)`` and returning
            an object with ``.metrics`` (:func:`recllm.eval.run.evaluate_recommender`). Training
            sits below evaluation, so the caller passes it in; needed when ``valid_users`` > 0.
        callbacks: ``transformers.TrainerCallback`` objects joining every decoder's training.
        teacher_provider: Makes the teacher of ``--distill_weight``
            (:func:`recllm.baselines.sasrec.run_teacher`); needed when that weight is > 0.

    Raises:
        UserError: A stale output directory or SID map, or bad data.
    """
    from dataclasses import asdict, replace

    import torch

    from recllm.data import load_rec_dataset, split_dataset
    from recllm.data.fingerprint import data_fingerprint
    from recllm.io import write_json_atomic
    from recllm.provenance import library_versions
    from recllm.sid.build import build_sid_map, write_sid_artifact
    from recllm.sid.sidmap import SIDMap
    from recllm.train.checkpoints import (
        plan_trainer_resume,
    )
    from recllm.train.distill_args import check_teacher_provider, teacher_record
    from recllm.train.rundir import check_output_dir, check_sid_artifact

    check_teacher_provider(args, teacher_provider)
    if args.valid_users and evaluate is None:
        raise ValueError("valid_users > 0 needs the `evaluate` function (evaluate_recommender)")
    if not torch.cuda.is_available() and not sft_cfg.use_cpu:
        sft_cfg = replace(sft_cfg, use_cpu=True)
    out = Path(sft_cfg.output_dir)

    # validate everything cheap before anything expensive runs or anything is written
    dataset = load_rec_dataset(config=data_cfg)
    split = split_dataset(dataset, data_cfg)
    # the data's content, not only its path and settings: a rerun or resume after the data at
    # the same path changed is refused instead of reusing SIDs and checkpoints of the old data
    fingerprint = data_fingerprint(split, dataset.catalog)
    init_map = None
    if args.init_model is not None:  # its SID map, checked against the data before any write
        from recllm.train.init_model import check_items_in_map, load_init_model

        _, init_map = load_init_model(args.init_model, PROMPT_STYLE)
        check_items_in_map(dataset.catalog, init_map, args.init_model)
    if args.train_until is not None:  # the data as it was then; the fingerprint is the data's
        from recllm.train.period import cut_training

        split = cut_training(split, args.train_until)
    period = window_period(split, args, args.max_items)  # refuses data without timestamps
    # a given teacher must have been trained on this training split (cheap to check now)
    teacher = None
    if args.teacher:
        teacher = teacher_provider(args, split, dataset.catalog, out, sft_cfg.seed)
    resolved = {
        "seqlm": asdict(args),
        "data": asdict(data_cfg),
        "data_fingerprint": fingerprint,
        "sid": asdict(sid_cfg),
        "sft": {k: v for k, v in sft_cfg.to_dict().items() if not k.startswith("_")},
        "versions": library_versions(),
        **({"init_model_sid_map": init_map.content_hash} if init_map is not None else {}),
    }
    check_output_dir(out, resolved, overwrite=args.overwrite_output_dir)
    resume = _checked_resume(sft_cfg.resume_from_checkpoint, args, out)
    write_json_atomic(out / "resolved_config.json", resolved)
    logger.info(
        "resolved config in %s: data %s (max_users %s), SIDs %s, %d decoder(s) %d x %d wide, "
        "lr %g, %s epochs / %s steps, budget %s min, %d validation users",
        out / "resolved_config.json",
        data_cfg.data_path,
        data_cfg.max_users,
        "one token per item"
        if args.item_tokens
        else f"{sid_cfg.method} {sid_cfg.levels} x {sid_cfg.codebook_size}",
        args.ensemble,
        args.num_layers,
        args.hidden_size,
        sft_cfg.learning_rate,
        sft_cfg.num_train_epochs,
        sft_cfg.max_steps,
        args.time_budget_minutes,
        args.valid_users,
    )

    # SID map: one token per item (ablation), given (--sid_map), reused when built with exactly
    # these settings, or built now
    if init_map is not None:
        sid_map = init_map
        logger.info(
            "init_model: SID map %s of %s reused", sid_map.content_hash[:12], args.init_model
        )
    elif args.item_tokens:
        sid_map = item_token_map(list(dataset.catalog.ids))
    else:
        sid_dir = Path(args.sid_map) if args.sid_map else out / "sids"
        if not (sid_dir / "sid_map.json").is_file():
            build = build_sid_map(dataset, sid_cfg, data_cfg, split=split)
            build.sid_map.meta["data_fingerprint"] = fingerprint
            write_sid_artifact(build, sid_dir)
        sid_map = SIDMap.load(sid_dir)
        if not args.sid_map:
            expected = {
                "sid_config": asdict(sid_cfg),
                "data_config": asdict(data_cfg),
                "data_fingerprint": fingerprint,
            }
            check_sid_artifact(sid_dir, sid_map.meta, expected)

    recommender = {
        "prompt_style": PROMPT_STYLE,
        "data": asdict(data_cfg),
        # `recllm eval` refuses other data than this split
        "data_fingerprint": fingerprint,
    }
    if args.distill_weight and teacher is None:  # trained into OUTPUT_DIR/teacher
        teacher = teacher_provider(args, split, dataset.catalog, out, sft_cfg.seed)
    run = _Run(
        args, sft_cfg, split, dataset.catalog, sid_map, out, period, callbacks or [], teacher
    )
    model_dirs: list[Path] = []
    log: dict[str, Any] = {"train_users": len(split.train.sequences), "seeds": {}}
    if teacher is not None:
        log["teacher"] = teacher_record(args, out)
    if period is not None:
        log["period"] = period.report()
    earlier = _finished_members(out) if resume is not None else {}
    for member in range(args.ensemble):
        seed = sft_cfg.seed + member
        name = model_dir_name(member, seed)
        if str(seed) in earlier and (out / name).is_dir():  # finished in the killed run
            log["seeds"][str(seed)] = earlier[str(seed)]
            model_dirs.append(out / name)
            logger.info("decoder %d (seed %d) was finished in an earlier run", member + 1, seed)
            continue
        runs_dir = out / "runs" / f"seed{seed}"
        checkpoint = plan_trainer_resume(_member_resume(resume, runs_dir), runs_dir)
        model_dir, log["seeds"][str(seed)] = _train_member(
            member, seed, checkpoint, run, recommender, evaluate
        )
        model_dirs.append(model_dir)
        write_json_atomic(out / "train_log.json", log)
        print(f"model {member + 1}/{args.ensemble} saved to {out / name}")
    return SeqLMRun(model_dirs, log)


def _checked_resume(resume: str | bool | None, args: SeqLMArguments, out: Path) -> str | None:
    """``--resume_from_checkpoint`` as ``"true"``, a checkpoint path, or None (start over).

    Raises:
        UserError: Resuming with validation-based epoch selection, whose best weights so far
            lived in the killed process's memory only.
    """
    from recllm.errors import UserError
    from recllm.train.checkpoints import LATEST

    if resume in (None, False, "", "false", "False", "no", "0"):
        return None
    if args.valid_users:
        raise UserError(
            f"--resume_from_checkpoint {resume}",
            "cannot continue a run with --valid_users > 0: the best epoch's weights and its "
            "validation history lived in the stopped process's memory only",
            f"start over with --overwrite_output_dir true (or --valid_users 0) in {out}",
        )
    if resume is True or resume in LATEST:
        return "true"
    path = Path(str(resume)).expanduser()
    if path.resolve().parent.parent != (out / "runs").resolve():
        raise UserError(
            f"--resume_from_checkpoint {resume}",
            f"is not a checkpoint of this run's decoders ({out / 'runs'}/seed<N>/checkpoint-K)",
            "pass true (the latest complete checkpoint of each decoder), or such a path",
        )
    return str(path)


def _member_resume(resume: str | None, runs_dir: Path) -> str | None:
    """The resume request of one decoder: a checkpoint path applies to its own decoder, which
    the others continue as ``true`` would (the latest complete checkpoint, if any)."""
    if resume is None or resume == "true":
        return resume
    return resume if Path(resume).resolve().parent == runs_dir.resolve() else "true"


def _finished_members(out: Path) -> dict[str, Any]:
    """The log entries of the decoders an earlier run of these settings finished (each is
    logged only after its model directory was saved)."""
    import json

    path = out / "train_log.json"
    return json.loads(path.read_text()).get("seeds", {}) if path.is_file() else {}


@dataclass
class _Run:
    """What every decoder of a seqlm run shares."""

    args: SeqLMArguments
    sft_cfg: Any
    split: Any
    catalog: Any
    sid_map: Any
    out: Path
    period: Any = None
    callbacks: list = field(default_factory=list)
    teacher: Any = None  # the SASRec a teacher's loss reads (distill_weight > 0)


def _train_member(
    member: int,
    seed: int,
    checkpoint: Path | None,
    run: _Run,
    recommender: dict[str, Any],
    evaluate: Callable[..., Any] | None,
) -> tuple[Path, dict[str, Any]]:
    """Train decoder ``member`` (from ``checkpoint`` when given), save its model directory and
    return it with its log entry."""
    from dataclasses import replace

    from trl import SFTTrainer

    from recllm.tasks.prompting import PromptSpec
    from recllm.train.checkpoints import MarkCompleteCheckpoints, train_from
    from recllm.train.select import BestOnValidation
    from recllm.vocab import load_model_with_sids, save_model_with_sids

    name = model_dir_name(member, seed)
    cfg = run.args.model_config(member)
    if run.args.init_model is not None:  # its weights and tokenizer as saved
        model, tok, _ = load_model_with_sids(run.args.init_model, sid_map=run.sid_map)
    else:
        model, tok = build_seqlm(run.sid_map, cfg)
    train = training_dataset(
        run.split, run.sid_map, tok, cfg.max_items, run.period, cfg.session_length
    )
    logger.info(
        "decoder %d/%d (seed %d): %d training windows, %.2fM parameters",
        member + 1,
        run.args.ensemble,
        seed,
        len(train),
        model.num_parameters() / 1e6,
    )
    budget = time_budget_callback(run.args.time_budget_minutes)
    callbacks: list[Any] = [budget]
    select = None
    if run.args.valid_users:
        from recllm.data.splits import select_users

        valid = select_users(run.split.valid, run.args.valid_users, run.args.valid_seed)
        spec = PromptSpec(style=PROMPT_STYLE, max_history=cfg.max_items)

        def on_valid(m, tok=tok, valid=valid, spec=spec):
            return evaluate(
                m,
                tok,
                run.sid_map,
                valid,
                spec,
                run.catalog,
                beams=run.args.valid_beams,
                batch_size=64,
                progress=False,
            ).metrics

        select = BestOnValidation(
            on_valid, metric=run.args.select_metric, patience=run.args.patience
        )
        callbacks.append(select)
    member_args = replace(run.sft_cfg, output_dir=str(run.out / "runs" / f"seed{seed}"), seed=seed)
    trainer_class, extra = SFTTrainer, {}
    if run.teacher is not None:
        from recllm.train.distill import SIDTeacher, distill_trainer_class
        from recllm.vocab import SID_FORMAT

        trainer_class = distill_trainer_class(SFTTrainer)
        token_ids = SID_FORMAT.token_ids(tok, run.sid_map.codebook_sizes)
        run.teacher.to(member_args.device)
        extra = {
            "teacher": SIDTeacher(
                run.teacher, run.sid_map, token_ids, run.args.distill_temperature
            ),
            "distill_weight": run.args.distill_weight,
        }
    trainer = trainer_class(
        model=model,
        args=member_args,
        train_dataset=train,
        processing_class=tok,
        callbacks=[*callbacks, *run.callbacks, MarkCompleteCheckpoints()],
        **extra,
    )
    train_from(trainer, checkpoint)
    if select is not None:
        select.restore_best(model)
    model_dir = save_model_with_sids(
        model,
        tok,
        run.sid_map,
        run.out / name,
        overwrite=True,
        recommender={**recommender, "max_history": cfg.max_items},
        quantizer_dir=None
        if run.args.init_model is not None or run.args.item_tokens  # no quantizer of its own
        else (Path(run.args.sid_map) if run.args.sid_map else run.out / "sids") / "quantizer",
    )
    if run.args.init_model is not None:
        from recllm.train.init_model import carry_catalog_files

        carry_catalog_files(Path(run.args.init_model), model_dir)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return model_dir, {
        "model_dir": name,
        "epochs": round(trainer.state.epoch or 0.0, 2),
        "steps": trainer.state.global_step,
        "stopped_by_budget": budget.stopped_at is not None,
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "parameters": model.num_parameters(),
        "best_epoch": select.best_epoch if select else None,
        "valid": select.history if select else None,
        "log_history": trainer.state.log_history,
    }
