"""Advantage-weighted SFT (OneRec-V2, PLUM): SFT on the policy's own constrained beams, each
weighted by its advantage.

``recipes/awsft.py`` parses its YAML and command line into :class:`AWSFTArguments` and TRL's
``SFTConfig`` and calls :func:`run_awsft`. Each round: mine ``beams`` constrained beams per
training user (:func:`recllm.align.mining.mine_beams`), score them with the reward, turn each
user's rewards into advantages (group-normalised: ``A = (r - mean) / std`` over that user's
beams) and weights (``exp``: ``min(exp(A / beta), max_weight)``; ``positive``: ``max(A, 0)``),
add the logged target with ``target_weight`` (0: beams only), and train
:class:`WeightedSFTTrainer` on those prompt/completion rows. TRL has no per-sample weights: the
subclass overrides the loss only, ``sum_i w_i * sum_t nll_it / sum_i n_i`` (TRL's token-mean
with each sample's tokens scaled by its weight; all weights 1 give TRL's loss exactly).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trl import SFTTrainer

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

logger = logging.getLogger(__name__)

WEIGHT_COLUMN = "sample_weight"
WEIGHTINGS = ("exp", "positive")
_BULKY = ("prompt", "input_ids", "completion_mask")  # not repeated in weighted_rows.json


@dataclass
class AWSFTArguments(PolicyArguments):
    """The shared start/reward/mining options, and how rewards become sample weights."""

    weighting: str = field(
        default="exp",
        metadata={"help": "exp: min(exp(A/beta), max_weight); positive: max(A, 0)."},
    )
    beta: float = field(default=1.0, metadata={"help": "Temperature of the exp weighting."})
    max_weight: float = field(default=5.0, metadata={"help": "Clip of the exp weighting."})
    target_weight: float = field(
        default=1.0,
        metadata={"help": "Weight of each user's logged target as an extra row (0: none)."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}")
        if self.beta <= 0 or self.max_weight <= 0 or self.target_weight < 0:
            raise ValueError("beta and max_weight must be > 0, target_weight >= 0")


def advantage_weights(
    rewards: Sequence[float], weighting: str = "exp", beta: float = 1.0, max_weight: float = 5.0
) -> list[float]:
    """Weights of one user's beams from their rewards (see the module docstring). Beams that
    all score alike carry no signal: advantage 0, weight 1 (``exp``) or 0 (``positive``)."""
    n = len(rewards)
    mean = sum(rewards) / n
    std = math.sqrt(sum((r - mean) ** 2 for r in rewards) / n)
    adv = [(r - mean) / std if std > 1e-12 else 0.0 for r in rewards]
    if weighting == "exp":
        return [min(math.exp(a / beta), max_weight) for a in adv]
    if weighting == "positive":
        return [max(a, 0.0) for a in adv]
    raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got {weighting!r}")


class _WeightCollator:
    """Wraps TRL's collator: takes each example's weight out, collates the rest, and adds the
    weights as a ``(batch,)`` float tensor."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        weights = [float(e[WEIGHT_COLUMN]) for e in examples]
        batch = self.inner([{k: v for k, v in e.items() if k != WEIGHT_COLUMN} for e in examples])
        batch[WEIGHT_COLUMN] = torch.tensor(weights, dtype=torch.float32)
        return batch


class WeightedSFTTrainer(SFTTrainer):
    """TRL's ``SFTTrainer`` with a per-sample weight column (``sample_weight``) on the loss.

    Only the loss changes: ``sum_i w_i * sum_t nll_it / N`` with ``N`` TRL's token count (all
    tokens of the batch, or of the accumulation window), computed on TRL's fused LM-head
    outputs like TRL's own loss. A dataset without the column trains with weight 1 everywhere.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.data_collator = _WeightCollator(self.data_collator)

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        if WEIGHT_COLUMN not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, WEIGHT_COLUMN]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        import torch

        weights = inputs.pop(WEIGHT_COLUMN, None)
        mode = "train" if self.model.training else "eval"
        inputs["use_cache"] = False
        outputs = model(**inputs, fused_lm_head=True)
        per_token = -outputs.log_probs  # zero on ignored positions
        if weights is not None:
            w = weights.to(per_token.device, per_token.dtype)
            per_token = per_token * w.view(-1, *([1] * (per_token.dim() - 1)))
        tokens = outputs.label_mask.sum() if num_items_in_batch is None else num_items_in_batch
        loss = per_token.sum() / torch.as_tensor(tokens).clamp(min=1)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes
        if weights is not None:
            self._metrics[mode]["mean_sample_weight"].append(float(weights.mean()))
        return (loss, outputs) if return_outputs else loss


def weighted_rows(
    mined, args: AWSFTArguments, spec, catalog, sid_map, tokenizer=None
) -> dict[str, list]:
    """Prompt/completion rows of every mined beam (and target) with their weights; for a
    SID-sequence decoder (given its ``tokenizer``) also ``input_ids`` and ``completion_mask``,
    which TRL then trains as they are."""
    from recllm.align.mining import _answer, sequence_token_columns

    rows: dict[str, list] = {
        k: [] for k in ("prompt", "completion", WEIGHT_COLUMN, "example_id", "item", "reward")
    }

    def add(ex, prompt, item, weight, reward):
        rows["prompt"].append(prompt)
        rows["completion"].append(_answer(spec, catalog, sid_map, ex, item))
        rows[WEIGHT_COLUMN].append(float(weight))
        rows["example_id"].append(ex.user_id)
        rows["item"].append(item)
        rows["reward"].append(None if reward is None else float(reward))

    for ex, prompt, beams, rewards in zip(
        mined.examples, mined.prompts, mined.beams, mined.rewards, strict=True
    ):
        weights = advantage_weights(rewards, args.weighting, args.beta, args.max_weight)
        for (item, _, _), w, r in zip(beams, weights, rewards, strict=True):
            if w > 0:
                add(ex, prompt, item, w, r)
        if args.target_weight > 0:
            add(ex, prompt, ex.target, args.target_weight, None)
    if spec.style == "sid_sequence" and tokenizer is not None:
        # token ids as the decoder sees them, without the end-of-sequence token TRL would add
        # to plain-text completions (see recllm.align.mining.sequence_token_columns)
        ids = sequence_token_columns(tokenizer, sid_map, rows["prompt"], {"answer": rows["item"]})
        pairs = list(zip(ids["prompt_ids"], ids["answer_ids"], strict=True))
        rows["input_ids"] = [p + c for p, c in pairs]
        rows["completion_mask"] = [[0] * len(p) + [1] * len(c) for p, c in pairs]
    return rows


def run_awsft(args: AWSFTArguments, sft_cfg: Any) -> Path:
    """Run advantage-weighted SFT; return the final model directory (OUTPUT_DIR/model)."""
    import datasets

    from recllm.align.mining import MiningConfig, mine_beams
    from recllm.align.rounds import mark_round_done, plan_rounds
    from recllm.io import write_json_atomic
    from recllm.train.checkpoints import MarkCompleteCheckpoints, train_from
    from recllm.train.fast_head import compact_lm_head

    resume = sft_cfg.resume_from_checkpoint
    start = start_policy(
        args, sft_cfg, "sft", plan=lambda out: plan_rounds(resume, out, args.rounds)
    )
    sft_cfg, state, out, plan = start.train_args, start.state, start.out, start.resume
    sft_cfg = with_changes(sft_cfg, remove_unused_columns=False)
    if start.spec.style == "sid_sequence":  # rows come as token ids with a completion mask
        sft_cfg = with_changes(sft_cfg, completion_only_loss=True)
    mining = MiningConfig(beams=args.beams, seed=sft_cfg.seed, batch_size=args.mining_batch_size)
    policy, last = resumed_policy(start, plan, Path(args.model_dir))
    log: dict[str, Any] = {"rounds": list(plan.done)}
    for r in range(plan.first, args.rounds + 1):
        t0 = time.monotonic()
        round_dir = out / f"round{r}"
        # a round continued from its checkpoint mines again: the same policy and seed give the
        # same rows the killed run was training on
        checkpoint = plan.checkpoint if r == plan.first else None
        mined = mine_beams(
            policy,
            start.tokenizer,
            start.sid_map,
            start.examples,
            start.spec,
            start.dataset.catalog,
            start.reward,
            mining,
            engine=start.engine,
        )
        rows = weighted_rows(
            mined, args, start.spec, start.dataset.catalog, start.sid_map, start.tokenizer
        )
        train = datasets.Dataset.from_dict(rows)
        if "input_ids" in rows:  # pre-tokenized: TRL keeps the ids and masks the prompt
            train = train.select_columns(["input_ids", "completion_mask", WEIGHT_COLUMN])
        if state.is_main_process:
            round_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(
                round_dir / "weighted_rows.json",
                {
                    "policy": str(last),
                    "rows": {k: v for k, v in rows.items() if k not in _BULKY},
                },
            )
        with round_top_layers(start, args, policy, sft_cfg) as round_cfg:
            trainer = WeightedSFTTrainer(
                model=policy,
                args=with_changes(round_cfg, output_dir=str(round_dir / "trainer")),
                train_dataset=train,
                processing_class=start.tokenizer,
                callbacks=[MarkCompleteCheckpoints()],
                peft_config=round_peft_config(start, args, policy),
            )
            with compact_lm_head(True):
                train_from(trainer, checkpoint)
        policy = merged(trainer.model)
        save_round_model(start, policy, round_dir / "model")
        last = round_dir / "model"
        if start.engine is not None and r < args.rounds:
            start.engine.sync(policy)  # the next round mines with this round's policy
        hits = sum(
            1
            for ex, beams in zip(mined.examples, mined.beams, strict=True)
            if ex.target in {b[0] for b in beams}
        )
        entry = {
            "round": r,
            "rows": len(train),
            "users": len(mined.examples),
            "target_in_beams": hits,
            "mean_reward": sum(mined.rewards_flat) / max(1, len(mined.rewards_flat)),
            "sft": trainer.state.log_history,
            "seconds": round(time.monotonic() - t0, 1),
        }
        if state.is_main_process:
            mark_round_done(round_dir, entry)  # after its model: the round is finished
        log["rounds"].append(entry)
        logger.info("round %d: %d weighted rows, model in %s", r, len(train), last)
    start.close()
    final = publish_final(start, last, log, "awsft_log.json")
    if state.is_main_process:
        print(f"AW-SFT: {args.rounds} round(s); the final model is {final}")
    return final
