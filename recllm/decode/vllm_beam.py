"""Constrained SID beam search on a vLLM engine, scored exactly like Hugging Face beam search.

A recommendation answer is ``<|sid_begin|>`` + ``L`` codes + ``<|sid_end|>`` + stop token, so
its beam search has a fixed shape. The driver here runs it as ``L + 1`` rounds of ordinary
vLLM requests (each round one batch over all prompts and beams; prefix caching keeps the
prompts' KV blocks between rounds), with :class:`~recllm.decode.vllm_processor.SIDVLLMLogitsProcessor`
in ``sid_only`` mode and ``logprobs_mode="processed_logits"``, so every reported logprob is the
full-vocabulary log-probability of an allowed token:

1. prompt -> 2 tokens: ``<|sid_begin|>`` (forced; its logprob) and the top ``num_beams``
   level-0 codes (``logprobs=num_beams``: the processor leaves only allowed codes finite).
2. for each level ``1..L-1``: prompt + begin + the beam's codes -> 1 token, top ``num_beams``
   codes of each beam; the best ``num_beams`` (beam, code) pairs of each prompt survive.
3. prompt + begin + codes -> 2 tokens: the forced ``<|sid_end|>`` and stop token, scored.

A score is ``(log p(begin) + code log-probs + log p(end) + log p(stop)) / (L + 3) **
length_penalty``, as :func:`recllm.decode.beam.sid_beam_search` with ``stop_token_id`` and
``model.generate`` + ``SIDLogitsProcessor(sid_only=True)`` compute it. vLLM's own
``LLM.beam_search`` works too under the processor's global config, but needs ``L + 3`` rounds of
``2 * beam_width`` logprobs and divides by the prompt length as well.

The rounds are a generator (:func:`sid_beam_rounds`) so the same code drives the offline
``vllm.LLM`` (:func:`vllm_sid_beam_search`) and the server's async engine
(:func:`async_vllm_sid_beam_search`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import uuid
from collections.abc import Generator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recllm.decode.trie import SIDTrie
from recllm.decode.vllm_processor import (
    EXTRA_ALLOW,
    EXTRA_CATALOG,
    EXTRA_EXCLUDE,
    EXTRA_PREFIXES,
    EXTRA_SID,
    EXTRA_SID_ONLY,
    EXTRA_SID_PARTIAL,
    EXTRA_STOP,
)

if TYPE_CHECKING:
    from vllm import LLM, SamplingParams
    from vllm.outputs import CompletionOutput

__all__ = [
    "async_vllm_sid_beam_search",
    "collect_completions",
    "sid_beam_rounds",
    "start_vllm_engine",
    "vllm_sid_beam_search",
    "vllm_sid_prefix_search",
]

logger = logging.getLogger(__name__)

#: Ranked ``(SID-map row, score)`` pairs of one prompt, best first.
Ranked = list[tuple[int, float]]
Round = list[tuple[list[int], "SamplingParams"]]


@functools.lru_cache(maxsize=64)
def _params(
    max_tokens: int, logprobs: int, stop: int | None = None, catalog: str | None = None
) -> SamplingParams:
    """One shared, read-only ``SamplingParams`` per round shape.

    ``skip_clone``: vLLM deep-copies a request's params on submission unless told not to, and a
    beam search submits ``~num_beams * (L + 1)`` requests per user; nothing here mutates them.
    """
    from vllm import SamplingParams

    return SamplingParams(
        temperature=0.0,
        max_tokens=max_tokens,
        logprobs=logprobs,
        detokenize=False,
        # each round generates 1-2 tokens of a SID: partial by design, not a cut-short answer
        extra_args={
            EXTRA_SID: True,
            EXTRA_SID_ONLY: True,
            EXTRA_SID_PARTIAL: True,
            **({} if stop is None else {EXTRA_STOP: stop}),
            **({} if catalog is None else {EXTRA_CATALOG: catalog}),
        },
        skip_clone=True,
    )


def _prefix_params(
    max_tokens: int,
    logprobs: int,
    prefixes: Any,
    stop: int | None = None,
    catalog: str | None = None,
    filters: Mapping[str, Any] | None = None,
) -> SamplingParams:
    """:func:`_params` with this prompt's allowed SID prefixes (think-ahead) and item filters
    (``recllm_exclude`` / ``recllm_allow``) attached."""
    if prefixes is None and not filters:
        return _params(max_tokens, logprobs, stop, catalog)
    from vllm import SamplingParams

    return SamplingParams(
        temperature=0.0,
        max_tokens=max_tokens,
        logprobs=logprobs,
        detokenize=False,
        extra_args={
            EXTRA_SID: True,
            EXTRA_SID_ONLY: True,
            EXTRA_SID_PARTIAL: True,
            **({} if prefixes is None else {EXTRA_PREFIXES: prefixes}),
            **({} if stop is None else {EXTRA_STOP: stop}),
            **({} if catalog is None else {EXTRA_CATALOG: catalog}),
            **(filters or {}),
        },
    )


def _candidates(out: CompletionOutput, step: int) -> list[tuple[int, float]]:
    """Finite ``(token, logprob)`` entries of generated position ``step``."""
    if out.logprobs is None or len(out.logprobs) <= step:
        raise RuntimeError(
            "vLLM returned no logprobs for a SID beam step; the engine must run with "
            "logprobs_mode='processed_logits' and the recllm SID logits processor "
            "(recllm.decode.vllm_processor.vllm_engine_kwargs)"
        )
    return [(t, lp.logprob) for t, lp in out.logprobs[step].items() if math.isfinite(lp.logprob)]


def sid_beam_rounds(
    prompts: Sequence[Sequence[int]],
    trie: SIDTrie,
    *,
    num_beams: int,
    k: int | None = None,
    length_penalty: float = 1.0,
    prefixes: Sequence[Sequence[Sequence[int]] | None] | None = None,
    depth: int | None = None,
    stop_token_id: int | None = None,
    catalog: str | None = None,
    exclude: Sequence[Sequence[str] | None] | None = None,
    allow: Sequence[Sequence[str] | None] | None = None,
) -> Generator[Round, list[CompletionOutput], list[Any]]:
    """The beam search as rounds of requests (see the module docstring).

    ``catalog``: the content hash of ``trie``'s SID map, sent with every request so that the
    engine's processor constrains with the same map even if the server reloads its catalog
    meanwhile (the processor's ``recllm_catalog`` switch).

    ``stop_token_id``: the token scored after ``<|sid_end|>`` (default: the engine's stop
    token; the processor's ``recllm_stop`` switch).

    ``prefixes`` (per prompt: allowed code prefixes, or None) restricts each prompt's answers
    to items under its prefixes (think-ahead; the processor's ``recllm_prefixes`` switch).
    ``depth`` stops after that many levels and returns, per prompt, the best ``(code tuple,
    summed code log-prob)`` prefixes instead of items (think-ahead's offline half).

    ``exclude`` / ``allow`` (per prompt: item ids, or None) are sent with every request of
    that prompt (the processor's ``recllm_exclude`` / ``recllm_allow`` switches), so the beams
    only ever hold admissible items.

    Yields one round (``(token_ids, SamplingParams)`` per request) at a time and expects the
    requests' first ``CompletionOutput`` back, in order, through ``send``.

    Returns:
        Per prompt, up to ``k`` ``(SID-map row, score)`` pairs, best first.

    Raises:
        ValueError: Bad sizes.
        RuntimeError: The engine does not return the expected logprobs or tokens.
    """
    k = num_beams if k is None else k
    if num_beams < 1 or not 1 <= k <= num_beams:
        raise ValueError(f"need 1 <= k ({k}) <= num_beams ({num_beams}); Fix: raise num_beams")
    ids = trie.token_ids
    levels = trie.levels
    if depth is not None and not 1 <= depth <= levels:
        raise ValueError(
            f"depth must be in 1..{levels}, got {depth}; Fix: a depth of 1 to {levels}"
        )
    code_start = [int(s) for s in trie.code_token_start]
    prompts = [list(p) for p in prompts]
    if prefixes is not None and len(prefixes) != len(prompts):
        raise ValueError(
            f"{len(prefixes)} prefix sets for {len(prompts)} prompts; Fix: one set per prompt"
        )
    allowed = (
        [None] * len(prompts)
        if prefixes is None
        else [None if p is None else [list(map(int, c)) for c in p] for p in prefixes]
    )
    filters: list[dict[str, Any]] = [{} for _ in prompts]
    for key, lists in ((EXTRA_EXCLUDE, exclude), (EXTRA_ALLOW, allow)):
        if lists is None:
            continue
        if len(lists) != len(prompts):
            raise ValueError(
                f"{len(lists)} {key} lists for {len(prompts)} prompts; Fix: one list (or None) "
                "per prompt"
            )
        for f, item_ids in zip(filters, lists, strict=True):
            if item_ids is not None:
                f[key] = [str(i) for i in item_ids]

    # Round 1: the forced begin marker, then the level-0 candidates.
    outs = yield [
        (p, _prefix_params(2, num_beams, a, None, catalog, f))
        for p, a, f in zip(prompts, allowed, filters, strict=True)
    ]
    beams: list[list[tuple[tuple[int, ...], float]]] = []  # per prompt: (code tokens, score)
    begin_scores: list[float] = []
    for out in outs:
        if not out.token_ids or out.token_ids[0] != ids.begin_id:
            raise RuntimeError(
                f"the engine did not force <|sid_begin|> (got {list(out.token_ids)}); the SID "
                "logits processor is not installed or not in sid_only mode"
            )
        begin = out.logprobs[0][ids.begin_id].logprob
        begin_scores.append(begin)
        cands = [((t,), begin + lp) for t, lp in _candidates(out, 1)]
        beams.append(_best(cands, num_beams))

    # Rounds 2..L: one more level per round.
    for level in range(1, levels if depth is None else depth):
        flat = [(p, b) for p, row in enumerate(beams) for b in row]
        outs = yield [
            (
                prompts[p] + [ids.begin_id, *codes],
                _prefix_params(1, num_beams, allowed[p], None, catalog, filters[p]),
            )
            for p, (codes, _) in flat
        ]
        grown: list[list[tuple[tuple[int, ...], float]]] = [[] for _ in prompts]
        lo, hi = code_start[level], code_start[level] + trie.codebook_sizes[level]
        for (p, (codes, score)), out in zip(flat, outs, strict=True):
            for t, lp in _candidates(out, 0):
                if not lo <= t < hi:
                    raise RuntimeError(f"token {t} is not a level-{level} code: constraint off")
                grown[p].append(((*codes, t), score + lp))
        beams = [_best(row, num_beams) for row in grown]
    if depth is not None:
        # drop the begin marker's log-prob: prefix scores are the code log-probs alone
        return [
            [(tuple(t - code_start[lv] for lv, t in enumerate(c)), s - b) for c, s in row[:k]]
            for row, b in zip(beams, begin_scores, strict=True)
        ]

    # Last round: the forced end marker and stop token rescore the finished beams.
    flat = [(p, b) for p, row in enumerate(beams) for b in row]
    outs = yield [
        (
            prompts[p] + [ids.begin_id, *codes],
            _prefix_params(2, 0, allowed[p], stop_token_id, catalog, filters[p]),
        )
        for p, (codes, _) in flat
    ]
    final: list[list[tuple[tuple[int, ...], float]]] = [[] for _ in prompts]
    norm = float(levels + 3) ** length_penalty
    for (p, (codes, score)), out in zip(flat, outs, strict=True):
        if (
            len(out.token_ids) != 2
            or out.token_ids[0] != ids.end_id
            or (stop_token_id is not None and out.token_ids[1] != stop_token_id)
        ):
            raise RuntimeError(f"expected <|sid_end|> + stop token, got {list(out.token_ids)}")
        tail = sum(out.logprobs[i][t].logprob for i, t in enumerate(out.token_ids))
        final[p].append((codes, (score + tail) / norm))

    import torch

    results: list[Ranked] = []
    for row in final:
        row = _best(row, k)
        if not row:
            results.append([])
            continue
        codes = torch.tensor(
            [[t - code_start[lv] for lv, t in enumerate(c)] for c, _ in row], dtype=torch.long
        )
        items = trie.item_index(codes).tolist()
        if min(items) < 0:
            raise RuntimeError("a beam left the SID trie: the constraint was not applied")
        results.append([(i, s) for i, (_, s) in zip(items, row, strict=True)])
    return results


def _best(cands: list[tuple[Any, float]], n: int) -> list[tuple[Any, float]]:
    """The ``n`` highest-scoring entries, best first (stable on ties)."""
    return sorted(cands, key=lambda c: -c[1])[:n]


def vllm_sid_beam_search(
    llm: LLM,
    prompts: Sequence[Sequence[int]],
    trie: SIDTrie,
    *,
    num_beams: int,
    k: int | None = None,
    length_penalty: float = 1.0,
    prefixes: Sequence[Sequence[Sequence[int]] | None] | None = None,
    stop_token_id: int | None = None,
    exclude: Sequence[Sequence[str] | None] | None = None,
    allow: Sequence[Sequence[str] | None] | None = None,
) -> list[Ranked]:
    """:func:`sid_beam_rounds` on an offline ``vllm.LLM`` built with
    :func:`~recllm.decode.vllm_processor.vllm_engine_kwargs` (token-id prompts in);
    ``prefixes``: per prompt, the allowed SID prefixes (think-ahead) or None;
    ``stop_token_id``: the token scored after the SID (default: the engine's);
    ``exclude`` / ``allow``: per prompt, item ids to skip / the only ones to allow, or None."""
    rounds = sid_beam_rounds(
        prompts,
        trie,
        num_beams=num_beams,
        k=k,
        length_penalty=length_penalty,
        prefixes=prefixes,
        stop_token_id=stop_token_id,
        exclude=exclude,
        allow=allow,
    )
    return _drive(llm, rounds)


def vllm_sid_prefix_search(
    llm: LLM,
    prompts: Sequence[Sequence[int]],
    trie: SIDTrie,
    *,
    num_beams: int,
    depth: int,
) -> list[list[tuple[tuple[int, ...], float]]]:
    """Per prompt, the best ``num_beams`` SID prefixes of ``depth`` levels on a ``vllm.LLM``
    (codes, summed code log-prob), best first: think-ahead's offline beam."""
    return _drive(llm, sid_beam_rounds(prompts, trie, num_beams=num_beams, depth=depth))


def _drive(llm: LLM, rounds: Generator) -> Any:
    from vllm.inputs import TokensPrompt

    requests = next(rounds)
    while True:
        outs = llm.generate(
            [TokensPrompt(prompt_token_ids=ids) for ids, _ in requests],
            [params for _, params in requests],
            use_tqdm=False,
        )
        try:
            requests = rounds.send([o.outputs[0] for o in outs])
        except StopIteration as done:
            return done.value


async def collect_completions(stream: Any, n: int) -> list[Any]:
    """The ``n`` completions of one vLLM request with ``n`` samples, in sample order.

    An engine client streams a request with ``n > 1`` as messages that each carry the samples
    that moved since the previous one (vLLM's ``ParentRequest.get_outputs``; how many a message
    holds depends on how far the reader lags), so the last message alone may hold one sample.
    Every message is read and the newest completion of each sample index kept.

    Raises:
        RuntimeError: The stream ended without all ``n`` samples (an engine fault, not the
            request's).
    """
    latest: dict[int, Any] = {}
    async for out in stream:
        for completion in out.outputs:
            latest[completion.index] = completion
    if sorted(latest) != list(range(n)):
        raise RuntimeError(
            f"vLLM returned samples {sorted(latest)} of a request for {n} (indices 0..{n - 1})"
        )
    return [latest[i] for i in range(n)]


async def async_vllm_sid_beam_search(
    engine: Any,
    prompts: Sequence[Sequence[int]],
    trie: SIDTrie,
    *,
    num_beams: int,
    k: int | None = None,
    length_penalty: float = 1.0,
    stop_token_id: int | None = None,
    catalog: str | None = None,
    exclude: Sequence[Sequence[str] | None] | None = None,
    allow: Sequence[Sequence[str] | None] | None = None,
) -> list[Ranked]:
    """:func:`sid_beam_rounds` on vLLM's async engine client (the API server's ``AsyncLLM``);
    ``catalog``: the content hash of ``trie``'s SID map (see :func:`sid_beam_rounds`);
    ``exclude`` / ``allow``: per prompt, item ids to skip / the only ones to allow."""
    from vllm.inputs import TokensPrompt

    async def one(ids: list[int], params: SamplingParams) -> CompletionOutput:
        request_id = f"recllm-beam-{uuid.uuid4().hex}"
        stream = engine.generate(TokensPrompt(prompt_token_ids=ids), params, request_id)
        return (await collect_completions(stream, 1))[0]

    rounds = sid_beam_rounds(
        prompts,
        trie,
        num_beams=num_beams,
        k=k,
        length_penalty=length_penalty,
        stop_token_id=stop_token_id,
        catalog=catalog,
        exclude=exclude,
        allow=allow,
    )
    requests = next(rounds)
    while True:
        outs = await asyncio.gather(*(one(ids, params) for ids, params in requests))
        try:
            requests = rounds.send(list(outs))
        except StopIteration as done:
            return done.value


def start_vllm_engine(
    model_dir: str | Path,
    *,
    stop_token_id: int | None,
    dtype: str = "auto",
    max_k: int = 20,
    vllm_kwargs: Mapping[str, Any] | None = None,
) -> LLM:
    """A ``vllm.LLM`` on a recllm model directory, set up for SID beam search: the SID
    processor (:func:`~recllm.decode.vllm_processor.vllm_engine_kwargs`), processed-logit
    logprobs, prefix caching, batch sizes that fit a beam round and, on CPU, a KV cache of
    :data:`~recllm.decode.vllm_compat.CPU_KV_SHARE` of RAM. ``vllm_kwargs`` override any of
    them (``gpu_memory_utilization``, ``tensor_parallel_size``, ``max_model_len``...)."""
    from vllm import LLM

    from recllm.decode.vllm_compat import cpu_memory_share, cpu_scheduler_cores
    from recllm.decode.vllm_processor import vllm_engine_kwargs

    kwargs: dict[str, Any] = {
        "model": str(model_dir),
        "dtype": dtype,
        "seed": 0,
        "max_logprobs": max(max_k, 20),
        # Beam rounds resubmit prompt + beam: cached prompt blocks make that a few tokens each.
        "enable_prefix_caching": True,
        # torch.compile of the graph takes minutes on CPU and gains little for small models.
        "enforce_eager": True,
        # Prefix caching reuses whole blocks only, so each beam request recomputes the prompt's
        # last partial block: vLLM's CPU default of 128 tokens made batch beam search 2.4x slower
        # than 32 (the smallest the CPU attention backend accepts) on SmolLM2-135M.
        "block_size": 32,
        # One beam round submits users x beams requests at once; vLLM's CPU defaults (256
        # sequences, 4,096 tokens per step) split a 32-user round of 10 beams into several steps.
        # bench_serve: +10% recommendations/s on the tiny model.
        "max_num_seqs": 1024,
        "max_num_batched_tokens": 16384,
        **vllm_engine_kwargs(model_dir, stop_token_id=stop_token_id),
    }
    kwargs.update(vllm_kwargs or {})
    share = cpu_memory_share(kwargs)
    if share is not None:
        kwargs["gpu_memory_utilization"] = share
    cpu_scheduler_cores()
    logger.info("starting vLLM on %s (dtype %s)", model_dir, kwargs["dtype"])
    from recllm.decode.vllm_lifetime import mark_engine_owner

    mark_engine_owner()  # the engine's processes end with this one, even after kill -9
    return LLM(**kwargs)
