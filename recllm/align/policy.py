"""What every post-SFT stage (DPO, advantage-weighted SFT, GRPO) starts from: the SFT model
directory and its data, a reward, and the training users to mine.

:class:`PolicyArguments` holds the options these recipes share; :func:`start_policy` checks
them before any work, loads the model directory with its tokenizer, SID map and the data it
records (checked against its fingerprint), writes ``OUTPUT_DIR/resolved_config.json``, builds
the reward (training the SASRec reward model on the TRAINING split when the reward names
``sasrec`` and none is given) and picks the mining users.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from recllm.errors import UserError

logger = logging.getLogger(__name__)


@dataclass
class PolicyArguments:
    """The start model, the reward and the mining of a post-SFT stage."""

    model_dir: str | None = field(
        default=None,
        metadata={"help": "The SFT model directory (written by plum_sft or seqlm)."},
    )
    rounds: int = field(default=1, metadata={"help": "Mine -> train rounds."})
    reward: str = field(
        default="sasrec=1.0",
        metadata={
            "help": "Reward as name=weight pairs: exact_hit, legality, prefix_credit, "
            "rank_shaped, sasrec (the reward model)."
        },
    )
    reward_model: str | None = field(
        default=None,
        metadata={
            "help": "A SASRec artifact directory; null: train one on the training split into "
            "OUTPUT_DIR/reward_model (when the reward names sasrec)."
        },
    )
    reward_model_minutes: float = field(
        default=3.0, metadata={"help": "Time budget of that SASRec training."}
    )
    miss_penalty: float = field(
        default=0.0, metadata={"help": "rank_shaped: penalty scale of a non-target beam."}
    )
    beams: int = field(default=10, metadata={"help": "Constrained beams mined per user."})
    mining_users: int | None = field(
        default=None, metadata={"help": "Training users mined per round (seeded); null = all."}
    )
    mining_batch_size: int = field(default=16, metadata={"help": "Prompts per beam search."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Replace an earlier run in OUTPUT_DIR."}
    )
    use_peft: bool = field(
        default=False,
        metadata={
            "help": "Train LoRA adapters (and the SID rows of the embeddings and LM head) "
            "instead of every weight; each round's adapter is merged into its saved model."
        },
    )
    train_top_layers: int | None = field(
        default=None,
        metadata={
            "help": "Train only the top N decoder layers, the final norm and the SID rows "
            "(backward stops at the lowest trained layer), as the SFT recipe's "
            "train_top_layers; null = every weight (or LoRA with use_peft)."
        },
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input."})
    lora_target_modules: list[str] | None = field(
        default=None, metadata={"help": "Modules that get adapters; null: all linear layers."}
    )
    mining_engine: str = field(
        default="hf",
        metadata={
            "help": "Decoder of mining and rollouts: hf (recllm's SID beam search on the "
            "training model) or vllm (a vLLM engine kept in sync with it; chat models, "
            "one training process)."
        },
    )
    mining_vllm_memory: float = field(
        default=0.3,
        metadata={
            "help": "vllm: the share of GPU memory (on a CPU: of RAM) the engine reserves; the "
            "trainer needs the rest."
        },
    )

    def __post_init__(self) -> None:
        from recllm.align.vllm_policy import ENGINES

        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")
        if self.beams < 2:
            raise ValueError(f"beams must be >= 2, got {self.beams}")
        from recllm.train.rows import check_top_layers_flag

        check_top_layers_flag(self.train_top_layers, self.use_peft)
        if self.mining_engine not in ENGINES:
            raise ValueError(f"mining_engine must be one of {', '.join(ENGINES)}")
        from recllm.align.rewards import parse_reward_spec

        try:  # when parsed, not after the first round was written
            parse_reward_spec(self.reward)
        except ValueError as e:
            raise UserError(
                f"--reward {self.reward}",
                str(e),
                "give name=weight pairs with finite weights, each name once (see --help)",
            ) from None


@dataclass
class PolicyStart:
    """A loaded start: the policy and everything mining and saving need."""

    model: Any
    tokenizer: Any
    sid_map: Any
    spec: Any
    dataset: Any
    split: Any
    record: dict[str, Any]
    reward: Any
    examples: list
    train_args: Any  # the trainer config, bf16 resolved for this CPU
    state: Any  # accelerate.PartialState
    out: Path
    prompt_files: list[Path]
    engine: Any = None  # a recllm.align.vllm_policy.VLLMPolicy (--mining_engine vllm)
    resume: Any = None  # what start_policy's ``plan`` returned: where this run resumes

    def close(self) -> None:
        """Stop the vLLM engine, if one runs."""
        if self.engine is not None:
            self.engine.close()
            self.engine = None


def start_policy(
    args: PolicyArguments,
    train_args: Any,
    section: str,
    plan: Callable[[Path], Any] | None = None,
) -> PolicyStart:
    """Check, load and prepare a post-SFT stage (see the module docstring).

    Everything a user can get wrong (the model directory, a given reward model, lengths, group
    sizes, an output directory of other settings) is checked before the first write.

    Args:
        plan: Called with the output directory after it was checked, before anything is
            written (rank 0 first, then the others): where this run resumes
            (``PolicyStart.resume``).

    Raises:
        UserError: No or a wrong ``model_dir``, a bad reward model, other data than the
            model's, or an earlier run of other settings in the output directory.
    """
    from accelerate import PartialState
    from transformers import set_seed

    from recllm.align.mining import mining_examples
    from recllm.align.rewards import parse_reward_spec, reward_from_spec
    from recllm.data import DataConfig, load_rec_dataset, split_dataset
    from recllm.data.fingerprint import check_data_fingerprint, data_fingerprint
    from recllm.tasks.prompting import PromptSpec
    from recllm.vocab.checkpoint import read_vocab_record

    model_dir = _checked_model_dir(args)
    names = [n for n, _ in parse_reward_spec(args.reward)]  # checked when parsed
    train_args = _bf16_for_this_cpu(train_args)
    _ = train_args.device
    state = PartialState()
    _check_engine(args, state)
    set_seed(train_args.seed)
    out = Path(train_args.output_dir)

    record = read_vocab_record(model_dir).get("recommender") or {}
    spec = PromptSpec.from_model_dir(model_dir)
    if not spec.data:
        raise UserError(
            f"--model_dir {model_dir}",
            "records no training data",
            "pass a model directory written by recipes/plum_sft.py or recipes/seqlm.py",
        )
    data_cfg = DataConfig(**spec.data)
    dataset = load_rec_dataset(config=data_cfg)
    split = split_dataset(dataset, data_cfg)
    fingerprint = data_fingerprint(split, dataset.catalog)
    check_data_fingerprint(
        record.get("data_fingerprint"),
        fingerprint,
        model=str(model_dir),
        data=str(data_cfg.data_path),
    )
    model, tok, sid_map = _load_start_model(model_dir)
    sasrec = None
    if "sasrec" in names and args.reward_model:
        sasrec = _given_reward_model(Path(args.reward_model), fingerprint)
    examples = mining_examples(split, spec.max_history)
    if args.mining_users and len(examples) > args.mining_users:
        rng = random.Random(train_args.seed)
        keep = sorted(rng.sample(range(len(examples)), args.mining_users))
        examples = [examples[i] for i in keep]
    _check_sizes(train_args, tok, sid_map, spec, examples, dataset.catalog)

    resume = _record_run(args, train_args, section, state, out, plan)
    if "sasrec" in names and sasrec is None:
        sasrec = _trained_reward_model(args, train_args, split, dataset.catalog, out, state)
    reward = reward_from_spec(args.reward, sasrec=sasrec, miss_penalty=args.miss_penalty)
    prompt_files = [p for p in [model_dir / "prompts" / "rec.jinja"] if p.is_file()]
    engine = None
    if args.mining_engine == "vllm":
        engine = _start_engine(args, train_args, model_dir, model, tok, sid_map, spec)
    return PolicyStart(
        model,
        tok,
        sid_map,
        spec,
        dataset,
        split,
        record,
        reward,
        examples,
        train_args,
        state,
        out,
        prompt_files,
        engine,
        resume,
    )


def _record_run(
    args: PolicyArguments,
    train_args: Any,
    section: str,
    state: Any,
    out: Path,
    plan: Callable[[Path], Any] | None,
) -> Any:
    """Check the output directory against this run's settings, plan the resume, then write
    ``resolved_config.json`` (the first write of the run); returns what ``plan`` returned."""
    from recllm.io import write_json_atomic
    from recllm.provenance import library_versions
    from recllm.train.rundir import check_output_dir

    resolved = {
        "policy": asdict(args),
        section: {k: v for k, v in train_args.to_dict().items() if not k.startswith("_")},
        "versions": library_versions(),
    }
    resume = None
    if state.is_main_process:
        check_output_dir(out, resolved, overwrite=args.overwrite_output_dir)
        resume = plan(out) if plan is not None else None
        write_json_atomic(out / "resolved_config.json", resolved)
    state.wait_for_everyone()
    if not state.is_main_process and plan is not None:
        resume = plan(out)  # rank 0 has tidied the directory: the same answer, read-only
    return resume


def _start_engine(
    args: PolicyArguments, train_args: Any, model_dir: Path, model: Any, tok: Any, sid_map, spec
) -> Any:
    """The constrained vLLM engine of ``--mining_engine vllm``, loaded with the start model."""
    from recllm.align.vllm_policy import VLLMPolicy

    return VLLMPolicy(
        model_dir,
        tok,
        sid_map,
        spec,
        max_beams=max(args.beams, getattr(train_args, "num_generations", None) or 0),
        gpu_memory_utilization=args.mining_vllm_memory,
        dtype=str(model.dtype).removeprefix("torch."),  # the trained model's precision
        seed=train_args.seed,
    )


def _checked_model_dir(args: PolicyArguments) -> Path:
    if not args.model_dir:
        raise UserError("--model_dir", "is required", "pass the SFT model directory to start from")
    model_dir = Path(args.model_dir)
    if not (model_dir / "recllm_vocab.json").is_file():
        raise UserError(
            f"--model_dir {model_dir}",
            "is not a recllm model directory (no recllm_vocab.json)",
            "pass OUTPUT_DIR/model of a plum_sft or seqlm run",
        )
    return model_dir


def _bf16_for_this_cpu(train_args: Any) -> Any:
    if train_args.use_cpu and train_args.bf16:
        from recllm.train.sft import bf16_fast

        if not bf16_fast():
            logger.warning("bf16: no native bf16 on this CPU: training in float32")
            return with_changes(train_args, bf16=False)
    return train_args


def _check_engine(args: PolicyArguments, state: Any) -> None:
    if args.mining_engine != "vllm":
        return
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise UserError(
            "--mining_engine vllm",
            "vLLM is not installed",
            'install the extra: pip install -e ".[vllm]" (or use --mining_engine hf)',
        )
    if state.num_processes > 1:
        raise UserError(
            "--mining_engine vllm",
            f"runs one engine in one training process; this run has {state.num_processes}",
            "launch one process (--num_processes 1), or mine with --mining_engine hf",
        )


def _load_start_model(model_dir: Path) -> tuple[Any, Any, Any]:
    """The start model, tokenizer and SID map; an unreadable directory is the user's error."""
    from recllm.vocab import load_model_with_sids

    try:
        return load_model_with_sids(model_dir)
    except UserError:
        raise
    except Exception as e:  # truncated weights, a missing tokenizer file, a bad config
        first = " ".join(str(e).split())[:300]
        raise UserError(
            f"--model_dir {model_dir}",
            f"cannot be loaded ({type(e).__name__}: {first})",
            "pass OUTPUT_DIR/model of a finished plum_sft or seqlm run (rerun that run if its "
            "files are damaged)",
        ) from None


def _given_reward_model(rm_dir: Path, fingerprint: Any) -> Any:
    """Load ``--reward_model`` and check it was trained on this model's split."""
    from recllm.baselines.sasrec import load_split_sasrec

    fix = "pass a SASRec artifact trained on this split, or leave --reward_model out"
    return load_split_sasrec(rm_dir, fingerprint, "--reward_model", fix)


def _trained_reward_model(
    args: PolicyArguments, train_args: Any, split: Any, catalog: Any, out: Path, state: Any
) -> Any:
    """The SASRec reward model of OUTPUT_DIR/reward_model, trained on the training split by
    rank 0 when it is not there yet."""
    from recllm.baselines.sasrec import SASRecConfig, split_sasrec

    cfg = SASRecConfig(time_budget_minutes=args.reward_model_minutes, seed=train_args.seed)
    with state.main_process_first():
        return split_sasrec(out / "reward_model", split, catalog, cfg, "--reward_model")


def _check_sizes(train_args: Any, tok: Any, sid_map: Any, spec: Any, examples: list, catalog: Any):
    """Lengths and group sizes that would fail only after the first round was written."""
    from recllm.align.mining import _completion_ids
    from recllm.decode import encode_prompts
    from recllm.tasks.prompting import build_prompts
    from recllm.vocab import SID_FORMAT

    generations = getattr(train_args, "num_generations", None)
    items = len(sid_map)
    if generations is not None and generations > items:
        raise UserError(
            f"--num_generations {generations}",
            f"more than the {items} catalog items: each group of constrained rollouts holds "
            "distinct items, so the group would repeat some and skew its advantages",
            f"pass --num_generations {items} or fewer (with a per_device_train_batch_size that "
            "is a multiple of it)",
        )
    max_length = getattr(train_args, "max_length", None)
    if max_length is None or not examples:
        return
    prompts = encode_prompts(tok, build_prompts(spec, examples, sid_map, catalog))
    token_ids = SID_FORMAT.token_ids(tok, sid_map.codebook_sizes)
    answer = len(_completion_ids(token_ids, sid_map, examples[0].target, spec, tok.eos_token_id))
    shortest = min(len(p) for p in prompts) + answer
    if max_length < shortest:
        raise UserError(
            f"--max_length {max_length}",
            f"shorter than every training row (the shortest prompt + answer is {shortest} "
            "tokens): every row would be cut before its answer",
            f"pass --max_length {max(len(p) for p in prompts) + answer} (the longest row) or more",
        )


def resumed_policy(start: PolicyStart, plan: Any, model_dir: Path) -> tuple[Any, Path]:
    """The policy the first round to run starts from: the start model, or the last finished
    round's model (read back from its directory) when resuming."""
    last = plan.last_model(start.out)
    if last is None:
        return start.model, model_dir
    from recllm.vocab import load_model_with_sids

    policy, _, _ = load_model_with_sids(last)
    if start.engine is not None:
        start.engine.sync(policy)
    logger.info("rounds 1..%d finished in an earlier run: continuing from %s", plan.first - 1, last)
    return policy, last


def round_peft_config(start: PolicyStart, args: PolicyArguments, model: Any) -> Any:
    """The LoRA config of one round (``--use_peft``; None: full fine-tuning): adapters on
    ``lora_target_modules`` and trainable SID rows (:func:`recllm.train.lora.sid_lora_config`),
    as in the SFT recipe."""
    if not args.use_peft:
        return None
    from recllm.train.lora import sid_lora_config
    from recllm.vocab import SID_FORMAT

    ids = SID_FORMAT.token_ids(start.tokenizer, start.sid_map.codebook_sizes).all_ids()
    return sid_lora_config(model, list(ids), args)


@contextlib.contextmanager
def round_top_layers(
    start: PolicyStart, args: PolicyArguments, model: Any, train_args: Any
) -> Iterator[Any]:
    """``--train_top_layers N``: within the block only the top N decoder layers, the final
    norm and the SID rows of ``model`` train (:func:`recllm.train.rows.train_top_layers`), with
    weight decay 0 so that the frozen embedding rows stay bit-identical. Yields the trainer
    config to use; on exit the hooks are lifted and every weight is trainable again.
    Without the flag it yields ``train_args`` unchanged."""
    if args.train_top_layers is None:
        yield train_args
        return
    from recllm.train.rows import train_top_layers
    from recllm.vocab import SID_FORMAT

    ids = SID_FORMAT.token_ids(start.tokenizer, start.sid_map.codebook_sizes).all_ids()
    handles = train_top_layers(model, args.train_top_layers, list(ids))
    try:
        yield with_changes(train_args, weight_decay=0.0) if train_args.weight_decay else train_args
    finally:
        handles.remove()
        model.requires_grad_(True)


def merged(model: Any) -> Any:
    """A round's trained policy as a plain model: a PEFT model's adapter merged in."""
    from peft import PeftModel

    return model.merge_and_unload() if isinstance(model, PeftModel) else model


def with_changes(cfg: Any, **changes: Any) -> Any:
    """A copy of a trainer config with ``changes``, without running its ``__post_init__``
    again (``dataclasses.replace`` would: GRPOConfig then refuses the batch sizes it derived
    itself)."""
    import copy

    new = copy.copy(cfg)
    for key, value in changes.items():
        setattr(new, key, value)
    return new


def save_round_model(start: PolicyStart, model: Any, directory: Path) -> None:
    """Rank 0 saves ``model`` as a recllm model directory with the start's SID map and record."""
    from recllm.vocab import save_model_with_sids

    if start.state.is_main_process:
        save_model_with_sids(
            model,
            start.tokenizer,
            start.sid_map,
            directory,
            overwrite=True,
            recommender=start.record,
            prompt_files=start.prompt_files,
        )
    start.state.wait_for_everyone()


def publish_final(start: PolicyStart, last: Path, log: dict[str, Any], log_name: str) -> Path:
    """Copy the last round's model to OUTPUT_DIR/model (atomically) and write the log."""
    import shutil

    from recllm.io import write_json_atomic

    final = start.out / "model"
    if start.state.is_main_process:
        tmp = start.out / ".model.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        shutil.copytree(last, tmp)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        write_json_atomic(start.out / log_name, log)
    start.state.wait_for_everyone()
    return final
