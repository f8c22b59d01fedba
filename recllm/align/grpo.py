"""GRPO with constrained rollouts (MiniOneRec, OpenOneRec), on TRL's ``GRPOTrainer``.

TRL's own generation paths take no logits processor, so a policy sampled there emits SIDs of no
catalog item (OpenOneRec reports 17-27% illegal beams for OneRec-1.7B). :func:`constrained_rollout`
is a TRL ``rollout_func`` over recllm's constrained decoding: for each group of
``num_generations`` copies of a prompt it returns ``num_generations`` distinct catalog items, by
constrained beam search (``rollout: beam``, each completion's rank forwarded to the rewards as
``rank``) or constrained sampling (``rollout: sample``), as token ids, with the policy's own
per-token log-probs. Rewards (:mod:`recllm.align.rewards`) read the SIDs from those ids and the
user from the dataset's ``example_id`` column; never from decoded text (TRL decodes with
``skip_special_tokens=True``) and never by batch position.

``recipes/grpo.py`` parses :class:`GRPOArguments` and TRL's ``GRPOConfig`` and calls
:func:`run_grpo`: start (:func:`recllm.align.policy.start_policy`), a prompt dataset of the
mining users (``prompt``, ``example_id``), ``GRPOTrainer`` with the rollout, then
``OUTPUT_DIR/model`` and ``OUTPUT_DIR/rollouts.jsonl`` (every rollout: user, items, ranks,
rewards).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recllm.align.policy import (
    PolicyArguments,
    merged,
    publish_final,
    round_peft_config,
    round_top_layers,
    save_round_model,
    start_policy,
    with_changes,
)

logger = logging.getLogger(__name__)

ROLLOUTS = ("beam", "sample")


@dataclass
class GRPOArguments(PolicyArguments):
    """The shared start/reward options, and how rollouts are drawn."""

    rollout: str = field(
        default="beam",
        metadata={"help": "beam: num_generations constrained beams per prompt; sample: samples."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rollout not in ROLLOUTS:
            raise ValueError(f"rollout must be one of {', '.join(ROLLOUTS)}")


def rollout_seed(seed: int, step: int, index: int, *, training: bool = True) -> int:
    """The sampling seed of a rollout call: the ``index``-th call (training and evaluation
    counted apart) made at optimizer step ``step`` of a run seeded ``seed``. It depends on the
    trainer's step, not on how many calls this process made, so a run resumed from a checkpoint
    draws the samples the uninterrupted run drew."""
    return seed + 1_000 * step + 2 * index + (0 if training else 1)


def constrained_rollout(
    sid_map: Any,
    spec: Any,
    *,
    mode: str = "beam",
    batch_size: int = 8,
    log_path: str | Path | None = None,
    seed: int = 0,
    engine: Any = None,
) -> Callable[[list, Any], dict[str, list]]:
    """A TRL ``rollout_func(prompts, trainer)`` over recllm's constrained decoding.

    ``prompts`` holds each prompt ``trainer.num_generations`` times in a row (TRL's repeat
    sampler); each run of copies gets that many distinct catalog items (beam: ranks 1..G; sample:
    seeded constrained samples, rank None, the last repeated when fewer are distinct). Returns ``prompt_ids``,
    ``completion_ids`` (the SID span and the stop token; bare codes for SID-sequence decoders),
    ``logprobs`` (the policy's per-token log-probs of those ids) and ``rank``.

    With ``engine`` (a :class:`recllm.align.vllm_policy.VLLMPolicy`) the beams or samples come
    from vLLM; the trainer's weights are pushed into it whenever the optimizer step has moved
    since the last push, so rollouts are always the current policy's. Log-probs are still the
    training model's own.
    """
    import torch

    from recllm.align.mining import _beams, _completion_ids
    from recllm.decode import DecodeOptions, encode_prompts, generate_sids
    from recllm.vocab import SID_FORMAT

    # the engine starts with the start model's weights; "in_step" counts the calls (training and
    # evaluation apart) made at the current optimizer step, which seeds the samples
    calls = {"n": 0, "synced_step": 0, "step": -1, "in_step": {True: 0, False: 0}}

    def rollout(prompts: list, trainer: Any) -> dict[str, list]:
        group = trainer.num_generations if trainer.model.training else trainer.num_generations_eval
        if len(prompts) % group:
            raise ValueError(f"{len(prompts)} prompts are not groups of {group} copies")
        model = trainer.accelerator.unwrap_model(trainer.model)
        tok = trainer.processing_class
        token_ids = SID_FORMAT.token_ids(tok, sid_map.codebook_sizes)
        unique = prompts[::group]
        for g, first in enumerate(unique):
            if any(p != first for p in prompts[g * group : (g + 1) * group]):
                raise ValueError("rollout: the prompts of a group differ (TRL's sampler changed?)")
        stop = tok.eos_token_id
        if engine is not None and trainer.state.global_step != calls["synced_step"]:
            engine.sync(trainer.model)
            calls["synced_step"] = trainer.state.global_step
        was = model.training
        if trainer.state.global_step != calls["step"]:
            calls["step"], calls["in_step"] = trainer.state.global_step, {True: 0, False: 0}
        call_seed = rollout_seed(seed, calls["step"], calls["in_step"][was], training=was)
        calls["in_step"][was] += 1
        model.eval()
        try:
            with torch.inference_mode():
                if mode == "beam":  # the same constrained beams mining scores
                    rows = _beams(model, tok, unique, sid_map, spec, group, batch_size, engine)
                    items = [[item for item, _, _ in row] for row in rows]
                elif spec.style == "sid_sequence":
                    raise ValueError("SID-sequence decoders roll out by beam search only")
                elif engine is not None:
                    items = engine.sample(unique, group)
                else:
                    recs = generate_sids(
                        model,
                        tok,
                        unique,
                        sid_map,
                        DecodeOptions(
                            k=group,
                            batch_size=batch_size,
                            mode="sample",
                            engine="generate",
                            seed=call_seed,
                        ),
                    )
                    items = [[r.item_id for r in row] for row in recs]
        finally:
            model.train(was)
        calls["n"] += 1
        prompt_ids = encode_prompts(tok, unique)
        out_prompt, out_completion, out_rank, out_items = [], [], [], []
        for p_ids, its in zip(prompt_ids, items, strict=True):
            if not its or any(i is None for i in its):
                raise RuntimeError("rollout: a constrained rollout named no catalog item")
            for j in range(group):  # fewer distinct samples than copies: repeat the last ones
                k = min(j, len(its) - 1)
                out_prompt.append(list(p_ids))
                out_completion.append(list(_completion_ids(token_ids, sid_map, its[k], spec, stop)))
                out_rank.append(k + 1 if mode == "beam" else None)
                out_items.append(its[k])
        logprobs = _token_logprobs(model, out_prompt, out_completion, tok)
        if log_path is not None and trainer.accelerator.is_main_process:
            with open(log_path, "a", encoding="utf-8") as f:
                for start in range(0, len(out_items), group):
                    f.write(
                        json.dumps(
                            {
                                "call": calls["n"],
                                "items": out_items[start : start + group],
                                "ranks": out_rank[start : start + group],
                            }
                        )
                        + "\n"
                    )
        return {
            "prompt_ids": out_prompt,
            "completion_ids": out_completion,
            "logprobs": logprobs,
            "rank": out_rank,
        }

    return rollout


def _token_logprobs(model, prompts: list[list[int]], completions: list[list[int]], tok) -> list:
    """Per-token log-probs of each completion after its prompt under ``model`` (no grad)."""
    import torch

    out = []
    device = next(model.parameters()).device
    with torch.inference_mode():
        for p, c in zip(prompts, completions, strict=True):
            ids = torch.tensor([p + c], device=device)
            logits = model(input_ids=ids).logits[0, len(p) - 1 : -1].float()
            lp = torch.log_softmax(logits, -1).gather(-1, ids[0, len(p) :, None]).squeeze(-1)
            out.append(lp.tolist())
    return out


class RolloutRewardLog:
    """Wraps a TRL reward function and appends every call's (user, rank, reward) to a JSONL
    file, so a run can be audited: which sample got which reward."""

    def __init__(self, func: Callable[..., list[float]], path: Path) -> None:
        self.func, self.path = func, path
        self.__name__ = func.__name__

    def __call__(self, *args: Any, **kwargs: Any) -> list[float]:
        rewards = self.func(*args, **kwargs)
        ids = kwargs.get("completion_ids") or []
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(
                json.dumps(
                    {
                        "example_id": list(kwargs.get("example_id", [])),
                        "rank": list(kwargs.get("rank") or []),
                        "completion_ids": [list(map(int, c)) for c in ids],
                        "reward": [float(r) for r in rewards],
                    }
                )
                + "\n"
            )
        return rewards


def run_grpo(args: GRPOArguments, grpo_cfg: Any) -> Path:
    """Run GRPO with constrained rollouts; return the final model directory (OUTPUT_DIR/model)."""
    import datasets
    from trl import GRPOTrainer

    from recllm.align.rewards import RewardExample, SIDReader, trl_reward_func
    from recllm.tasks.prompting import build_prompts
    from recllm.train.checkpoints import (
        MarkCompleteCheckpoints,
        plan_trainer_resume,
        train_from,
    )
    from recllm.vocab import SID_FORMAT

    if getattr(grpo_cfg, "use_vllm", False):
        from recllm.errors import UserError

        raise UserError(
            "--use_vllm true",
            "starts TRL's own vLLM engine, which samples without the SID constraint (and the "
            "rollouts here do not use it)",
            "leave use_vllm false and pass --mining_engine vllm: rollouts then run on a "
            "constrained vLLM engine synced with the policy",
        )
    resume = grpo_cfg.resume_from_checkpoint
    start = start_policy(
        args, grpo_cfg, "grpo", plan=lambda out: plan_trainer_resume(resume, out / "trainer")
    )
    grpo_cfg, state, out, checkpoint = start.train_args, start.state, start.out, start.resume
    examples = start.examples
    prompts = build_prompts(start.spec, examples, start.sid_map, start.dataset.catalog)
    train = datasets.Dataset.from_dict(
        {"prompt": prompts, "example_id": [ex.user_id for ex in examples]}
    )
    table: Mapping[str, RewardExample] = {
        ex.user_id: RewardExample(tuple(ex.history), ex.target) for ex in examples
    }
    reader = SIDReader(
        SID_FORMAT.token_ids(start.tokenizer, start.sid_map.codebook_sizes), start.sid_map
    )
    out.mkdir(parents=True, exist_ok=True)
    for name in ("rollouts.jsonl", "rewards.jsonl"):
        if checkpoint is None:  # a resumed run appends to the killed run's logs
            (out / name).unlink(missing_ok=True)
    reward = RolloutRewardLog(trl_reward_func(start.reward, reader, table), out / "rewards.jsonl")
    rollout = constrained_rollout(
        start.sid_map,
        start.spec,
        mode=args.rollout,
        batch_size=args.mining_batch_size,
        log_path=out / "rollouts.jsonl",
        seed=grpo_cfg.seed,
        engine=start.engine,
    )
    t0 = time.monotonic()
    with round_top_layers(start, args, start.model, grpo_cfg) as round_cfg:
        trainer = GRPOTrainer(
            model=start.model,
            reward_funcs=[reward],
            args=with_changes(round_cfg, output_dir=str(out / "trainer")),
            train_dataset=train,
            processing_class=start.tokenizer,
            rollout_func=rollout,
            peft_config=round_peft_config(start, args, start.model),
            callbacks=[MarkCompleteCheckpoints()],
        )
        train_from(trainer, checkpoint)
    start.close()
    save_round_model(start, merged(trainer.model), out / "round1" / "model")
    log = {
        "grpo": trainer.state.log_history,
        "users": len(examples),
        "seconds": round(time.monotonic() - t0, 1),
    }
    final = publish_final(start, out / "round1" / "model", log, "grpo_log.json")
    if state.is_main_process:
        print(f"GRPO: the final model is {final}")
    return final
