"""Rewards for preference alignment: rule rewards and a reward model, matched to their samples.

A *sample* is one completion of one prompt: :class:`Sample` names its example (the user whose
history was the prompt) by id, carries the completion's token ids and, for beams, its own rank in
its own beam. Rewards read everything from there:

- the SID is read from the completion's **token ids** (:class:`SIDReader`), never from decoded
  text: a decoder that skips special tokens turns every SID into an empty string (OneRec-Think
  reimplementations scored zero rewards that way);
- the target and history come from the example table by **example id**, never from the prompt
  text or the sample's position in a batch;
- rank-shaped rewards use the sample's **own rank** in its beam, never its index in a batch
  (MiniOneRec's NDCG reward indexes by position and scores the wrong sample once sampled
  completions are shuffled or grouped differently).

So a reward is a pure function of (sample, example): shuffling the samples shuffles the rewards
with them (``tests/align/test_rewards.py`` checks it, with a position-indexed control that fails).

Rewards compose: :class:`WeightedSum` adds weighted rewards and by default gives an illegal SID
(no catalog item) the reward ``illegal`` whatever its parts say. :func:`trl_reward_func` wraps any
of them in the signature TRL's ``GRPOTrainer`` calls (``prompts``, ``completions``,
``completion_ids`` and the dataset's columns as keyword arguments).

Example:
    >>> reader = SIDReader(token_ids, sid_map)                  # doctest: +SKIP
    >>> examples = {"u1": RewardExample(("i3", "i9"), "i4")}    # doctest: +SKIP
    >>> reward = WeightedSum([(ExactHit(), 1.0), (PrefixCredit(), 0.5)])  # doctest: +SKIP
    >>> reward.score([Sample("u1", ids)], examples, reader)     # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from recllm.baselines.sasrec import SASRec
    from recllm.sid.sidmap import SIDMap
    from recllm.vocab.format import SIDTokenIds

__all__ = [
    "ExactHit",
    "Legality",
    "PrefixCredit",
    "RankShaped",
    "Reward",
    "RewardExample",
    "SASRecReward",
    "SIDRead",
    "SIDReader",
    "Sample",
    "WeightedSum",
    "parse_reward_spec",
    "reward_from_spec",
    "trl_reward_func",
]

#: Names a reward spec (``"sasrec=1,prefix_credit=0.5"``) may use.
RULE_REWARDS = ("exact_hit", "legality", "prefix_credit", "rank_shaped")


@dataclass(frozen=True)
class Sample:
    """One completion of one prompt.

    Attributes:
        example_id: The example (prompt) it answers: a key of the example table.
        completion_ids: The generated token ids (prompt excluded).
        rank: 1-based rank in its own beam (best = 1); None for a sampled completion.
    """

    example_id: str
    completion_ids: tuple[int, ...]
    rank: int | None = None


@dataclass(frozen=True)
class RewardExample:
    """What a reward may know about an example: the user's history and the logged next item."""

    history: tuple[str, ...]
    target: str | None


@dataclass(frozen=True)
class SIDRead:
    """The SID a completion holds: its codes (None: no complete SID) and catalog item (None:
    no catalog item has these codes)."""

    code: tuple[int, ...] | None
    item: str | None


class SIDReader:
    """Reads the first SID of a completion from its token ids.

    Two answer shapes are read: ``<|sid_begin|> c0 c1 ... <|sid_end|>`` (chat models; text
    before the begin marker, e.g. a rationale, is skipped) and bare code tokens ``c0 c1 ...``
    at the start of the completion (SID-sequence decoders, whose next token is the next item's
    marker). A span with a code of the wrong level, a missing end marker or too few codes is
    no SID (``code`` None).
    """

    def __init__(self, token_ids: SIDTokenIds, sid_map: SIDMap) -> None:
        if token_ids.codebook_sizes != tuple(sid_map.codebook_sizes):
            raise ValueError(
                f"token layout {token_ids.codebook_sizes} does not match the SID map's "
                f"{tuple(sid_map.codebook_sizes)}; Fix: build both from one model directory"
            )
        self.ids = token_ids
        self.sid_map = sid_map

    def read(self, completion_ids: Sequence[int]) -> SIDRead:
        ids = [int(t) for t in completion_ids]
        levels = self.ids.levels
        first = self.ids.level_code(ids[0]) if ids else None
        if first is not None and first[0] == 0:  # bare codes: a SID-sequence decoder's answer
            code = self._codes(ids[:levels])
        elif self.ids.begin_id in ids:
            at = ids.index(self.ids.begin_id)
            code = self.ids.decode(ids[at : at + levels + 2])
        else:
            code = None
        if code is None:
            return SIDRead(None, None)
        return SIDRead(code, self.sid_map.item(code))

    def _codes(self, ids: list[int]) -> tuple[int, ...] | None:
        if len(ids) != self.ids.levels:
            return None
        code = []
        for level, token_id in enumerate(ids):
            lc = self.ids.level_code(token_id)
            if lc is None or lc[0] != level:
                return None
            code.append(lc[1])
        return tuple(code)


class Reward(Protocol):
    """A reward: one float per sample, from the sample and its example only."""

    name: str

    def score(
        self,
        samples: Sequence[Sample],
        examples: Mapping[str, RewardExample],
        reader: SIDReader,
    ) -> list[float]: ...


def _example(examples: Mapping[str, RewardExample], sample: Sample | str) -> RewardExample:
    example_id = sample if isinstance(sample, str) else sample.example_id
    try:
        return examples[example_id]
    except KeyError:
        raise KeyError(
            f"sample of example {example_id!r}: no such example in the reward's table "
            f"({len(examples)} examples); Fix: pass the examples the prompts were built from"
        ) from None


@dataclass
class ExactHit:
    """1 when the completion's item is the example's target, else 0."""

    name: str = "exact_hit"

    def score(self, samples, examples, reader) -> list[float]:
        return [
            float(reader.read(s.completion_ids).item == _example(examples, s).target)
            for s in samples
        ]


@dataclass
class Legality:
    """1 when the completion names a catalog item, else 0."""

    name: str = "legality"

    def score(self, samples, examples, reader) -> list[float]:
        return [float(reader.read(s.completion_ids).item is not None) for s in samples]


@dataclass
class PrefixCredit:
    """Partial credit for SID levels matched: (leading levels equal to the target's) / levels.

    An item of the target's first-level cluster earns 1/L, one of its second-level cluster 2/L,
    the target itself 1. A completion with no complete SID earns 0.
    """

    name: str = "prefix_credit"

    def score(self, samples, examples, reader) -> list[float]:
        out = []
        for s in samples:
            target = _example(examples, s).target
            code = reader.read(s.completion_ids).code
            if code is None or target is None or target not in reader.sid_map:
                out.append(0.0)
                continue
            want = reader.sid_map.code(target)
            matched = 0
            for a, b in zip(code, want, strict=True):
                if a != b:
                    break
                matched += 1
            out.append(matched / len(want))
        return out


@dataclass
class RankShaped:
    """NDCG-shaped reward on the sample's own beam rank ``r`` (1 = best).

    The target at rank ``r`` earns ``1 / log2(r + 1)``; a non-target earns
    ``-miss_penalty / log2(r + 1)``: a wrong item ranked first is penalised most, one ranked
    last least (``miss_penalty=0`` gives plain NDCG). Sampled completions have no rank: scoring
    one raises.
    """

    miss_penalty: float = 0.0
    name: str = "rank_shaped"

    def score(self, samples, examples, reader) -> list[float]:
        out = []
        for s in samples:
            if s.rank is None or s.rank < 1:
                raise ValueError(
                    f"sample of example {s.example_id!r} has rank {s.rank}: a rank-shaped reward "
                    "needs each beam's own 1-based rank; Fix: use beam rollouts, or another reward"
                )
            gain = 1.0 / math.log2(s.rank + 1)
            hit = reader.read(s.completion_ids).item == _example(examples, s).target
            out.append(gain if hit else -self.miss_penalty * gain)
        return out


class SASRecReward:
    """A reward model: SASRec's log-probability of the completion's item after the history.

    The scorer is a collaborative model trained on the training part of the split only
    (:func:`recllm.baselines.sasrec.train_sasrec`, saved with
    :func:`~recllm.baselines.sasrec.save_sasrec`); it scores any (history, item) pair. The
    log-softmax over the whole catalog makes scores of different users comparable. One forward
    pass per distinct history in a call; a completion with no catalog item gets ``illegal``.
    """

    name = "sasrec"

    def __init__(self, model: SASRec, illegal: float = -30.0, batch_size: int = 256) -> None:
        self.model = model.eval()
        self.illegal = illegal
        self.batch_size = batch_size

    @classmethod
    def load(cls, directory: str, **kwargs: Any) -> SASRecReward:
        from recllm.baselines.sasrec import load_sasrec

        model, _ = load_sasrec(directory)
        return cls(model, **kwargs)

    def score(self, samples, examples, reader) -> list[float]:
        import torch

        from recllm.baselines.sasrec import score_histories

        items = [reader.read(s.completion_ids).item for s in samples]
        needed = sorted({s.example_id for s, i in zip(samples, items, strict=True) if i})
        logp: dict[str, torch.Tensor] = {}
        for at in range(0, len(needed), self.batch_size):
            ids = needed[at : at + self.batch_size]
            hist = [_example(examples, e).history for e in ids]
            scores = torch.log_softmax(score_histories(self.model, hist).float(), dim=-1)
            logp.update(zip(ids, scores, strict=True))
        out = []
        for s, item in zip(samples, items, strict=True):
            col = self.model.index.get(item) if item is not None else None
            out.append(self.illegal if col is None else float(logp[s.example_id][col - 1]))
        return out


@dataclass
class WeightedSum:
    """``sum(weight * reward)`` over parts; an illegal SID gets ``illegal`` when ``legal_only``."""

    parts: Sequence[tuple[Reward, float]]
    legal_only: bool = True
    illegal: float = 0.0
    name: str = "weighted_sum"

    def score(self, samples, examples, reader) -> list[float]:
        total = [0.0] * len(samples)
        for reward, weight in self.parts:
            for i, r in enumerate(reward.score(samples, examples, reader)):
                total[i] += weight * r
        if self.legal_only:
            for i, s in enumerate(samples):
                if reader.read(s.completion_ids).item is None:
                    total[i] = self.illegal
        return total


def trl_reward_func(
    reward: Reward,
    reader: SIDReader,
    examples: Mapping[str, RewardExample],
    *,
    id_column: str = "example_id",
    rank_column: str = "rank",
) -> Callable[..., list[float]]:
    """``reward`` as a TRL reward function (``GRPOTrainer(reward_funcs=[...])``).

    TRL calls it with ``prompts``, ``completions`` (decoded text: ignored here),
    ``completion_ids`` and every dataset column repeated per completion; ``id_column`` names the
    column that holds each prompt's example id, ``rank_column`` (optional; e.g. from a beam
    ``rollout_func``) each completion's beam rank.
    """

    def func(prompts=None, completions=None, completion_ids=None, **kwargs) -> list[float]:
        if completion_ids is None:
            raise ValueError("TRL passed no completion_ids: SIDs are read from token ids only")
        if id_column not in kwargs:
            raise KeyError(
                f"the dataset has no {id_column!r} column; Fix: add each prompt's example id "
                "as a column (recllm's preference datasets carry it)"
            )
        ids = kwargs[id_column]
        ranks = kwargs.get(rank_column) or [None] * len(completion_ids)
        samples = [
            Sample(str(e), tuple(int(t) for t in c), None if r is None else int(r))
            for e, c, r in zip(ids, completion_ids, ranks, strict=True)
        ]
        return reward.score(samples, examples, reader)

    func.__name__ = reward.name
    return func


def parse_reward_spec(spec: str) -> list[tuple[str, float]]:
    """``"name=weight,name"`` -> ``[(name, weight), ...]`` (weight 1 when left out), checked.

    Raises:
        ValueError: An unknown name, a weight that is not a finite number, a name given twice,
            or no reward at all.
    """
    known = (*RULE_REWARDS, "sasrec")
    parts: list[tuple[str, float]] = []
    for chunk in (c.strip() for c in spec.split(",")):
        if not chunk:
            continue
        name, _, weight = (x.strip() for x in chunk.partition("="))
        if name not in known:
            raise ValueError(f"reward {name!r} is not one of {', '.join(known)}")
        if name in dict(parts):
            raise ValueError(f"reward spec {spec!r} names {name} twice")
        try:
            value = float(weight) if weight else 1.0
        except ValueError:
            raise ValueError(f"reward {chunk!r}: weight {weight!r} is not a number") from None
        if not math.isfinite(value):  # a nan weight turns every reward into nan mid-run
            raise ValueError(f"reward {chunk!r}: weight {weight} is not a finite number")
        parts.append((name, value))
    if not parts:
        raise ValueError(f"reward spec {spec!r} names no reward")
    return parts


def reward_from_spec(
    spec: str,
    *,
    sasrec: SASRec | None = None,
    miss_penalty: float = 0.0,
    illegal: float = 0.0,
) -> WeightedSum:
    """A :class:`WeightedSum` from ``"name=weight,name=weight"`` (:func:`parse_reward_spec`).

    Names: ``exact_hit``, ``legality``, ``prefix_credit``, ``rank_shaped`` (with
    ``miss_penalty``) and ``sasrec`` (the reward model ``sasrec``, which must then be given).

    Raises:
        ValueError: A bad spec, or ``sasrec`` named without a model.
    """
    rules = {"exact_hit": ExactHit, "legality": Legality, "prefix_credit": PrefixCredit}
    parts: list[tuple[Reward, float]] = []
    for name, weight in parse_reward_spec(spec):
        if name == "sasrec":
            if sasrec is None:
                raise ValueError("reward 'sasrec' needs a reward model (a SASRec artifact)")
            parts.append((SASRecReward(sasrec), weight))
        elif name == "rank_shaped":
            parts.append((RankShaped(miss_penalty=miss_penalty), weight))
        else:
            parts.append((rules[name](), weight))
    return WeightedSum(parts, illegal=illegal, name=spec.replace(" ", ""))
