"""Reward-ranked, iterated DPO (OneRec's preference stage) as a function.

``recipes/dpo.py`` parses its YAML and command line into :class:`PreferenceArguments` and TRL's
``DPOConfig`` and calls :func:`run_dpo`:

1. the SFT model directory (``--model_dir``: a PLUM chat model or a SID-sequence decoder) with
   its tokenizer, SID map and the data it records (checked against its fingerprint);
2. the reward: rule rewards and/or a reward model (``--reward "sasrec=1,prefix_credit=0.5"``);
   the SASRec reward model is loaded from ``--reward_model`` or trained on the TRAINING part of
   the split only and saved into ``OUTPUT_DIR/reward_model``;
3. ``--rounds`` rounds of: mine constrained beams from the current policy
   (:mod:`recllm.train.mining`, one example per training user) -> pairs ->
   TRL ``DPOTrainer`` (``loss_type: [sigmoid, sft]`` with ``loss_weights`` gives OneRec's DPO +
   next-token objective) against the reference (the SFT model, or the previous round's with
   ``--reference previous``) -> ``OUTPUT_DIR/round<N>/model``, a model directory with its SID
   map, and ``OUTPUT_DIR/round<N>/preferences`` (the mined pairs, with provenance);
4. ``OUTPUT_DIR/model``: the last round's model; ``OUTPUT_DIR/dpo_log.json``: every round's
   mining figures and losses.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from recllm.errors import UserError

logger = logging.getLogger(__name__)


@dataclass
class PreferenceArguments:
    """What the preference stage starts from, how it mines and what it rewards."""

    model_dir: str | None = field(
        default=None,
        metadata={"help": "The SFT model directory (written by plum_sft or seqlm)."},
    )
    rounds: int = field(default=1, metadata={"help": "Mine -> DPO rounds."})
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
    pair_policy: str = field(
        default="best_vs_worst",
        metadata={"help": "best_vs_worst | best_vs_random | target_vs_best."},
    )
    min_margin: float = field(
        default=0.0, metadata={"help": "A pair needs a reward gap above this."}
    )
    mining_users: int | None = field(
        default=None, metadata={"help": "Training users mined per round (seeded); null = all."}
    )
    mining_batch_size: int = field(default=16, metadata={"help": "Prompts per beam search."})
    reference: str = field(
        default="sft",
        metadata={"help": "sft: the SFT model every round; previous: the previous round's."},
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Replace an earlier run in OUTPUT_DIR."}
    )

    def __post_init__(self) -> None:
        from recllm.train.mining import PAIR_POLICIES

        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")
        if self.reference not in ("sft", "previous"):
            raise ValueError(f"reference must be sft or previous, got {self.reference!r}")
        if self.pair_policy not in PAIR_POLICIES:
            raise ValueError(f"pair_policy must be one of {', '.join(PAIR_POLICIES)}")


def _load_policy(model_dir: Path):
    from recllm.data import DataConfig, load_rec_dataset, split_dataset
    from recllm.data.fingerprint import check_data_fingerprint, data_fingerprint
    from recllm.tasks.prompting import PromptSpec
    from recllm.vocab import load_model_with_sids
    from recllm.vocab.checkpoint import read_vocab_record

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
    model, tok, sid_map = load_model_with_sids(model_dir)
    return model, tok, sid_map, spec, dataset, split, record


def run_dpo(args: PreferenceArguments, dpo_cfg: Any) -> Path:
    """Run the preference stage; return the final model directory (OUTPUT_DIR/model)."""
    from accelerate import PartialState
    from transformers import set_seed
    from trl import DPOTrainer

    from recllm.baselines.sasrec import SASRecConfig, load_sasrec, save_sasrec, train_sasrec
    from recllm.data.fingerprint import data_fingerprint
    from recllm.io import write_json_atomic
    from recllm.provenance import library_versions
    from recllm.train.mining import (
        MiningConfig,
        load_preferences,
        mine_preferences,
        mining_examples,
        save_preferences,
    )
    from recllm.train.rewards import parse_reward_spec, reward_from_spec
    from recllm.train.rundir import check_output_dir
    from recllm.vocab import load_model_with_sids, save_model_with_sids

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
    if dpo_cfg.use_cpu and dpo_cfg.bf16:
        from recllm.train.sft import bf16_fast

        if not bf16_fast():
            logger.warning("bf16: no native bf16 on this CPU: training in float32")
            dpo_cfg = replace(dpo_cfg, bf16=False)
    _ = dpo_cfg.device
    state = PartialState()
    set_seed(dpo_cfg.seed)
    out = Path(dpo_cfg.output_dir)
    policy, tok, sid_map, spec, dataset, split, record = _load_policy(model_dir)
    resolved = {
        "preference": asdict(args),
        "dpo": {k: v for k, v in dpo_cfg.to_dict().items() if not k.startswith("_")},
        "versions": library_versions(),
    }
    if state.is_main_process:
        check_output_dir(out, resolved, overwrite=args.overwrite_output_dir)
        write_json_atomic(out / "resolved_config.json", resolved)
    state.wait_for_everyone()

    sasrec = None
    if "sasrec" in names:
        rm_dir = Path(args.reward_model) if args.reward_model else out / "reward_model"
        with state.main_process_first():
            if args.reward_model is None and not (rm_dir / "sasrec.json").is_file():
                logger.info("training the SASRec reward model on the training split")
                cfg = SASRecConfig(time_budget_minutes=args.reward_model_minutes, seed=dpo_cfg.seed)
                rm, _ = train_sasrec(split, dataset.catalog, cfg, progress=False)
                save_sasrec(
                    rm, rm_dir, meta={"data_fingerprint": data_fingerprint(split, dataset.catalog)}
                )
            sasrec, _ = load_sasrec(rm_dir)
    reward = reward_from_spec(args.reward, sasrec=sasrec, miss_penalty=args.miss_penalty)

    examples = mining_examples(split, spec.max_history)
    if args.mining_users and len(examples) > args.mining_users:
        import random

        keep = sorted(random.Random(dpo_cfg.seed).sample(range(len(examples)), args.mining_users))
        examples = [examples[i] for i in keep]
    mining = MiningConfig(
        beams=args.beams,
        pair_policy=args.pair_policy,
        min_margin=args.min_margin,
        seed=dpo_cfg.seed,
        batch_size=args.mining_batch_size,
    )
    prompt_files = [p for p in [model_dir / "prompts" / "rec.jinja"] if p.is_file()]
    log: dict[str, Any] = {"rounds": []}
    ref_dir = model_dir
    for r in range(1, args.rounds + 1):
        round_dir = out / f"round{r}"
        prefs_dir = round_dir / "preferences"
        with state.main_process_first():
            if state.is_main_process:
                mined = mine_preferences(
                    policy,
                    tok,
                    sid_map,
                    examples,
                    spec,
                    dataset.catalog,
                    reward,
                    mining,
                    provenance={"round": r, "policy": str(ref_dir if r > 1 else model_dir)},
                )
                save_preferences(mined, prefs_dir)
            prefs, meta = load_preferences(prefs_dir)
        if len(prefs) == 0:
            raise UserError(
                f"round {r}",
                "mining gave no pair (every user's beams scored alike)",
                "use a reward that tells items apart (e.g. sasrec), or more --beams",
            )
        ref, _, _ = load_model_with_sids(ref_dir if args.reference == "previous" else model_dir)
        train = prefs.select_columns(["prompt", "chosen", "rejected"])
        trainer = DPOTrainer(
            model=policy,
            ref_model=ref,
            args=replace(dpo_cfg, output_dir=str(round_dir / "trainer")),
            train_dataset=train,
            processing_class=tok,
        )
        trainer.train()
        policy = trainer.model
        model_out = round_dir / "model"
        if state.is_main_process:
            save_model_with_sids(
                policy,
                tok,
                sid_map,
                model_out,
                overwrite=True,
                recommender=record,
                prompt_files=prompt_files,
            )
        state.wait_for_everyone()
        ref_dir = model_out
        log["rounds"].append({"round": r, "mining": meta, "dpo": trainer.state.log_history})
        logger.info("round %d: %d pairs, model in %s", r, len(prefs), model_out)
        del ref
    final = out / "model"
    if state.is_main_process:
        tmp = out / ".model.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        shutil.copytree(ref_dir, tmp)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        write_json_atomic(out / "dpo_log.json", log)
        print(f"DPO: {args.rounds} round(s); the final model is {final}")
    state.wait_for_everyone()
    return final
