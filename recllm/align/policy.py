"""What every post-SFT stage (DPO, advantage-weighted SFT, GRPO) starts from: the SFT model
directory and its data, a reward, and the training users to mine.

:class:`PolicyArguments` holds the options these recipes share; :func:`start_policy` checks
them before any work, loads the model directory with its tokenizer, SID map and the data it
records (checked against its fingerprint), writes ``OUTPUT_DIR/resolved_config.json``, builds
the reward (training the SASRec reward model on the TRAINING split when the reward names
``sasrec`` and none is given) and picks the mining users.
"""

from __future__ import annotations

import json
import logging
import random
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
        if self.mining_engine not in ENGINES:
            raise ValueError(f"mining_engine must be one of {', '.join(ENGINES)}")


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

    def close(self) -> None:
        """Stop the vLLM engine, if one runs."""
        if self.engine is not None:
            self.engine.close()
            self.engine = None


def start_policy(args: PolicyArguments, train_args: Any, section: str) -> PolicyStart:
    """Check, load and prepare a post-SFT stage (see the module docstring).

    Raises:
        UserError: No or a wrong ``model_dir``, a bad reward spec, other data than the model's,
            or an earlier run of other settings in the output directory.
    """
    from accelerate import PartialState
    from transformers import set_seed

    from recllm.align.mining import mining_examples
    from recllm.align.rewards import parse_reward_spec, reward_from_spec
    from recllm.baselines.sasrec import SASRecConfig, load_sasrec, save_sasrec, train_sasrec
    from recllm.data import DataConfig, load_rec_dataset, split_dataset
    from recllm.data.fingerprint import check_data_fingerprint, data_fingerprint
    from recllm.io import write_json_atomic
    from recllm.provenance import library_versions
    from recllm.tasks.prompting import PromptSpec
    from recllm.train.rundir import check_output_dir
    from recllm.vocab import load_model_with_sids
    from recllm.vocab.checkpoint import read_vocab_record

    if not args.model_dir:
        raise UserError("--model_dir", "is required", "pass the SFT model directory to start from")
    model_dir = Path(args.model_dir)
    if not (model_dir / "recllm_vocab.json").is_file():
        raise UserError(
            f"--model_dir {model_dir}",
            "is not a recllm model directory (no recllm_vocab.json)",
            "pass OUTPUT_DIR/model of a plum_sft or seqlm run",
        )
    try:
        names = [n for n, _ in parse_reward_spec(args.reward)]  # before any work
    except ValueError as e:
        raise UserError(f"--reward {args.reward}", str(e), "see --help for the names") from None
    if train_args.use_cpu and train_args.bf16:
        from recllm.train.sft import bf16_fast

        if not bf16_fast():
            logger.warning("bf16: no native bf16 on this CPU: training in float32")
            train_args = with_changes(train_args, bf16=False)
    _ = train_args.device
    state = PartialState()
    if args.mining_engine == "vllm":
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
    check_data_fingerprint(
        record.get("data_fingerprint"),
        data_fingerprint(split, dataset.catalog),
        model=str(model_dir),
        data=str(data_cfg.data_path),
    )
    resolved = {
        "policy": asdict(args),
        section: {k: v for k, v in train_args.to_dict().items() if not k.startswith("_")},
        "versions": library_versions(),
    }
    if state.is_main_process:
        check_output_dir(out, resolved, overwrite=args.overwrite_output_dir)
        write_json_atomic(out / "resolved_config.json", resolved)
    state.wait_for_everyone()
    model, tok, sid_map = load_model_with_sids(model_dir)

    sasrec = None
    if "sasrec" in names:
        rm_dir = Path(args.reward_model) if args.reward_model else out / "reward_model"
        with state.main_process_first():
            if args.reward_model is None and not (rm_dir / "sasrec.json").is_file():
                logger.info("training the SASRec reward model on the training split")
                cfg = SASRecConfig(
                    time_budget_minutes=args.reward_model_minutes, seed=train_args.seed
                )
                rm, _ = train_sasrec(split, dataset.catalog, cfg, progress=False)
                meta = {"data_fingerprint": data_fingerprint(split, dataset.catalog)}
                save_sasrec(rm, rm_dir, meta=meta)
            sasrec, rm_record = load_sasrec(rm_dir)
        trained_on = (rm_record.get("meta") or {}).get("data_fingerprint")
        if trained_on != json.loads(json.dumps(data_fingerprint(split, dataset.catalog))):
            raise UserError(
                f"--reward_model {rm_dir}",
                "was not trained on this model's data (its data fingerprint differs or is absent)"
                if trained_on is not None
                else "records no data fingerprint",
                "train the reward model on the same split, or leave --reward_model out",
            )
    reward = reward_from_spec(args.reward, sasrec=sasrec, miss_penalty=args.miss_penalty)

    examples = mining_examples(split, spec.max_history)
    if args.mining_users and len(examples) > args.mining_users:
        rng = random.Random(train_args.seed)
        keep = sorted(rng.sample(range(len(examples)), args.mining_users))
        examples = [examples[i] for i in keep]
    prompt_files = [p for p in [model_dir / "prompts" / "rec.jinja"] if p.is_file()]
    engine = None
    if args.mining_engine == "vllm":
        from recllm.align.vllm_policy import VLLMPolicy

        engine = VLLMPolicy(
            model_dir,
            tok,
            sid_map,
            spec,
            max_beams=max(args.beams, getattr(train_args, "num_generations", None) or 0),
            gpu_memory_utilization=args.mining_vllm_memory,
            dtype=str(model.dtype).removeprefix("torch."),  # the trained model's precision
            seed=train_args.seed,
        )
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
    )


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
