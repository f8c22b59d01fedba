"""Think, then answer with a catalog SID (OneRec-Think), on transformers and on vLLM.

A model trained by ``recipes/onerec_think.py`` answers a reasoning prompt with
``<think>rationale</think>`` and then one SID. Decoding it takes two stages per user:

1. **Think.** Free text after the assistant's ``<think>`` opener, sampled (or greedy), until
   ``</think>`` or ``max_think_tokens``. Nothing constrains this text except that any SID span it
   opens must be a catalog SID (:class:`~recllm.decode.processor.SIDLogitsProcessor` in its
   free-text mode). ``R`` rationales are drawn per user (``rationales``).
2. **Answer.** After each rationale, the prompt is rebuilt exactly as training rendered it (the
   chat template applied to the prompt and an assistant turn ``<think>\\nrationale\\n</think>\\n``
   then the SID, cut right before ``<|sid_begin|>``) and the SID is decoded with the full-prefix
   trie by :func:`~recllm.decode.beam.sid_beam_search` (``num_beams`` wide, with the stop token),
   so every answer is a catalog item.

**Merging the R paths.** Each path ``r`` gives its beams' sequence log-probs
``s_r(i) = log p(SID_i | prompt, rationale_r)`` (begin marker, codes, end marker, stop token;
not length-normalised). An item's merged score is their log-mean-exp over the paths,
``log (1/R) sum_r exp(s_r(i))``, with ``exp(s_r(i)) = 0`` where item ``i`` is not among path
``r``'s beams: the Monte-Carlo estimate of ``log p(i | prompt)`` with the rationale integrated out
(sampled at temperature 1 it is unbiased in probability, up to the beam truncation). Items are
ranked by it; ties keep the order of first appearance.

**Think-ahead** (OneRec-Think appendix A.3.4): :func:`think_ahead_prefixes` runs stage 1 with
``paths`` rationales, then a beam over the first ``depth`` SID levels only after each, and keeps
the union of those prefixes per user: the set :class:`~recllm.decode.prefixes.PrefixSets`
restricts a fast model's trie to at request time.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from recllm.decode.generate import Recommendation, _title, left_pad
from recllm.decode.trie import SIDTrie

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from recllm.data.types import Catalog
    from recllm.decode.options import DecodeOptions
    from recllm.sid.sidmap import SIDMap

__all__ = [
    "THINK_CLOSE",
    "THINK_OPEN",
    "ThinkOptions",
    "ThinkResult",
    "athink_then_sid",
    "merge_paths",
    "merge_results",
    "sid_prompt_texts",
    "think_ahead_prefixes",
    "think_prefix_texts",
    "think_then_sid",
]

logger = logging.getLogger(__name__)

THINK_OPEN = "<think>\n"
THINK_CLOSE = "</think>"
_MARK = "\x00RECLLM_THINK\x00"


@dataclass(frozen=True)
class ThinkOptions:
    """How to think (``recllm eval --think``, :func:`think_then_sid`).

    Attributes:
        rationales: ``R``, rationales sampled per user; their SID beams are merged.
        max_think_tokens: Longest rationale; a longer one is cut and closed.
        temperature: Sampling temperature; 0: greedy (then ``R`` must be 1).
        top_p: Nucleus sampling.
        seed: Seed of the rationale sampling (transformers; vLLM uses the engine's seed).
    """

    rationales: int = 1
    max_think_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0


@dataclass(frozen=True)
class ThinkResult:
    """One user's answer.

    Attributes:
        recommendations: Merged items, best first (score: the merged log-prob).
        rationales: The ``R`` rationales, in sampling order.
        closed: Per rationale, whether the model closed ``</think>`` within the budget (else it
            was cut at ``max_think_tokens`` and closed by the decoder).
        paths: Per rationale, its beam ``[(item id, log-prob)]`` before merging.
    """

    recommendations: list[Recommendation]
    rationales: list[str]
    closed: list[bool]
    paths: list[list[tuple[str, float]]]


def _render(
    tokenizer: PreTrainedTokenizerBase,
    prompt: Sequence[Mapping[str, Any]],
    assistant: str,
    chat_template_kwargs: Mapping[str, Any] | None,
) -> str:
    messages = [*list(prompt), {"role": "assistant", "content": assistant}]
    return tokenizer.apply_chat_template(
        messages, tokenize=False, **dict(chat_template_kwargs or {})
    )


def think_prefix_texts(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Sequence[Mapping[str, Any]]],
    *,
    chat_template_kwargs: Mapping[str, Any] | None = None,
) -> list[str]:
    """Per chat prompt, the text a rationale is generated after: the conversation as training
    rendered it, up to and including the assistant's ``<think>`` opener."""
    out = []
    for prompt in prompts:
        if isinstance(prompt, str):
            raise TypeError("thinking needs chat prompts (a list of messages), not strings")
        text = _render(
            tokenizer, prompt, f"{THINK_OPEN}{_MARK}\n{THINK_CLOSE}\n", chat_template_kwargs
        )
        out.append(text[: text.index(_MARK)])
    return out


def sid_prompt_texts(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Sequence[Mapping[str, Any]]],
    rationales: Sequence[str],
    sid_begin: str,
    *,
    chat_template_kwargs: Mapping[str, Any] | None = None,
) -> list[str]:
    """Per (prompt, rationale), the text the SID is decoded after: the conversation with the
    rationale inside ``<think>``, as training rendered it, cut right before ``sid_begin``."""
    out = []
    for prompt, rationale in zip(prompts, rationales, strict=True):
        text = _render(
            tokenizer,
            prompt,
            f"{THINK_OPEN}{rationale}\n{THINK_CLOSE}\n{sid_begin}",
            chat_template_kwargs,
        )
        out.append(text[: text.rindex(sid_begin)])
    return out


def merge_paths(paths: Sequence[Sequence[tuple[Any, float]]], k: int) -> list[tuple[Any, float]]:
    """Log-mean-exp merge of per-path ``(item, log-prob)`` beams (see the module docstring)."""
    r = len(paths)
    if r == 0:
        return []
    best: dict[Any, list[float]] = {}
    for path in paths:
        for item, score in path:
            best.setdefault(item, []).append(score)
    merged = []
    for item, scores in best.items():
        top = max(scores)
        merged.append((item, top + math.log(sum(math.exp(s - top) for s in scores) / r)))
    merged.sort(key=lambda x: -x[1])  # stable: ties keep first appearance
    return merged[:k]


def _close(text: str) -> tuple[str, bool]:
    """The rationale in generated text, and whether ``</think>`` closed it."""
    at = text.find(THINK_CLOSE)
    if at < 0:
        return text.strip(), False
    return text[:at].strip(), True


@contextlib.contextmanager
def _seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    if seed is None:
        yield
        return
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@torch.no_grad()
def _greedy(rationales: int, temperature: float) -> bool:
    """Whether thinking is greedy (temperature 0), which gives one rationale only."""
    if rationales < 1:
        raise ValueError(f"rationales must be >= 1, got {rationales}; Fix: rationales=1 or more")
    if temperature <= 0 and rationales > 1:
        raise ValueError("greedy thinking gives one rationale; Fix: rationales=1 or temperature>0")
    return temperature <= 0


def _think_stage(
    model: PreTrainedModel | None,
    engine: Any,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Sequence[Mapping[str, Any]]],
    trie: SIDTrie,
    *,
    rationales: int,
    max_think_tokens: int,
    temperature: float,
    top_p: float,
    batch_size: int,
    seed: int | None,
    progress: bool,
    chat_template_kwargs: Mapping[str, Any] | None,
) -> tuple[list[list[tuple[str, bool]]], list[str]]:
    """Stage 1 on ``engine`` (vLLM) or ``model`` (transformers): per prompt ``rationales``
    ``(text, closed)`` pairs, and per (prompt, rationale) the text that opens its SID answer."""
    texts = think_prefix_texts(tokenizer, prompts, chat_template_kwargs=chat_template_kwargs)
    kwargs = dict(
        rationales=rationales,
        max_think_tokens=max_think_tokens,
        temperature=temperature,
        top_p=top_p,
    )
    if engine is not None:
        thought = _vllm_think(engine, tokenizer, texts, **kwargs)
    else:
        thought = _hf_think(
            model,
            tokenizer,
            texts,
            trie,
            batch_size=batch_size,
            seed=seed,
            progress=progress,
            **kwargs,
        )
    sid_prompts = sid_prompt_texts(
        tokenizer,
        [p for p in prompts for _ in range(rationales)],
        [t for row in thought for t, _ in row],
        tokenizer.convert_ids_to_tokens(trie.token_ids.begin_id),
        chat_template_kwargs=chat_template_kwargs,
    )
    return thought, sid_prompts


def _hf_think(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prefixes: Sequence[str],
    trie: SIDTrie,
    *,
    rationales: int,
    max_think_tokens: int,
    temperature: float,
    top_p: float,
    batch_size: int,
    seed: int | None,
    progress: bool,
) -> list[list[tuple[str, bool]]]:
    """Stage 1 on transformers: per prefix, ``rationales`` ``(text, closed)`` pairs."""
    from transformers import GenerationConfig

    from recllm.decode.generate import _without_model_generation_defaults
    from recllm.decode.processor import SIDLogitsProcessor

    greedy = _greedy(rationales, temperature)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    cfg = GenerationConfig(
        do_sample=not greedy,
        temperature=temperature if not greedy else 1.0,
        top_p=top_p if not greedy else 1.0,
        top_k=0,
        num_beams=1,
        num_return_sequences=rationales,
        max_new_tokens=max_think_tokens,
        stop_strings=[THINK_CLOSE],
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=pad,
        repetition_penalty=1.0,
        use_cache=True,
        return_dict_in_generate=True,
    )
    # free text, but any SID span it opens stays a catalog SID
    processors = [SIDLogitsProcessor(trie, check=False)]
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prefixes]
    starts = range(0, len(encoded), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="think", unit="batch")
    out: list[list[tuple[str, bool]]] = []
    with _seeded(seed, model.device), _without_model_generation_defaults(model):
        for start in starts:
            ids, mask = left_pad(encoded[start : start + batch_size], pad, model.device)
            gen = model.generate(
                input_ids=ids,
                attention_mask=mask,
                generation_config=cfg,
                logits_processor=processors,
                tokenizer=tokenizer,
            )
            new = gen.sequences[:, ids.shape[1] :].tolist()
            texts = tokenizer.batch_decode(new, skip_special_tokens=False)
            for p in range(ids.shape[0]):
                rows = texts[p * rationales : (p + 1) * rationales]
                out.append([_close(_strip_pad(t, tokenizer)) for t in rows])
    return out


def _strip_pad(text: str, tokenizer: PreTrainedTokenizerBase) -> str:
    for tok in {tokenizer.pad_token, tokenizer.eos_token} - {None}:
        text = text.split(tok)[0] if tok in text else text
    return text


def _per_engine_call(func: Any, call: Mapping[str, Any], desc: str) -> list[Any]:
    """``func(**call)`` on slices of ``batch_size`` prompts, results joined in order (a progress
    bar over the slices when ``call["progress"]``)."""
    prompts, size = call["prompts"], call["batch_size"]
    starts = range(0, len(prompts), size)
    if call["progress"]:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=desc, unit="batch")
    return [
        r
        for start in starts
        for r in func(**{**call, "prompts": prompts[start : start + size], "progress": False})
    ]


def think_then_sid(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Sequence[Mapping[str, Any]]],
    sid_map: SIDMap,
    *,
    k: int = 10,
    num_beams: int | None = None,
    rationales: int = 1,
    max_think_tokens: int = 256,
    temperature: float = 1.0,
    top_p: float = 1.0,
    batch_size: int = 8,
    seed: int | None = 0,
    trie: SIDTrie | None = None,
    titles: Catalog | Mapping[str, str] | None = None,
    chat_template_kwargs: Mapping[str, Any] | None = None,
    progress: bool = False,
    engine: Any = None,
) -> list[ThinkResult]:
    """Think, then recommend: per prompt ``rationales`` rationales, a constrained SID beam after
    each, merged (see the module docstring).

    Args:
        model: The reasoning model (transformers); unused when ``engine`` is given.
        tokenizer: Its tokenizer.
        prompts: Reasoning chat prompts (:func:`recllm.tasks.prompting.build_prompts` with
            ``think=True``).
        sid_map: The model's SID map.
        k: Items returned per prompt.
        num_beams: SID beam width per rationale (``k`` when None; at least ``k``).
        rationales: ``R``, rationales per prompt.
        max_think_tokens: Longest rationale; a longer one is cut there and closed.
        temperature: Sampling temperature of the rationales; ``0``: greedy (``R`` must be 1).
        top_p: Nucleus sampling of the rationales.
        batch_size: Prompts per batch (the think stage runs ``batch_size * R`` rows).
        seed: Seed of the rationale sampling (the global RNG is restored afterwards).
        trie: A prebuilt trie of ``sid_map``.
        titles: Catalog or ``item -> title`` for the recommendations.
        chat_template_kwargs: Extra ``apply_chat_template`` arguments.
        progress: Progress bars.
        engine: A ``vllm.LLM`` built by :func:`recllm.decode.vllm_beam.start_vllm_engine` (the
            SID logits processor installed): both stages run on it instead of ``model``.

    Raises:
        ValueError: Bad sizes, or greedy thinking with ``R > 1``.
    """
    call = dict(locals())  # the arguments, for batches of users on vLLM
    from recllm.decode.options import DecodeOptions
    from recllm.vocab import SID_FORMAT

    if engine is not None and len(prompts) > batch_size:
        # vLLM takes a whole list at once; more sequences than its KV cache holds are
        # preempted and recomputed over and over (943 users x 2 rationales on a 7 GiB CPU cache
        # ran for 90 minutes without finishing), so users go in batches of batch_size
        return _per_engine_call(think_then_sid, call, "think, then SID")
    beams = k if num_beams is None else num_beams
    if beams < k:
        raise ValueError(f"num_beams ({beams}) must be >= k ({k}); Fix: raise num_beams or lower k")
    _greedy(rationales, temperature)  # bad R / greedy R > 1: before any work
    if trie is None:
        trie = SIDTrie.from_sid_map(
            sid_map, SID_FORMAT.token_ids(tokenizer, sid_map.codebook_sizes)
        )
    thought, sid_prompts = _think_stage(
        model,
        engine,
        tokenizer,
        prompts,
        trie,
        rationales=rationales,
        max_think_tokens=max_think_tokens,
        temperature=temperature,
        top_p=top_p,
        batch_size=batch_size,
        seed=seed,
        progress=progress,
        chat_template_kwargs=chat_template_kwargs,
    )
    options = DecodeOptions(
        k=beams, num_beams=beams, batch_size=batch_size * rationales, engine="sid_beam"
    )
    per_path = _answer_stage(
        model, engine, tokenizer, sid_prompts, sid_map, trie, options, progress
    )
    return merge_results(thought, per_path, rationales, k, titles)


def _answer_stage(
    model: PreTrainedModel | None,
    engine: Any,
    tokenizer: PreTrainedTokenizerBase,
    sid_prompts: Sequence[str],
    sid_map: SIDMap,
    trie: SIDTrie,
    options: DecodeOptions,
    progress: bool,
) -> list[list[tuple[str, float]]]:
    """Stage 2 on ``engine`` (vLLM) or ``model``: per (prompt, rationale) its SID beam
    ``[(item id, sequence log-prob)]`` (the scores are length-normalised over the SID's
    ``levels + 3`` tokens by both searches; undone here)."""
    from recllm.decode.generate import generate_sids

    tokens = trie.levels + 3
    if engine is not None:
        from recllm.decode.vllm_beam import vllm_sid_beam_search

        encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in sid_prompts]
        beams = options.num_beams
        ranked = vllm_sid_beam_search(engine, encoded, trie, num_beams=beams, k=beams)
        return [[(sid_map.item_ids[row], s * tokens) for row, s in r] for r in ranked]
    recs = generate_sids(
        model, tokenizer, sid_prompts, sid_map, options, trie=trie, progress=progress
    )
    return [[(r.item_id, r.score * tokens) for r in row] for row in recs]


def merge_results(
    thought: Sequence[Sequence[tuple[str, bool]]],
    per_path: Sequence[Sequence[tuple[str, float]]],
    rationales: int,
    k: int,
    titles: Catalog | Mapping[str, str] | None,
) -> list[ThinkResult]:
    """Per prompt: its rationales and the merge of their SID beams (:func:`merge_paths`)."""
    results = []
    for p in range(len(thought)):
        paths = per_path[p * rationales : (p + 1) * rationales]
        merged = merge_paths(paths, k)
        results.append(
            ThinkResult(
                recommendations=[
                    Recommendation(i, s, _title(titles, i) if titles is not None else None)
                    for i, s in merged
                ],
                rationales=[t for t, _ in thought[p]],
                closed=[c for _, c in thought[p]],
                paths=[list(x) for x in paths],
            )
        )
    return results


async def athink_then_sid(
    engine: Any,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Sequence[Mapping[str, Any]]],
    sid_map: SIDMap,
    trie: SIDTrie,
    *,
    k: int = 10,
    num_beams: int | None = None,
    options: ThinkOptions | None = None,
    titles: Catalog | Mapping[str, str] | None = None,
) -> list[ThinkResult]:
    """:func:`think_then_sid` on vLLM's async engine client (the API server's engine)."""
    import asyncio
    import uuid

    from vllm import TokensPrompt

    from recllm.decode.vllm_beam import async_vllm_sid_beam_search, collect_completions

    o = options or ThinkOptions()
    beams = k if num_beams is None else num_beams
    params = _think_params(o.rationales, o.max_think_tokens, o.temperature, o.top_p)
    heads = think_prefix_texts(tokenizer, prompts)

    async def one(text: str) -> list[tuple[str, bool]]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        rid = f"recllm-think-{uuid.uuid4().hex}"
        stream = engine.generate(TokensPrompt(prompt_token_ids=ids), params, rid)
        done = await collect_completions(stream, o.rationales)
        return [_close(_strip_pad(c.text, tokenizer)) for c in done]

    thought = await asyncio.gather(*(one(h) for h in heads))
    token_ids = trie.token_ids
    sid_prompts = sid_prompt_texts(
        tokenizer,
        [p for p in prompts for _ in range(o.rationales)],
        [t for row in thought for t, _ in row],
        tokenizer.convert_ids_to_tokens(token_ids.begin_id),
    )
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in sid_prompts]
    ranked = await async_vllm_sid_beam_search(
        engine, encoded, trie, num_beams=beams, k=beams, catalog=sid_map.content_hash
    )  # the map's hash: the engine keeps it for this request across a served catalog reload
    per_path = [[(sid_map.item_ids[row], s * (trie.levels + 3)) for row, s in r] for r in ranked]
    return merge_results(thought, per_path, o.rationales, k, titles)


def _think_params(rationales: int, max_think_tokens: int, temperature: float, top_p: float):
    """vLLM sampling of ``rationales`` rationales, stopped at ``</think>``; SID spans inside
    stay catalog SIDs (the processor's free-text mode)."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    from recllm.decode.vllm_processor import EXTRA_SID

    greedy = _greedy(rationales, temperature)
    return SamplingParams(
        n=rationales,
        # one message per request with all n samples (the offline LLM asks for it anyway)
        output_kind=RequestOutputKind.FINAL_ONLY,
        temperature=0.0 if greedy else temperature,
        top_p=1.0 if greedy else top_p,
        max_tokens=max_think_tokens,
        stop=[THINK_CLOSE],
        include_stop_str_in_output=True,
        skip_special_tokens=False,
        spaces_between_special_tokens=False,  # the text transformers decodes
        extra_args={EXTRA_SID: True},
    )


def think_ahead_prefixes(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Sequence[Mapping[str, Any]]],
    sid_map: SIDMap,
    *,
    paths: int = 4,
    prefixes: int = 8,
    depth: int = 2,
    max_think_tokens: int = 256,
    temperature: float = 1.0,
    top_p: float = 1.0,
    batch_size: int = 8,
    seed: int | None = 0,
    trie: SIDTrie | None = None,
    chat_template_kwargs: Mapping[str, Any] | None = None,
    progress: bool = False,
    engine: Any = None,
) -> list[list[tuple[int, ...]]]:
    """Think-ahead: per prompt, the union over ``paths`` sampled rationales of the best
    ``prefixes`` SID prefixes of ``depth`` levels decoded after each (see the module docstring).

    Returns:
        Per prompt, its distinct code prefixes, in order of first appearance (path by path, best
        first within a path).
    """
    call = dict(locals())  # the arguments, for batches of users on vLLM
    from recllm.decode.beam import sid_beam_search
    from recllm.vocab import SID_FORMAT

    if engine is not None and len(prompts) > batch_size:  # see think_then_sid: KV cache size
        return _per_engine_call(think_ahead_prefixes, call, "think-ahead")
    if trie is None:
        trie = SIDTrie.from_sid_map(
            sid_map, SID_FORMAT.token_ids(tokenizer, sid_map.codebook_sizes)
        )
    if not 1 <= depth <= trie.levels:
        raise ValueError(
            f"depth must be in 1..{trie.levels}, got {depth}; Fix: a depth of 1 to {trie.levels} "
            "SID levels"
        )
    _, sid_prompts = _think_stage(
        model,
        engine,
        tokenizer,
        prompts,
        trie,
        rationales=paths,
        max_think_tokens=max_think_tokens,
        temperature=temperature,
        top_p=top_p,
        batch_size=batch_size,
        seed=seed,
        progress=progress,
        chat_template_kwargs=chat_template_kwargs,
    )
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in sid_prompts]
    found: list[list[tuple[int, ...]]] = []
    if engine is not None:
        from recllm.decode.vllm_beam import vllm_sid_prefix_search

        ranked = vllm_sid_prefix_search(engine, encoded, trie, num_beams=prefixes, depth=depth)
        per_path = [[codes for codes, _ in row] for row in ranked]
    else:
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        per_path = []
        step = batch_size * paths
        for start in range(0, len(encoded), step):
            ids, mask = left_pad(encoded[start : start + step], pad, model.device)
            out = sid_beam_search(model, ids, mask, trie, num_beams=prefixes, depth=depth)
            alive = torch.isfinite(out.scores).cpu()
            for row, live in zip(out.codes.cpu().tolist(), alive.tolist(), strict=True):
                per_path.append([tuple(c) for c, ok in zip(row, live, strict=True) if ok])
    for p in range(len(prompts)):
        seen: dict[tuple[int, ...], None] = {}
        for path in per_path[p * paths : (p + 1) * paths]:
            for c in path:
                seen.setdefault(tuple(c), None)
        found.append(list(seen))
    return found


def _vllm_think(
    engine: Any,
    tokenizer: PreTrainedTokenizerBase,
    prefixes: Sequence[str],
    *,
    rationales: int,
    max_think_tokens: int,
    temperature: float,
    top_p: float,
) -> list[list[tuple[str, bool]]]:
    """Stage 1 on a ``vllm.LLM``: ``n = rationales`` samples per prefix (:func:`_think_params`)."""
    from vllm import TokensPrompt

    params = _think_params(rationales, max_think_tokens, temperature, top_p)
    requests = [
        TokensPrompt(prompt_token_ids=tokenizer(p, add_special_tokens=False)["input_ids"])
        for p in prefixes
    ]
    outs = engine.generate(requests, params, use_tqdm=False)
    return [[_close(_strip_pad(o.text, tokenizer)) for o in out.outputs] for out in outs]
