"""Slate beam search on a vLLM engine: what :func:`recllm.decode.slate.slate_search` computes.

The slate answer is ``n`` SIDs back to back, then the stop token (see
:mod:`recllm.decode.slate`). As :mod:`recllm.decode.vllm_beam` does for one SID, the search
runs as rounds of ordinary vLLM requests, each one beam's prompt + answer so far, with the SID
processor in ``sid_only`` mode and ``logprobs_mode="processed_logits"`` (every reported logprob
is the full-vocabulary log-probability of an allowed token); prefix caching keeps the prompt's
KV blocks between rounds:

1. prompt -> 2 tokens: ``<|sid_begin|>`` (forced) and the top ``num_beams`` level-0 codes.
2. each further level: prompt + answer -> 1 token, the top ``num_beams`` codes of each beam.
3. after a SID's last code, when another follows: prompt + answer -> 3 tokens, the forced
   ``<|sid_end|>``, the forced ``<|sid_begin|>`` (the processor's ``recllm_next_sid`` switch)
   and the top ``num_beams`` level-0 codes of the next SID.
4. after the last SID: prompt + answer -> 2 tokens, ``<|sid_end|>`` and the stop token.

Every request of a beam carries the caller's ``exclude`` plus the items already in that beam's
slate (``recllm_exclude``), and the caller's ``allow``: the processor applies them inside the
trie mask, so a beam never repeats an item. At each step the best ``num_beams`` (beam, code)
pairs of each prompt survive, so the result equals :func:`~recllm.decode.slate.slate_search`
with ``stop_token_id`` (``n * L + 1`` rounds). Beam and greedy (width 1) only; sampling needs
the whole allowed distribution at every step and runs on the transformers engine.

With a ``diversity_penalty`` (:func:`~recllm.decode.slate.slate_search`'s soft spread), beams
are kept and returned by log-prob minus the penalties. A round that opens a new SID then asks
for ``num_beams`` + (items in the slate) level-0 codes per beam: at most that many of a beam's
codes are penalised, so the best ``num_beams`` after the penalty are always among them.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from recllm.decode.trie import SIDTrie
from recllm.decode.vllm_processor import (
    EXTRA_ALLOW,
    EXTRA_CATALOG,
    EXTRA_EXCLUDE,
    EXTRA_NEXT_SID,
    EXTRA_SID,
    EXTRA_SID_ONLY,
    EXTRA_SID_PARTIAL,
    EXTRA_STOP,
)

if TYPE_CHECKING:
    from vllm import LLM, SamplingParams
    from vllm.outputs import CompletionOutput

__all__ = ["RankedSlate", "async_vllm_slate_search", "slate_rounds", "vllm_slate_search"]

Round = list[tuple[list[int], "SamplingParams"]]


@dataclass(frozen=True)
class RankedSlate:
    """One slate from the vLLM search.

    Attributes:
        items: SID-map rows, in answer order.
        score: The joint log-prob of the answer.
        item_scores: Each item's part of ``score`` (as :attr:`SlateOutput.item_scores`).
    """

    items: tuple[int, ...]
    score: float
    item_scores: tuple[float, ...]


@dataclass(frozen=True)
class _Beam:
    answer: tuple[int, ...]  # answer tokens so far (markers and codes)
    items: tuple[int, ...]  # finished items
    codes: tuple[int, ...]  # code tokens of the SID in progress
    score: float
    parts: tuple[float, ...]  # finished items' parts
    start: float  # score before the SID in progress
    firsts: tuple[int, ...] = ()  # finished items' first code tokens
    penalty: float = 0.0  # summed diversity penalty (diversity_penalty > 0)


def _params(
    max_tokens: int,
    logprobs: int,
    *,
    exclude: list[str] | None,
    allow: list[str] | None,
    catalog: str | None,
    stop: int | None = None,
    next_sid: bool = False,
) -> SamplingParams:
    from vllm import SamplingParams

    extra: dict[str, Any] = {EXTRA_SID: True, EXTRA_SID_ONLY: True, EXTRA_SID_PARTIAL: True}
    if exclude:
        extra[EXTRA_EXCLUDE] = exclude
    if allow is not None:
        extra[EXTRA_ALLOW] = allow
    if stop is not None:
        extra[EXTRA_STOP] = stop
    if catalog is not None:
        extra[EXTRA_CATALOG] = catalog
    if next_sid:
        extra[EXTRA_NEXT_SID] = True
    return SamplingParams(
        temperature=0.0,
        max_tokens=max_tokens,
        logprobs=logprobs,
        detokenize=False,
        extra_args=extra,
    )


def _finite(out: CompletionOutput, step: int) -> list[tuple[int, float]]:
    if out.logprobs is None or len(out.logprobs) <= step:
        raise RuntimeError(
            "vLLM returned no logprobs for a slate step; the engine must run with "
            "logprobs_mode='processed_logits' and the recllm SID logits processor"
        )
    return [(t, lp.logprob) for t, lp in out.logprobs[step].items() if math.isfinite(lp.logprob)]


def _forced(out: CompletionOutput, step: int, token: int) -> float:
    if len(out.token_ids) <= step or out.token_ids[step] != token:
        raise RuntimeError(
            f"expected token {token} at step {step} of a slate round, got {list(out.token_ids)}: "
            "the SID processor (with recllm_next_sid) is not installed"
        )
    return out.logprobs[step][token].logprob


def slate_rounds(
    prompts: Sequence[Sequence[int]],
    trie: SIDTrie,
    *,
    n: int,
    num_beams: int,
    k: int | None = None,
    stop_token_id: int | None = None,
    catalog: str | None = None,
    exclude: Sequence[Sequence[str] | None] | None = None,
    allow: Sequence[Sequence[str] | None] | None = None,
    spread: bool = False,
    diversity_penalty: float = 0.0,
) -> Generator[Round, list[CompletionOutput], list[list[RankedSlate]]]:
    """The slate beam search as rounds of requests (see the module docstring).

    ``stop_token_id``: the token scored after the last SID (default: the engine's stop token);
    ``catalog``: the SID map's content hash (the processor's ``recllm_catalog``);
    ``exclude`` / ``allow``: per prompt, item ids (or None);
    ``spread``: a beam's requests also exclude every item under a first code its slate holds
    (:func:`recllm.decode.slate.slate_search`'s ``spread``);
    ``diversity_penalty``: subtracted from a slate's ranking once per item sharing an earlier
    item's first code (:func:`recllm.decode.slate.slate_search`'s ``diversity_penalty``).

    Yields one round (``(token_ids, SamplingParams)`` per request) at a time and expects the
    requests' first ``CompletionOutput`` back, in order, through ``send``.

    Returns:
        Per prompt, up to ``k`` slates, best first.

    Raises:
        ValueError: Bad sizes, or a trie without item ids.
        RuntimeError: The engine does not return the expected logprobs or tokens.
    """
    k = num_beams if k is None else k
    if n < 1 or num_beams < 1 or not 1 <= k <= num_beams:
        raise ValueError(f"need n >= 1 and 1 <= k ({k}) <= num_beams ({num_beams})")
    if trie.item_ids is None:
        raise ValueError("the trie has no item ids (build it with SIDTrie.from_sid_map)")
    if not 0 <= diversity_penalty < math.inf:
        raise ValueError(f"diversity_penalty must be a finite number >= 0, got {diversity_penalty}")
    import torch

    ids, levels = trie.token_ids, trie.levels
    code_start = [int(s) for s in trie.code_token_start]
    item_ids = list(trie.item_ids)
    prompts = [list(p) for p in prompts]
    base_ex = [None] * len(prompts) if exclude is None else [list(e or ()) for e in exclude]
    base_al = [None] * len(prompts) if allow is None else [a for a in allow]
    for name, lists in (("exclude", exclude), ("allow", allow)):
        if lists is not None and len(lists) != len(prompts):
            raise ValueError(f"{len(lists)} {name} lists for {len(prompts)} prompts")

    siblings: dict[int, list[int]] = {}  # spread: item row -> the rows under its first code
    if spread:
        from recllm.decode.slate import _first_nodes

        first = _first_nodes(trie).tolist()
        groups: dict[int, list[int]] = {}
        for row, node in enumerate(first):
            groups.setdefault(node, []).append(row)
        siblings = {row: groups[node] for row, node in enumerate(first)}

    def params(p: int, beam: _Beam | None, max_tokens: int, logprobs: int, **kw) -> Any:
        taken = list(beam.items if beam else ())
        if spread:
            taken = list(dict.fromkeys(j for i in taken for j in siblings[i]))
        ex = [*(base_ex[p] or ()), *(item_ids[i] for i in taken)]
        al = None if base_al[p] is None else [str(i) for i in base_al[p]]
        return _params(
            max_tokens,
            logprobs,
            exclude=[str(i) for i in ex] or None,
            allow=al,
            catalog=catalog,
            **kw,
        )

    def item_of(codes: tuple[int, ...]) -> int:
        row = trie.item_index(
            torch.tensor([[t - code_start[lv] for lv, t in enumerate(codes)]], dtype=torch.long)
        )
        if int(row[0]) < 0:
            raise RuntimeError("a beam left the SID trie: the constraint was not applied")
        return int(row[0])

    def grow(beam: _Beam, tokens: tuple[int, ...], lp: float, code: int, level: int) -> _Beam:
        codes = (*beam.codes, code)
        score = beam.score + lp
        penalty = beam.penalty
        if level == 0 and diversity_penalty:
            penalty += diversity_penalty * beam.firsts.count(code)
        if level < levels - 1:
            return _Beam(
                (*beam.answer, *tokens),
                beam.items,
                codes,
                score,
                beam.parts,
                beam.start,
                beam.firsts,
                penalty,
            )
        return _Beam(
            (*beam.answer, *tokens),
            (*beam.items, item_of(codes)),
            (),
            score,
            beam.parts,
            beam.start,
            (*beam.firsts, codes[0]),
            penalty,
        )

    def best(cands: list[_Beam]) -> list[_Beam]:  # stable: ties keep the engine's order
        return sorted(cands, key=lambda b: -(b.score - b.penalty))[:num_beams]

    def check_level(t: int, level: int) -> None:
        lo = code_start[level]
        if not lo <= t < lo + trie.codebook_sizes[level]:
            raise RuntimeError(f"token {t} is not a level-{level} code: constraint off")

    # Round 1: <|sid_begin|> and the first SID's level-0 codes.
    outs = yield [(p, params(i, None, 2, num_beams)) for i, p in enumerate(prompts)]
    beams: list[list[_Beam]] = []
    for out in outs:
        begin = _forced(out, 0, ids.begin_id)
        root = _Beam((), (), (), begin, (), 0.0)
        cands = []
        for t, lp in _finite(out, 1):
            check_level(t, 0)
            cands.append(grow(root, (ids.begin_id, t), lp, t, 0))
        beams.append(best(cands))

    for slot in range(n):
        # level 0 came with round 1 (the first SID) or with the round that closed the last SID
        for level in range(1, levels):
            flat = [(p, b) for p, row in enumerate(beams) for b in row]
            outs = yield [
                (prompts[p] + list(b.answer), params(p, b, 1, num_beams)) for p, b in flat
            ]
            grown: list[list[_Beam]] = [[] for _ in prompts]
            for (p, b), out in zip(flat, outs, strict=True):
                for t, lp in _finite(out, 0):
                    check_level(t, level)
                    grown[p].append(grow(b, (t,), lp, t, level))
            beams = [best(row) for row in grown]
        flat = [(p, b) for p, row in enumerate(beams) for b in row]
        if slot == n - 1:  # close the slate: <|sid_end|> + the stop token
            outs = yield [
                (prompts[p] + list(b.answer), params(p, b, 2, 0, stop=stop_token_id))
                for p, b in flat
            ]
            final: list[list[_Beam]] = [[] for _ in prompts]
            for (p, b), out in zip(flat, outs, strict=True):
                stop = out.token_ids[1] if len(out.token_ids) > 1 else -1
                if stop_token_id is not None and stop != stop_token_id:
                    raise RuntimeError(f"expected the stop token, got {list(out.token_ids)}")
                tail = _forced(out, 0, ids.end_id) + _forced(out, 1, stop)
                score = b.score + tail
                parts = (*b.parts, score - b.start)
                final[p].append(
                    _Beam(b.answer, b.items, (), score, parts, score, b.firsts, b.penalty)
                )
            beams = [best(row) for row in final]
            break
        # close this SID, open the next: <|sid_end|>, <|sid_begin|>, its level-0 codes (with a
        # penalty, num_beams + the slate's items of them: see the module docstring)
        wide = num_beams + (slot + 1 if diversity_penalty else 0)
        outs = yield [
            (prompts[p] + list(b.answer), params(p, b, 3, wide, next_sid=True)) for p, b in flat
        ]
        grown = [[] for _ in prompts]
        for (p, b), out in zip(flat, outs, strict=True):
            tail = _forced(out, 0, ids.end_id) + _forced(out, 1, ids.begin_id)
            score = b.score + tail
            closed = _Beam(
                (*b.answer, ids.end_id, ids.begin_id),
                b.items,
                (),
                score,
                (*b.parts, score - b.start),
                score,
                b.firsts,
                b.penalty,
            )
            for t, lp in _finite(out, 2):
                check_level(t, 0)
                grown[p].append(grow(closed, (t,), lp, t, 0))
        beams = [best(row) for row in grown]
    return [[RankedSlate(b.items, b.score, b.parts) for b in row[:k]] for row in beams]


def vllm_slate_search(llm: LLM, prompts: Sequence[Sequence[int]], trie: SIDTrie, **kwargs):
    """:func:`slate_rounds` on an offline ``vllm.LLM`` built with
    :func:`~recllm.decode.vllm_processor.vllm_engine_kwargs` (token-id prompts in)."""
    from recllm.decode.vllm_beam import _drive

    return _drive(llm, slate_rounds(prompts, trie, **kwargs))


async def async_vllm_slate_search(
    engine: Any, prompts: Sequence[Sequence[int]], trie: SIDTrie, **kwargs
) -> list[list[RankedSlate]]:
    """:func:`slate_rounds` on vLLM's async engine client (the API server's ``AsyncLLM``)."""
    from vllm.inputs import TokensPrompt

    from recllm.decode.vllm_beam import collect_completions

    async def one(ids: list[int], params: SamplingParams) -> CompletionOutput:
        request_id = f"recllm-slate-{uuid.uuid4().hex}"
        stream = engine.generate(TokensPrompt(prompt_token_ids=ids), params, request_id)
        return (await collect_completions(stream, 1))[0]

    rounds = slate_rounds(prompts, trie, **kwargs)
    requests = next(rounds)
    while True:
        outs = await asyncio.gather(*(one(ids, params) for ids, params in requests))
        try:
            requests = rounds.send(list(outs))
        except StopIteration as done:
            return done.value
