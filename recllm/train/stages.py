"""The PLUM recipe's stages, in the order a run goes through them.

    validate -> load_data -> open_output_dir -> build_sids -> extend_vocabulary -> build_texts
    -> warm_up -> fine_tune -> save

Each stage takes the :class:`PlumRun` the earlier stages filled and adds what it makes.
:func:`recllm.train.plum.run_plum` (``recipes/plum_sft.py``, ``recllm quickstart``, the dialogue
mixture) runs them all; :func:`recllm.train.think.run_think` (``recipes/onerec_think.py``) checks
its rationales between ``load_data`` and ``open_output_dir`` and runs the rest unchanged.

Nothing is written before ``open_output_dir``: every setting, the model, the data and what the
data allows (a codebook no larger than the catalog, a ``max_length`` that holds an example) are
checked first, so a bad flag leaves the output directory as it was.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from accelerate import PartialState
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, set_seed
from trl import ModelConfig, SFTConfig, get_quantization_config

from recllm.data import DataConfig, load_rec_dataset, split_dataset
from recllm.data.fingerprint import data_fingerprint, fingerprint_differences
from recllm.errors import UserError
from recllm.io import write_json_atomic
from recllm.models import check_model_source, resolve_model
from recllm.provenance import library_versions
from recllm.sid.build import build_sid_map, write_sid_artifact
from recllm.sid.config import SIDConfig
from recllm.sid.quantize import check_embeddings
from recllm.sid.sidmap import SIDMap
from recllm.tasks import TaskBuilder, TaskConfig
from recllm.train.checkpoints import (
    LATEST,
    ResumePlan,
    latest_complete,
    plan_resume,
    set_aside_incomplete,
)
from recllm.train.init_model import check_items_in_map, load_init_model
from recllm.train.period import cut_training, event_times, select_period
from recllm.train.recipe_args import check_training_values
from recllm.train.rows import check_top_layers_flag
from recllm.train.rundir import check_output_dir, check_sid_artifact
from recllm.train.sft import (
    bf16_fast,
    whole_model_loading,
)
from recllm.vocab import SID_FORMAT, extend_vocab, load_model_with_sids

if TYPE_CHECKING:
    from recllm.train.plum import PlumArguments

logger = logging.getLogger(__name__)


@dataclass
class PlumRun:
    """One recipe run as it moves through the stages: its settings and what each stage made.

    Attributes:
        resolved: The settings recorded in ``OUTPUT_DIR/resolved_config.json``; a rerun or a
            resume into the same directory must match them (data content included).
        fingerprint: :func:`recllm.data.fingerprint.data_fingerprint` of the split.
        log: Both stages' loss logs (``OUTPUT_DIR/train_log.json``).
    """

    plum: PlumArguments
    data_cfg: DataConfig
    sid_cfg: SIDConfig
    task_cfg: TaskConfig
    sft_cfg: SFTConfig
    model_cfg: ModelConfig
    state: PartialState
    out: Path
    model_path: Any
    quant: Any
    tokenizer: Any
    dataset: Any = None
    split: Any = None
    fingerprint: dict[str, Any] | None = None
    resolved: dict[str, Any] = field(default_factory=dict)
    resume: ResumePlan = field(default_factory=ResumePlan)
    sid_map: SIDMap | None = None
    model: Any = None
    ext: Any = None
    dtype: Any = "auto"
    dialogues: list[Any] | None = None
    train: Any = None
    log: dict[str, Any] = field(default_factory=dict)
    trainer: Any = None
    teacher: Any = None  # the SASRec of --distill_weight (recllm.train.distill_args)
    teacher_provider: Any = None  # makes it: recllm.baselines.sasrec.run_teacher

    @property
    def warmup_stage(self) -> bool:
        """Whether the run has an embedding-only warm-up (not on a quantized base, nor when
        continuing a recllm model: its SID rows are trained)."""
        return (
            self.quant is None and self.plum.init_model is None and self.plum.warmup_steps_embed > 0
        )

    def sid_rows(self) -> list[int]:
        return self.ext.ids().tolist()

    def history_sids(self) -> tuple[list[int], int]:
        """rec_sequence rows are also supervised on the code tokens of their history SIDs (not
        on the begin/end markers around them: the end follows the last level, a begin the new
        line)."""
        levels = self.sid_map.levels
        return [t for lv in range(levels) for t in self.ext.level_ids(lv).tolist()], levels


# -- validate ---------------------------------------------------------------------------------


def _device_settings(sft_cfg: SFTConfig) -> SFTConfig:
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
    return sft_cfg


def _check_flags(plum: PlumArguments, sft_cfg: SFTConfig, model_cfg: ModelConfig) -> None:
    """Settings that are wrong whatever the model and the data."""
    check_top_layers_flag(plum.train_top_layers, model_cfg.use_peft)
    if plum.init_weights not in ("pretrained", "random"):
        raise UserError(
            f"--init_weights {plum.init_weights}",
            "is not a weight initialisation",
            "pass pretrained (the checkpoint's weights) or random (same architecture, new weights)",
        )
    _check_incremental_flags(plum, model_cfg)
    # the recipes' shared check, also for configs built in code rather than parsed
    check_training_values(sft_cfg)
    check_training_values({"warmup_learning_rate": plum.warmup_learning_rate})


def _check_incremental_flags(plum: PlumArguments, model_cfg: ModelConfig) -> None:
    """``--init_model``, ``--train_since/--train_until`` and ``--replay_ratio`` combinations."""
    if plum.init_model is not None:
        clash = [
            flag
            for flag, on in (
                ("--sid_map", plum.sid_map),
                ("--init_weights random", plum.init_weights == "random"),
                ("--load_in_4bit/--load_in_8bit", model_cfg.load_in_4bit or model_cfg.load_in_8bit),
            )
            if on
        ]
        if clash:
            raise UserError(
                f"--init_model {plum.init_model}",
                f"continues a saved model with its own weights and SID map; {clash[0]} asks "
                "for other ones",
                f"drop {clash[0]}",
            )
    if plum.replay_ratio < 0:
        raise UserError(
            f"--replay_ratio {plum.replay_ratio}", "must be 0 or more", "pass e.g. 0.5, or 0"
        )
    if plum.replay_ratio > 0 and plum.train_since is None:
        raise UserError(
            f"--replay_ratio {plum.replay_ratio}",
            "replays older examples alongside a period's new ones, and no period was given",
            "add --train_since TIME (the start of the new interactions), or drop --replay_ratio",
        )
    if (
        plum.train_since is not None
        and plum.train_until is not None
        and plum.train_since >= plum.train_until
    ):
        raise UserError(
            f"--train_since {plum.train_since} --train_until {plum.train_until}",
            "the period is empty (since must come before until)",
            "pass a --train_since earlier than --train_until",
        )


def min_example_tokens(tokenizer: Any, levels: int) -> int:
    """Tokens of the shortest training example there can be: an empty user turn and an
    assistant turn in the chat template, and one SID span (every task's example holds one:
    ``levels`` codes between a begin and an end marker)."""
    turns = [{"role": "user", "content": ""}, {"role": "assistant", "content": ""}]
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(turns, tokenize=False)
        frame = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    else:
        frame = 0
    return frame + levels + 2


def validate(
    plum: PlumArguments,
    data_cfg: DataConfig,
    sid_cfg: SIDConfig,
    task_cfg: TaskConfig,
    sft_cfg: SFTConfig,
    model_cfg: ModelConfig,
) -> PlumRun:
    """Check every setting that needs no data, and set up the device, the distributed state
    and the seed; nothing is written.

    Raises:
        UserError: A bad flag or combination of flags, or a model that cannot be loaded.
    """
    sft_cfg = _device_settings(sft_cfg)
    _ = sft_cfg.device  # sets up the distributed state the trainer will use
    state = PartialState()
    # Same seed -> same run in every process: the SID rows' init, the embedding's padding rows
    # and the data order all draw from seeded generators from here on.
    set_seed(sft_cfg.seed)
    _check_flags(plum, sft_cfg, model_cfg)
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
    init_map = None
    if plum.init_model is not None:  # its own tokenizer (SID tokens included) and SID map
        model_path = Path(plum.init_model)
        tokenizer, init_map = load_init_model(plum.init_model, "chat")
    else:
        tokenizer = AutoTokenizer.from_pretrained(model_path)
    levels = init_map.levels if init_map is not None else sid_cfg.levels
    floor = min_example_tokens(tokenizer, levels)
    if sft_cfg.max_length is not None and sft_cfg.max_length < floor:
        raise UserError(
            f"--max_length {sft_cfg.max_length}",
            f"too short for any training example (the chat template and one {levels}-"
            f"level SID take {floor} tokens)",
            f"pass --max_length {floor} or more; a 20-item history prompt takes about 200",
        )
    return PlumRun(
        plum,
        data_cfg,
        sid_cfg,
        task_cfg,
        sft_cfg,
        model_cfg,
        state=state,
        out=Path(sft_cfg.output_dir),
        model_path=model_path,
        quant=quant,
        tokenizer=tokenizer,
        sid_map=init_map,
    )


# -- data -------------------------------------------------------------------------------------


def _check_codebook_fits(items: int, sid_cfg: SIDConfig) -> None:
    """The quantizer's own check (``recllm sid build`` gives the same line), before any write:
    every code of a level needs an item."""
    try:
        check_embeddings(np.zeros((items, 0), dtype=np.float32), sid_cfg.codebook_size)
    except ValueError as e:
        where, _, rest = str(e).partition(": ")
        problem, _, fix = rest.partition("; Fix: ")
        raise UserError(where, problem, fix) from None


def load_data(run: PlumRun) -> None:
    """Load and split the data, check what it allows, and resolve the run's settings (the data
    content's fingerprint included)."""
    run.dataset = load_rec_dataset(config=run.data_cfg)
    run.split = split_dataset(run.dataset, run.data_cfg)
    if run.plum.init_model is not None:
        check_items_in_map(run.dataset.catalog, run.sid_map, run.plum.init_model)
    elif not run.plum.sid_map:
        _check_codebook_fits(len(run.dataset.catalog), run.sid_cfg)
    # the data's own fingerprint (evaluation checks it), taken before a --train_until cut
    run.fingerprint = data_fingerprint(run.split, run.dataset.catalog)
    if run.plum.train_until is not None:  # the data as it was then (the SID build included)
        run.split = cut_training(run.split, run.plum.train_until)
    if run.plum.train_since is not None:
        event_times(run.split)  # a period needs timestamps: refused before any write
    run.resolved = {
        "plum": asdict(run.plum),
        "data": asdict(run.data_cfg),
        "data_fingerprint": run.fingerprint,
        "sid": asdict(run.sid_cfg),
        "tasks": asdict(run.task_cfg),
        "model": asdict(run.model_cfg),
        "sft": {k: v for k, v in run.sft_cfg.to_dict().items() if not k.startswith("_")},
        "world_size": run.state.num_processes,
        "versions": library_versions(),
    }
    if run.plum.init_model is not None:  # another model at the same path is another run
        run.resolved["init_model_sid_map"] = run.sid_map.content_hash
    if run.plum.dialogues and run.task_cfg.mixture.get("dialogue", 0) > 0:
        # checked and recorded before any write: other conversations at the same path are
        # other settings
        run.dialogues = load_dialogues_of(run.plum.dialogues, run.split, run.dataset.catalog)
        run.resolved["dialogues_sha256"] = rows_sha256(c.to_dict() for c in run.dialogues)


def rows_sha256(rows: Iterable[dict[str, Any]]) -> str:
    """A SHA-256 over rows of JSON values (their order and every column): a rationale or
    conversation set at the same path but with other rows gets another hash."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps(row, sort_keys=True, ensure_ascii=False).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


# -- the output directory ---------------------------------------------------------------------


def _check_same_data(run: PlumRun) -> None:
    """Refuse a rerun or resume into ``run.out`` when the data changed since its run (same
    path and settings, other content): its SID map and checkpoints belong to the old data."""
    record = run.out / "resolved_config.json"
    if run.plum.overwrite_output_dir or not record.is_file():
        return
    try:
        recorded = json.loads(record.read_text())
        old = recorded.get("data_fingerprint")
    except (OSError, ValueError, AttributeError):
        return  # check_output_dir names an unreadable record
    if recorded.get("data") != json.loads(json.dumps(run.resolved["data"])):
        return  # other data settings: check_output_dir names the keys that differ
    diffs = fingerprint_differences(old, run.fingerprint) if isinstance(old, dict) else []
    if not diffs:
        return
    resuming = (
        str(run.sft_cfg.resume_from_checkpoint) in LATEST
        or Path(str(run.sft_cfg.resume_from_checkpoint)).is_dir()
    )
    done = [p.name for p in (latest_complete(run.out), latest_complete(run.out / "warmup")) if p]
    made = [name for name in ("sids", "model") if (run.out / name).is_dir()] + done
    stale = (
        f"resuming would continue {' and '.join(done)}, trained on the old data"
        if resuming and done
        else f"its {', '.join(made) or 'artifacts'} were made from the old data"
    )
    raise UserError(
        f"--data_path {run.data_cfg.data_path}",
        f"holds other data than the run in {run.out} was made from ({'; '.join(diffs)}): {stale}",
        "train on the new data into another --output_dir, or pass --overwrite_output_dir true "
        "to replace the old run",
    )


def open_output_dir(run: PlumRun) -> None:
    """Check ``OUTPUT_DIR`` against the run's settings, plan the resume, record the settings:
    the first write of the run."""
    state, out = run.state, run.out
    if state.is_main_process:
        _check_same_data(run)
        check_output_dir(out, run.resolved, overwrite=run.plum.overwrite_output_dir)
    state.wait_for_everyone()
    run.resume = plan_resume(run.sft_cfg.resume_from_checkpoint, out, warmup=run.warmup_stage)
    state.wait_for_everyone()
    if not state.is_main_process:
        return
    for stage_dir in (out, out / "warmup"):  # a save that was killed: never resumed from
        set_aside_incomplete(stage_dir)
    write_json_atomic(out / "resolved_config.json", run.resolved)
    sft, data, sid = run.sft_cfg, run.data_cfg, run.sid_cfg
    logger.info(
        "resolved config in %s: model %s, data %s (max_users %s), SIDs %s %d x %d, "
        "warm-up %d steps, SFT %s steps x batch %d x %d ranks, lr %g, peft %s%s",
        out / "resolved_config.json",
        run.model_cfg.model_name_or_path,
        data.data_path,
        data.max_users,
        sid.method,
        sid.levels,
        sid.codebook_size,
        run.plum.warmup_steps_embed,
        sft.max_steps if sft.max_steps > 0 else f"{sft.num_train_epochs} epochs of",
        sft.per_device_train_batch_size,
        state.num_processes,
        sft.learning_rate,
        run.model_cfg.use_peft,
        f"; resuming ({run.resume})" if run.resume.resuming else "",
    )
    logger.debug("resolved config: %s", run.resolved)


# -- SIDs and vocabulary ----------------------------------------------------------------------


def build_sids(run: PlumRun) -> None:
    """The SID map: given (``--sid_map``), reused when it was built with exactly these settings
    and data, or built by rank 0 into OUTPUT_DIR/sids (the other ranks read what it wrote).
    With ``--init_model`` the model's own map is reused as it is (loaded by ``validate``)."""
    if run.plum.init_model is not None:
        logger.info(
            "init_model: SID map %s (%d items) of %s reused",
            run.sid_map.content_hash[:12],
            len(run.sid_map),
            run.plum.init_model,
        )
        return
    sid_dir = Path(run.plum.sid_map) if run.plum.sid_map else run.out / "sids"
    with run.state.main_process_first():
        if not (sid_dir / "sid_map.json").is_file():
            build = build_sid_map(run.dataset, run.sid_cfg, run.data_cfg, split=run.split)
            build.sid_map.meta["data_fingerprint"] = run.fingerprint
            write_sid_artifact(build, sid_dir)
        run.sid_map = SIDMap.load(sid_dir)
    if not run.plum.sid_map:
        expected = {
            "sid_config": asdict(run.sid_cfg),
            "data_config": asdict(run.data_cfg),
            "data_fingerprint": run.fingerprint,
        }
        check_sid_artifact(sid_dir, run.sid_map.meta, expected)


def extend_vocabulary(run: PlumRun) -> None:
    """Load the model (or draw its weights afresh) and add one token per (level, code)."""
    dtype = run.model_cfg.dtype
    run.dtype = getattr(torch, dtype) if dtype not in (None, "auto") else "auto"
    with whole_model_loading(run.sft_cfg):  # ZeRO-3 would build 0-row placeholders: extend first
        if run.plum.init_model is not None:  # weights, SID rows included, as saved
            run.model, _, _ = load_model_with_sids(
                run.plum.init_model, sid_map=run.sid_map, dtype=run.dtype
            )
            run.ext = extend_vocab(run.model, run.tokenizer, run.sid_map)
            if run.ext.init is not None:  # the saved rows must be kept, never re-initialised
                raise UserError(
                    f"--init_model {run.plum.init_model}",
                    "its SID rows were not all present",
                    "pass a directory save_model_with_sids wrote",
                )
            return
        if run.plum.init_weights == "random":  # same config and tokenizer, weights drawn afresh
            run.model = AutoModelForCausalLM.from_config(
                AutoConfig.from_pretrained(run.model_path),
                **({} if run.dtype == "auto" else {"dtype": run.dtype}),
            )
            logger.info("init_weights random: %s's architecture, new weights", run.model_path)
        else:
            run.model = AutoModelForCausalLM.from_pretrained(
                run.model_path, dtype=run.dtype, quantization_config=run.quant
            )
        run.ext = extend_vocab(
            run.model,
            run.tokenizer,
            run.sid_map,
            init=run.plum.vocab_init,
            catalog=run.dataset.catalog,
        )


def build_texts(run: PlumRun, rationales: Any = None) -> None:
    """The training mixture (training split only), capped at ``max_train_examples``."""
    sid_map = run.sid_map
    builder = TaskBuilder(
        run.dataset.catalog, lambda item: SID_FORMAT.render(sid_map.code(item)), run.task_cfg
    )
    builder.rationales = rationales
    builder.dialogues = run.dialogues  # None: built from the training split
    train = builder.build(run.split)["train"]
    period = None
    if run.plum.train_since is not None:
        period = select_period(
            train["user_id"],
            train["target"],
            event_times(run.split),
            since=run.plum.train_since,
            replay_ratio=run.plum.replay_ratio,
            seed=run.task_cfg.task_seed,
        )
        train = train.select(period.indices)
    cap = run.plum.max_train_examples
    if cap is not None and len(train) > cap:
        train = train.shuffle(seed=run.task_cfg.task_seed).select(range(cap))
    run.train = train
    model = run.model
    run.log = {
        "world_size": run.state.num_processes,
        "train_examples": len(train),
        **({"period": period.report()} if period is not None else {}),
        "quantized": "4bit"
        if getattr(model, "is_loaded_in_4bit", False)
        else "8bit"
        if getattr(model, "is_loaded_in_8bit", False)
        else None,
    }


def load_dialogues_of(path: str, split: Any, catalog: Any) -> list[Any]:
    """The conversations of ``--dialogues``, checked to come from this run's data."""
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
