"""Beam mining: constrained beams from the current policy, scored, turned into preference pairs.

OneRec's preference stage samples many beams per user from the policy, ranks them with a reward
model and trains DPO on the best against the worst. :func:`mine_preferences` does that for any
recllm model directory (chat models from the PLUM recipe, SID-sequence decoders from
``recipes/seqlm.py``):

1. one example per training user (:func:`mining_examples`: the training part of the split only,
   its last item the logged target, the items before it the history);
2. ``beams`` constrained beams per user (recllm's SID beam search: every beam is a catalog item);
3. every beam scored by a reward of :mod:`recllm.align.rewards`, matched to it by example id and
   its token ids, with its own beam rank;
4. pairs by a policy: ``best_vs_worst`` (highest against lowest reward), ``best_vs_random``
   (highest against a seeded random beam of lower reward), ``target_vs_best`` (the logged
   target against the policy's best-ranked other item, as in SFT-style DPO);
5. a ``datasets.Dataset`` in TRL's preference format (``prompt``, ``chosen``, ``rejected``:
   conversational for chat models, plain text for SID-sequence decoders) with the items,
   rewards, ranks, every beam, and provenance; :func:`save_preferences` writes it atomically.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recllm.align.rewards import Reward, RewardExample, Sample, SIDReader

if TYPE_CHECKING:
    import datasets
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from recllm.data.splits import Example, Split
    from recllm.data.types import Catalog
    from recllm.sid.sidmap import SIDMap
    from recllm.tasks.prompting import PromptSpec

logger = logging.getLogger(__name__)

PAIR_POLICIES = ("best_vs_worst", "best_vs_random", "target_vs_best")
PROVENANCE_FILE = "recllm_preferences.json"


@dataclass
class MiningConfig:
    """How beams are mined and paired."""

    beams: int = 10
    pair_policy: str = "best_vs_worst"
    min_margin: float = 0.0  # a pair needs chosen reward - rejected reward > min_margin
    seed: int = 0  # best_vs_random's draws
    batch_size: int = 16

    def __post_init__(self) -> None:
        if self.pair_policy not in PAIR_POLICIES:
            raise ValueError(
                f"pair_policy {self.pair_policy!r} is not one of {', '.join(PAIR_POLICIES)}"
            )
        if self.beams < 2:
            raise ValueError(f"beams must be >= 2 to make a pair, got {self.beams}")


def mining_examples(split: Split, max_history: int | None) -> list[Example]:
    """One example per training user with 2+ training items: the last training item is the
    target, the ones before it (the last ``max_history``) the history. Valid and test targets
    are never read."""
    from recllm.data.splits import Example

    out = []
    for user, seq in split.train.sequences.items():
        if len(seq) < 2:
            continue
        history = tuple(seq[:-1][-max_history:] if max_history else seq[:-1])
        out.append(Example(user, history, seq[-1]))
    return out


def _beams(
    model, tokenizer, prompts, sid_map, spec, beams, batch_size, engine=None
) -> list[list[tuple]]:
    """Per prompt: ``(item, rank, policy score or None)`` for each of ``beams`` beams (on
    ``engine``, a :class:`recllm.align.vllm_policy.VLLMPolicy`, when given)."""
    from recllm.decode import DecodeOptions, SIDTrie, generate_sids
    from recllm.vocab import SID_FORMAT

    if engine is not None:
        return engine.beams(prompts, beams)
    if spec.style == "sid_sequence":
        from recllm.eval.run import _sequence_beam

        token_ids = SID_FORMAT.token_ids(tokenizer, sid_map.codebook_sizes)
        trie = SIDTrie.from_sid_map(sid_map, token_ids)
        rows = _sequence_beam([model], tokenizer, prompts, trie, beams, beams, batch_size, False)
        return [
            [(sid_map.item_ids[r], rank, None) for rank, r in enumerate(row, 1)] for row in rows
        ]
    out = generate_sids(
        model,
        tokenizer,
        prompts,
        sid_map,
        DecodeOptions(k=beams, num_beams=beams, batch_size=batch_size, engine="sid_beam"),
    )
    return [[(r.item_id, rank, r.score) for rank, r in enumerate(row, 1)] for row in out]


@dataclass
class MinedBeams:
    """Constrained beams of each example, scored: ``beams[i]`` is ``[(item, rank, policy
    score or None), ...]`` for ``examples[i]``, ``rewards[i]`` their rewards."""

    examples: list[Example]
    prompts: list[Any]
    beams: list[list[tuple]]
    rewards: list[list[float]]

    @property
    def rewards_flat(self) -> list[float]:
        return [r for row in self.rewards for r in row]


def mine_beams(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sid_map: SIDMap,
    examples: Sequence[Example],
    spec: PromptSpec,
    catalog: Catalog,
    reward: Reward,
    config: MiningConfig | None = None,
    *,
    engine: Any = None,
) -> MinedBeams:
    """``config.beams`` constrained beams per example from ``model`` (or from ``engine``, a
    :class:`recllm.align.vllm_policy.VLLMPolicy` holding its weights), each scored by
    ``reward`` with its own rank and matched by example id and token ids.

    Raises:
        ValueError: Two examples share a user id (rewards are keyed by it).
        RuntimeError: A beam names no catalog item (the SID trie leaked: a broken setup).
    """
    import torch

    from recllm.tasks.prompting import build_prompts
    from recllm.vocab import SID_FORMAT

    cfg = config or MiningConfig()
    token_ids = SID_FORMAT.token_ids(tokenizer, sid_map.codebook_sizes)
    reader = SIDReader(token_ids, sid_map)
    table = {ex.user_id: RewardExample(tuple(ex.history), ex.target) for ex in examples}
    if len(table) != len(examples):
        raise ValueError("examples must have distinct user ids: rewards are keyed by them")
    prompts = build_prompts(spec, examples, sid_map, catalog)
    was = model.training
    model.eval()
    try:
        with torch.inference_mode():
            beams = _beams(
                model, tokenizer, prompts, sid_map, spec, cfg.beams, cfg.batch_size, engine
            )
    finally:
        model.train(was)
    stop = tokenizer.eos_token_id
    samples = [
        Sample(ex.user_id, _completion_ids(token_ids, sid_map, item, spec, stop), rank)
        for ex, row in zip(examples, beams, strict=True)
        for item, rank, _ in row
    ]
    illegal = sum(1 for s in samples if reader.read(s.completion_ids).item is None)
    if illegal:  # constrained beams are catalog items by construction: a broken setup
        raise RuntimeError(f"{illegal} mined beams name no catalog item: the SID trie leaked")
    scores = reward.score(samples, table, reader)
    rewards, at = [], 0
    for row in beams:
        rewards.append([float(x) for x in scores[at : at + len(row)]])
        at += len(row)
    return MinedBeams(list(examples), prompts, beams, rewards)


def mine_preferences(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sid_map: SIDMap,
    examples: Sequence[Example],
    spec: PromptSpec,
    catalog: Catalog,
    reward: Reward,
    config: MiningConfig | None = None,
    *,
    provenance: Mapping[str, Any] | None = None,
    engine: Any = None,
) -> datasets.Dataset:
    """Mine ``config.beams`` constrained beams per example, score them, pair them (beams from
    ``engine``, a :class:`recllm.align.vllm_policy.VLLMPolicy`, when given).

    Returns:
        One row per pair (examples whose beams all score alike give none): ``prompt``,
        ``chosen``, ``rejected``, ``example_id``, ``target``, ``chosen_item``,
        ``rejected_item``, ``chosen_reward``, ``rejected_reward``, ``chosen_rank``,
        ``rejected_rank`` (0: not among the beams), ``beam_items``, ``beam_rewards``; for
        SID-sequence decoders also ``prompt_ids``, ``chosen_ids`` and ``rejected_ids`` (see
        :func:`sequence_token_columns`). The dataset's ``info.description`` holds the
        provenance as JSON.
    """
    import datasets

    cfg = config or MiningConfig()
    mined = mine_beams(
        model, tokenizer, sid_map, examples, spec, catalog, reward, cfg, engine=engine
    )
    prompts, beams = mined.prompts, mined.beams
    scores = mined.rewards_flat
    rng = random.Random(cfg.seed)
    rows: dict[str, list] = {k: [] for k in _COLUMNS}
    at = 0
    for ex, prompt, row in zip(examples, prompts, beams, strict=True):
        rewards = scores[at : at + len(row)]
        at += len(row)
        items = [item for item, _, _ in row]
        pair = _pair(cfg, ex.target, items, rewards, rng)
        if pair is None:
            continue
        (chosen, c_reward, c_rank), (rejected, r_reward, r_rank) = pair
        rows["prompt"].append(prompt)
        rows["chosen"].append(_answer(spec, catalog, sid_map, ex, chosen))
        rows["rejected"].append(_answer(spec, catalog, sid_map, ex, rejected))
        rows["example_id"].append(ex.user_id)
        rows["target"].append(ex.target)
        rows["chosen_item"].append(chosen)
        rows["rejected_item"].append(rejected)
        rows["chosen_reward"].append(float(c_reward))
        rows["rejected_reward"].append(float(r_reward))
        rows["chosen_rank"].append(c_rank)
        rows["rejected_rank"].append(r_rank)
        rows["beam_items"].append(items)
        rows["beam_rewards"].append([float(r) for r in rewards])
    if spec.style == "sid_sequence":
        answers = {"chosen": rows["chosen_item"], "rejected": rows["rejected_item"]}
        rows.update(sequence_token_columns(tokenizer, sid_map, rows["prompt"], answers))
    meta = {
        "config": asdict(cfg),
        "reward": getattr(reward, "name", type(reward).__name__),
        "examples": len(examples),
        "pairs": len(rows["prompt"]),
        "beams_scored": len(scores),
        "hits_in_beams": sum(
            1 for ex, row in zip(examples, beams, strict=True) if ex.target in {i for i, *_ in row}
        ),
        "prompt_style": spec.style,
        "engine": "hf" if engine is None else "vllm",
        "sid_map_hash": sid_map.content_hash,
        **(provenance or {}),
    }
    logger.info(
        "mined %d pairs from %d examples x %d beams (%s, reward %s); target among the beams for %d",
        meta["pairs"],
        len(examples),
        cfg.beams,
        cfg.pair_policy,
        meta["reward"],
        meta["hits_in_beams"],
    )
    info = datasets.DatasetInfo(description=json.dumps(meta, default=str))
    return datasets.Dataset.from_dict(rows, info=info)


_COLUMNS = (
    "prompt",
    "chosen",
    "rejected",
    "example_id",
    "target",
    "chosen_item",
    "rejected_item",
    "chosen_reward",
    "rejected_reward",
    "chosen_rank",
    "rejected_rank",
    "beam_items",
    "beam_rewards",
)


def _completion_ids(token_ids, sid_map, item, spec, stop) -> tuple[int, ...]:
    """The token ids the model generates for ``item``: the SID span ``<|sid_begin|> codes
    <|sid_end|>``, + the stop token for chat answers. A SID-sequence decoder's answer is the span
    alone: its prompts end on the last history item's ``<|sid_end|>`` and it was never trained
    to stop (no end-of-sequence token in its training windows)."""
    ids = token_ids.encode(sid_map.code(item))
    if spec.style == "sid_sequence" or stop is None:
        return tuple(ids)
    return (*ids, stop)


def sequence_token_columns(
    tokenizer: PreTrainedTokenizerBase,
    sid_map: SIDMap,
    prompts: Sequence[str],
    answers: Mapping[str, Sequence[str]],
) -> dict[str, list[list[int]]]:
    """``prompt_ids``, and ``<name>_ids`` for each ``answers[name]`` (one item per prompt): a
    SID-sequence decoder's rows as token ids.

    TRL tokenizes plain-text pairs itself and appends the end-of-sequence token to both
    answers; a SID-sequence decoder never saw that token in training (its windows are SIDs back
    to back), so DPO would score and train a token the decoder never emits. These columns are
    what the decoder sees at evaluation: the prompt tokenized as :func:`encode_prompts` does
    (each distinct prompt once), and each answer as its SID span from the token layout (never
    from text).
    """
    from recllm.decode import encode_prompts
    from recllm.vocab import SID_FORMAT

    token_ids = SID_FORMAT.token_ids(tokenizer, sid_map.codebook_sizes)
    distinct = list(dict.fromkeys(prompts))
    encoded = dict(
        zip(distinct, encode_prompts(tokenizer, distinct) if distinct else [], strict=True)
    )
    out: dict[str, list[list[int]]] = {"prompt_ids": [list(encoded[p]) for p in prompts]}
    for name, items in answers.items():
        out[f"{name}_ids"] = [list(token_ids.encode(sid_map.code(i))) for i in items]
    return out


def _pair(cfg: MiningConfig, target, items, rewards, rng):
    """``((chosen, reward, rank), (rejected, reward, rank))`` or None (no pair with margin)."""
    ranked = list(zip(items, rewards, range(1, len(items) + 1), strict=True))
    if cfg.pair_policy == "target_vs_best":
        others = [b for b in ranked if b[0] != target]
        if not others:
            return None
        hit = [b for b in ranked if b[0] == target]
        return (hit[0] if hit else (target, float("nan"), 0)), others[0]
    best = max(ranked, key=lambda b: (b[1], -b[2]))  # ties: the better-ranked beam
    lower = [b for b in ranked if best[1] - b[1] > cfg.min_margin]
    if not lower:
        return None
    if cfg.pair_policy == "best_vs_worst":
        return best, min(lower, key=lambda b: (b[1], -b[2]))  # ties: the worse-ranked beam
    return best, rng.choice(lower)


def _answer(spec, catalog, sid_map, ex, item):
    """The completion the model is trained to produce for ``item``: the ``rec`` template's
    assistant turn (chat models) or the bare SID text (SID-sequence decoders)."""
    from recllm.vocab import SID_FORMAT

    if spec.style == "sid_sequence":
        return SID_FORMAT.render(sid_map.code(item))
    from dataclasses import replace

    from recllm.data.splits import Example
    from recllm.tasks.builders import TaskBuilder
    from recllm.tasks.config import TaskConfig

    task_cfg = TaskConfig(**spec.task)
    if spec.prompts_dir is not None:
        task_cfg = replace(task_cfg, prompts_dir=spec.prompts_dir)
    builder = TaskBuilder(catalog, lambda i: SID_FORMAT.render(sid_map.code(i)), task_cfg)
    (row,) = builder.rec([Example(ex.user_id, tuple(ex.history), item)])
    return row["completion"]


def save_preferences(dataset: datasets.Dataset, directory: str | Path) -> Path:
    """Write a mined dataset to ``directory`` atomically: ``save_to_disk`` into a temporary
    sibling, the provenance beside it, then one rename (an existing directory is replaced only
    after the new one is complete)."""
    out = Path(directory)
    tmp = out.with_name(f".{out.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    dataset.save_to_disk(str(tmp))
    (tmp / PROVENANCE_FILE).write_text(dataset.info.description or "{}", encoding="utf-8")
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        if old.exists():
            shutil.rmtree(old)
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old)
    else:
        tmp.rename(out)
    return out


def load_preferences(directory: str | Path) -> tuple[datasets.Dataset, dict[str, Any]]:
    """A dataset written by :func:`save_preferences` and its provenance."""
    import datasets

    src = Path(directory)
    if not (src / PROVENANCE_FILE).is_file():
        from recllm.errors import UserError

        raise UserError(src, "holds no mined preferences", "pass a directory of save_preferences")
    meta = json.loads((src / PROVENANCE_FILE).read_text(encoding="utf-8"))
    if meta.get("pairs") == 0:  # datasets writes no shard for an empty dataset
        return datasets.Dataset.from_dict({k: [] for k in _COLUMNS}), meta
    return datasets.load_from_disk(str(src)), meta
