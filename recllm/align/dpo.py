"""Reward-ranked, iterated DPO (OneRec's preference stage) as a function.

``recipes/dpo.py`` parses its YAML and command line into :class:`PreferenceArguments` and TRL's
``DPOConfig`` and calls :func:`run_dpo`:

1. the start (:func:`recllm.align.policy.start_policy`): the SFT model directory (a PLUM chat
   model or a SID-sequence decoder) with its data, the reward (rule rewards and/or the SASRec
   reward model, trained on the TRAINING split when not given) and the mining users;
2. ``--rounds`` rounds of: mine constrained beams from the current policy
   (:mod:`recllm.align.mining`) -> pairs -> TRL ``DPOTrainer`` (``loss_type: [sigmoid, sft]``
   with ``loss_weights`` gives OneRec's DPO + next-token objective) against the reference (the
   SFT model, or the previous round's with ``--reference previous``) ->
   ``OUTPUT_DIR/round<N>/model`` (a model directory with its SID map) and
   ``OUTPUT_DIR/round<N>/preferences`` (the mined pairs, with provenance);
3. ``OUTPUT_DIR/model``: the last round's model; ``OUTPUT_DIR/dpo_log.json``: every round's
   mining figures and losses.

A round is finished once ``round<N>/recllm_round_complete.json`` (its log) is written, after its
model; ``--resume_from_checkpoint true`` keeps finished rounds and continues the first unfinished
one from its latest complete checkpoint (``round<N>/trainer/checkpoint-K``), or restarts it
(:mod:`recllm.align.rounds`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trl import DPOTrainer

from recllm.align.policy import (
    PolicyArguments,
    merged,
    publish_final,
    resumed_policy,
    round_peft_config,
    round_top_layers,
    save_round_model,
    start_policy,
    with_changes,
)
from recllm.errors import UserError

logger = logging.getLogger(__name__)


@dataclass
class PreferenceArguments(PolicyArguments):
    """The shared start/reward/mining options, and how DPO pairs and references are chosen."""

    pair_policy: str = field(
        default="best_vs_worst",
        metadata={"help": "best_vs_worst | best_vs_random | target_vs_best."},
    )
    min_margin: float = field(
        default=0.0, metadata={"help": "A pair needs a reward gap above this."}
    )
    reference: str = field(
        default="sft",
        metadata={"help": "sft: the SFT model every round; previous: the previous round's."},
    )

    def __post_init__(self) -> None:
        from recllm.align.mining import PAIR_POLICIES

        super().__post_init__()
        if self.reference not in ("sft", "previous"):
            raise ValueError(f"reference must be sft or previous, got {self.reference!r}")
        if self.pair_policy not in PAIR_POLICIES:
            raise ValueError(f"pair_policy must be one of {', '.join(PAIR_POLICIES)}")


TOKEN_COLUMNS = ["prompt_ids", "chosen_ids", "rejected_ids"]


class TokenizedDPOTrainer(DPOTrainer):
    """TRL's ``DPOTrainer`` on pairs given as token ids (``prompt_ids``, ``chosen_ids``,
    ``rejected_ids``), trained as they are: TRL's own preparation would re-tokenize text and
    append the end-of-sequence token, which a SID-sequence decoder never emits (see
    :func:`recllm.align.mining.sequence_token_columns`). Prompts that fill ``max_length`` are
    dropped, as TRL does; datasets without these columns are prepared by TRL."""

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        if not set(TOKEN_COLUMNS) <= set(dataset.column_names):
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        if args.max_length is not None and args.truncation_mode == "keep_start":
            dataset = dataset.filter(lambda ex: len(ex["prompt_ids"]) < args.max_length)
        return dataset


def run_dpo(args: PreferenceArguments, dpo_cfg: Any) -> Path:
    """Run the preference stage; return the final model directory (OUTPUT_DIR/model).

    With ``--resume_from_checkpoint`` (true, or a ``round<N>/trainer/checkpoint-K``) the
    finished rounds are kept and the first unfinished one continues from its checkpoint or
    restarts (:mod:`recllm.align.rounds`).
    """
    from recllm.align.mining import MiningConfig
    from recllm.align.rounds import mark_round_done, plan_rounds
    from recllm.train.checkpoints import train_from

    resume = dpo_cfg.resume_from_checkpoint
    start = start_policy(
        args, dpo_cfg, "dpo", plan=lambda out: plan_rounds(resume, out, args.rounds)
    )
    dpo_cfg, state, out, plan = start.train_args, start.state, start.out, start.resume
    mining = MiningConfig(
        beams=args.beams,
        pair_policy=args.pair_policy,
        min_margin=args.min_margin,
        seed=dpo_cfg.seed,
        batch_size=args.mining_batch_size,
    )
    policy, last = resumed_policy(start, plan, Path(args.model_dir))
    log: dict[str, Any] = {"rounds": list(plan.done)}
    for r in range(plan.first, args.rounds + 1):
        t0 = time.monotonic()
        round_dir = out / f"round{r}"
        checkpoint = plan.checkpoint if r == plan.first else None
        prefs, meta = _round_preferences(start, mining, policy, last, r, reuse=checkpoint)
        with round_top_layers(start, args, policy, dpo_cfg) as round_cfg:
            trainer = _round_trainer(start, args, round_cfg, policy, last, prefs, round_dir)
            train_from(trainer, checkpoint)
        policy = merged(trainer.model)
        save_round_model(start, policy, round_dir / "model")
        last = round_dir / "model"
        if start.engine is not None and r < args.rounds:
            start.engine.sync(policy)  # the next round mines with this round's policy
        entry = {
            "round": r,
            "mining": meta,
            "dpo": trainer.state.log_history,
            "seconds": round(time.monotonic() - t0, 1),
        }
        if state.is_main_process:
            mark_round_done(round_dir, entry)  # after its model: the round is finished
        log["rounds"].append(entry)
        logger.info("round %d: %d pairs, model in %s", r, len(prefs), last)
    start.close()
    final = publish_final(start, last, log, "dpo_log.json")
    if state.is_main_process:
        print(f"DPO: {args.rounds} round(s); the final model is {final}")
    return final


def _round_preferences(
    start: Any, mining: Any, policy: Any, last: Path, r: int, *, reuse: Path | None
) -> tuple[Any, dict]:
    """Round ``r``'s pairs: mined by rank 0 with ``policy`` and saved atomically, or, when the
    round continues from a checkpoint (``reuse``), the pairs it was training on."""
    from recllm.align.mining import load_preferences, mine_preferences, save_preferences

    prefs_dir = start.out / f"round{r}" / "preferences"
    with start.state.main_process_first():
        if start.state.is_main_process and reuse is None:
            mined = mine_preferences(
                policy,
                start.tokenizer,
                start.sid_map,
                start.examples,
                start.spec,
                start.dataset.catalog,
                start.reward,
                mining,
                provenance={"round": r, "policy": str(last)},
                engine=start.engine,
            )
            save_preferences(mined, prefs_dir)
        prefs, meta = load_preferences(prefs_dir)
    if len(prefs) == 0:
        raise UserError(
            f"round {r}",
            "mining gave no pair (every user's beams scored alike)",
            "use a reward that tells items apart (e.g. sasrec), or more --beams",
        )
    return prefs, meta


def _round_trainer(
    start: Any,
    args: PreferenceArguments,
    dpo_cfg: Any,
    policy: Any,
    last: Path,
    prefs: Any,
    round_dir: Path,
) -> TokenizedDPOTrainer:
    """The DPO trainer of one round, against the SFT model or the previous round's."""
    from recllm.train.checkpoints import MarkCompleteCheckpoints
    from recllm.vocab import load_model_with_sids

    peft_config = round_peft_config(start, args, policy)
    ref_dir = last if args.reference == "previous" else Path(args.model_dir)
    ref = None  # under LoRA the round's start (the adapter disabled) is the reference
    if peft_config is None or ref_dir != last:
        ref, _, _ = load_model_with_sids(ref_dir)
    tokenized = "prompt_ids" in prefs.column_names  # SID-sequence decoders
    columns = TOKEN_COLUMNS if tokenized else ["prompt", "chosen", "rejected"]
    return TokenizedDPOTrainer(
        model=policy,
        ref_model=ref,
        args=with_changes(dpo_cfg, output_dir=str(round_dir / "trainer")),
        train_dataset=prefs.select_columns(columns),
        processing_class=start.tokenizer,
        peft_config=peft_config,
        callbacks=[MarkCompleteCheckpoints()],
    )
