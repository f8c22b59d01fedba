"""Prompts in, ranked catalog items out: constrained SID generation for recommendation prompts.

:func:`generate_sids` tokenizes chat messages (or rendered strings), left-pads them in batches,
generates answers that are exactly one SID each (``SIDLogitsProcessor(sid_only=True)``) and maps
the SIDs back to item ids through the trie. Its settings come as one frozen
:class:`recllm.decode.options.DecodeOptions` (checked when made), its per-call inputs (titles, a
prebuilt trie, think-ahead prefixes) as keywords. Decoding modes (``DecodeOptions.mode``):

- ``"beam"``: beam search, ``num_return_sequences=k``. SIDs are unique in the map, so the beams
  are distinct items. ``engine="sid_beam"`` runs :func:`recllm.decode.beam.sid_beam_search`
  (same items and scores, several times faster); ``engine="generate"`` runs ``model.generate``.
- ``"greedy"``: one item per prompt.
- ``"sample"``: ``k`` samples per prompt (seeded), duplicates merged.

``constrained=False`` switches the trie off: plain decoding over the whole vocabulary, as an
unconstrained model would answer. Answers are read from the generated token ids (never from
decoded text): an answer is valid when its tokens are exactly ``<|sid_begin|>``, one code token
per level, ``<|sid_end|>`` and the stop token, and the codes are a catalog SID. Anything else (a
malformed answer, or a well-formed SID of no catalog item) comes back as a
:class:`Recommendation` whose ``item_id`` is None, in its ranked slot, so the invalid rate of
:mod:`recllm.eval.metrics` counts it. That rate is the control that gives the constrained run's
0 its meaning.

Every ``model.generate`` call gets an explicit :class:`transformers.GenerationConfig`, and the
model's own ``generation_config`` (what ``generation_config.json`` loaded, e.g. Qwen3's
``do_sample=True, temperature=0.6, top_k=20``) is set aside for the call: transformers fills
every field the passed config leaves unset from it, which would silently turn beam search into
sampling or add a repetition penalty.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from recllm.decode.answers import (
    Recommendation,
    _free_answers,
    _parse,
    _ranked,
    _sequence_logprob,
)
from recllm.decode.answers import _title as _title  # text.py and think.py import it from here
from recllm.decode.beam import sid_beam_search
from recllm.decode.options import DecodeMode, DecodeOptions
from recllm.decode.processor import SIDLogitsProcessor
from recllm.decode.trie import SIDTrie
from recllm.vocab.format import SIDTokenIds

if TYPE_CHECKING:
    from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

    from recllm.data.types import Catalog
    from recllm.decode.filters import ItemFilter
    from recllm.decode.fresh import FreshItems
    from recllm.decode.prefixes import PrefixSets
    from recllm.sid.sidmap import SIDMap

__all__ = [
    "DecodeOptions",
    "Prompt",
    "Recommendation",
    "encode_prompts",
    "generate_sids",
    "sid_generation_config",
]

logger = logging.getLogger(__name__)

#: A prompt: chat messages (``[{"role": "user", "content": ...}]``, rendered with the
#: tokenizer's chat template and a generation prompt) or an already rendered string.
Prompt = str | Sequence[Mapping[str, Any]]

# Hugging Face pads beam search with duplicate beams scored about -1e9 when fewer items than
# beams are reachable; anything below this is one of them.
_GHOST_SCORE = -1.0e8

#: The settings of a call that passes none (frozen, so one shared object is safe).
_DEFAULT_OPTIONS = DecodeOptions()


def sid_generation_config(
    *,
    mode: DecodeMode,
    levels: int,
    num_beams: int = 1,
    k: int = 1,
    stop_token_id: int,
    pad_token_id: int,
    length_penalty: float = 1.0,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float = 1.0,
) -> GenerationConfig:
    """The explicit generation config of a SID answer (``begin + L codes + end + stop``).

    Every field that changes which tokens are picked is set, ``do_sample`` included.

    Args:
        mode: ``"beam"``, ``"greedy"`` or ``"sample"``.
        levels: SID levels ``L``; ``max_new_tokens = L + 3``.
        num_beams: Beams (beam mode).
        k: Sequences returned per prompt.
        stop_token_id: EOS / end-of-turn token closing the answer.
        pad_token_id: Padding token id.
        length_penalty: Beam score = summed log-prob / length ** length_penalty.
        temperature: Sampling temperature.
        top_k: Sampling top-k (None or 0: off).
        top_p: Sampling nucleus (1.0: off).
    """
    from transformers import GenerationConfig

    common: dict[str, Any] = {
        "max_new_tokens": levels + 3,
        "min_new_tokens": 0,
        "num_return_sequences": k,
        "eos_token_id": stop_token_id,
        "pad_token_id": pad_token_id,
        "use_cache": True,
        "return_dict_in_generate": True,
        "repetition_penalty": 1.0,
        "no_repeat_ngram_size": 0,
        "renormalize_logits": False,
    }
    if mode == "beam":
        # One beam runs as greedy search in transformers, which reports no sequence scores:
        # keep the logits to compute them.
        return GenerationConfig(
            do_sample=False,
            num_beams=num_beams,
            length_penalty=length_penalty,
            early_stopping=False,
            output_scores=num_beams > 1,
            output_logits=num_beams == 1,
            **common,
        )
    if mode == "greedy":
        return GenerationConfig(do_sample=False, num_beams=1, output_logits=True, **common)
    if mode == "sample":
        return GenerationConfig(
            do_sample=True,
            num_beams=1,
            temperature=temperature,
            top_k=top_k or 0,
            top_p=top_p,
            output_logits=True,
            **common,
        )
    raise ValueError(f"mode must be 'beam', 'greedy' or 'sample', not {mode!r}")


@contextlib.contextmanager
def _without_model_generation_defaults(model: PreTrainedModel) -> Iterator[None]:
    """Hide ``model.generation_config`` during a call, so none of its fields leak in.

    transformers fills the fields an explicit config leaves at None from the model's
    generation config (``GenerationMixin._prepare_generation_config``); a blank one in its place
    leaves only transformers' global defaults.
    """
    from transformers import GenerationConfig

    saved = model.generation_config
    model.generation_config = GenerationConfig()
    try:
        yield
    finally:
        model.generation_config = saved


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Prompt],
    *,
    chat_template_kwargs: Mapping[str, Any] | None = None,
) -> list[list[int]]:
    """Token ids of each prompt: messages through the chat template (with the generation
    prompt), strings as they are (no special tokens added)."""
    texts = []
    for prompt in prompts:
        if isinstance(prompt, str):
            texts.append(prompt)
        else:
            texts.append(
                tokenizer.apply_chat_template(
                    list(prompt),
                    tokenize=False,
                    add_generation_prompt=True,
                    **(chat_template_kwargs or {}),
                )
            )
    return [list(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def left_pad(
    sequences: list[list[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` of token-id lists, left-padded to the longest."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if seq:
            ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
            mask[row, width - len(seq) :] = 1
    return ids.to(device), mask.to(device)


@torch.no_grad()
def generate_sids(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Prompt],
    sid_map: SIDMap,
    options: DecodeOptions = _DEFAULT_OPTIONS,
    *,
    titles: Catalog | Mapping[str, str] | None = None,
    trie: SIDTrie | None = None,
    prefixes: PrefixSets | None = None,
    item_filter: ItemFilter | None = None,
    fresh: FreshItems | None = None,
    progress: bool = False,
) -> list[list[Recommendation]]:
    """Recommend catalog items for each prompt by constrained SID generation.

    Args:
        model: A causal LM extended for ``sid_map`` (:func:`recllm.vocab.extend_vocab`).
        tokenizer: Its tokenizer.
        prompts: Chat messages or rendered strings, one per user.
        sid_map: The SID map the model was trained with.
        options: How to decode (:class:`recllm.decode.options.DecodeOptions`: k, beams, mode,
            engine, sampling, the constraint); checked when it was made.
        titles: A :class:`recllm.data.types.Catalog` or an ``item -> title`` mapping.
        trie: A prebuilt trie of ``sid_map`` (saves rebuilding it per call).
        prefixes: Per prompt, the SID prefixes its answers must start with (think-ahead,
            :class:`recllm.decode.prefixes.PrefixSets` with one row per prompt); constrained
            decoding only.
        item_filter: Per prompt, items to exclude / the only items to allow, applied inside
            the constraint (:class:`recllm.decode.filters.ItemFilter` with one row per prompt,
            built on ``trie``); constrained decoding only.
        fresh: Items added after training and their score bonus
            (:class:`recllm.decode.fresh.FreshItems`, built on ``trie``): a second beam group
            searches them (``engine="sid_beam"`` only).
        progress: Show a progress bar over batches.

    Returns:
        Per prompt, distinct items best first: ``k`` in beam mode (fewer only when the catalog
        has fewer items), 1 in greedy mode, up to ``k`` in sample mode. Unconstrained, every
        invalid answer keeps its own slot (``item_id=None``).

    Raises:
        TypeError: ``options`` is not a :class:`DecodeOptions`.
        ValueError: Prefixes that do not fit the prompts or the options, no stop token, or a
            trie of another token layout.
        RuntimeError: A generated answer is not a catalog SID although constrained (it means
            the decoding setup is broken).
    """
    if not isinstance(options, DecodeOptions):
        raise TypeError(
            f"generate_sids takes its settings as one DecodeOptions, not {type(options).__name__}"
            "; Fix: generate_sids(model, tokenizer, prompts, sid_map, DecodeOptions(k=10, ...))"
        )
    o = options
    if prefixes is not None and not o.constrained:
        raise ValueError("prefixes restrict the SID trie; Fix: constrained=True")
    if prefixes is not None and prefixes.rows != len(prompts):
        raise ValueError(f"{prefixes.rows} prefix-set rows for {len(prompts)} prompts")
    if item_filter is not None and not o.constrained:
        raise ValueError("item filters act inside the SID trie; Fix: constrained=True")
    if item_filter is not None and item_filter.rows != len(prompts):
        raise ValueError(f"{item_filter.rows} item-filter rows for {len(prompts)} prompts")
    if fresh is not None and not (o.constrained and o.mode == "beam" and o.engine == "sid_beam"):
        raise ValueError(
            "the new items' beam group (fresh=) is a part of recllm's SID beam search; Fix: "
            "DecodeOptions(mode='beam', engine='sid_beam', constrained=True)"
        )
    stop = tokenizer.eos_token_id if o.stop_token_id is None else o.stop_token_id
    if stop is None and o.stop_after_sid:
        raise ValueError("the tokenizer has no EOS token; Fix: DecodeOptions(stop_token_id=...)")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop
    if pad is None:
        pad = 0  # a bare-SID answer without EOS or pad token: any id pads, the mask hides it
    token_ids = o.fmt.token_ids(tokenizer, sid_map.codebook_sizes)
    if trie is None:
        trie = SIDTrie.from_sid_map(sid_map, token_ids)
    elif trie.token_ids != token_ids:
        raise ValueError("the trie was built for another SID token layout than the tokenizer's")
    run = _Decoder(model, o, trie.to(model.device), token_ids, stop, pad, sid_map, titles, fresh)
    logger.info(
        "generate_sids: %d prompts, %s, mode=%s, engine=%s, k=%d, num_beams=%d, batch_size=%d, "
        "%d items x %d levels",
        len(prompts),
        "constrained" if o.constrained else "UNCONSTRAINED (no SID trie)",
        o.mode,
        o.engine,
        o.k,
        o.beams if o.mode == "beam" else 1,
        o.batch_size,
        len(sid_map),
        trie.levels,
    )
    encoded = encode_prompts(tokenizer, prompts, chat_template_kwargs=o.chat_template_kwargs)
    starts = range(0, len(encoded), o.batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="generate_sids", unit="batch")
    rng_devices = [model.device.index or 0] if model.device.type == "cuda" else []
    results: list[list[Recommendation]] = []
    with contextlib.ExitStack() as stack:
        if o.seed is not None:
            stack.enter_context(torch.random.fork_rng(devices=rng_devices))
            torch.manual_seed(o.seed)
        for start in starts:
            ids, mask = left_pad(encoded[start : start + o.batch_size], pad, model.device)
            rows = None if prefixes is None else prefixes.slice(start, start + o.batch_size)
            filters = (
                None if item_filter is None else item_filter.slice(start, start + o.batch_size)
            )
            results.extend(run.batch(ids, mask, rows, filters))
    if not o.constrained:
        logger.info(
            "unconstrained decoding: %d answers, %d malformed, %d well-formed SIDs of no catalog "
            "item",
            sum(len(r) for r in results),
            run.invalid["malformed"],
            run.invalid["not in catalog"],
        )
    return results


class _Decoder:
    """One :func:`generate_sids` call's decoding setup, applied batch by batch."""

    def __init__(
        self,
        model: PreTrainedModel,
        options: DecodeOptions,
        trie: SIDTrie,
        token_ids: SIDTokenIds,
        stop: int | None,
        pad: int,
        sid_map: SIDMap,
        titles: Catalog | Mapping[str, str] | None,
        fresh: FreshItems | None = None,
    ) -> None:
        o = options
        self.fresh = fresh
        self.model, self.options, self.trie, self.token_ids = model, o, trie, token_ids
        self.stop, self.sid_map, self.titles = stop, sid_map, titles
        # Beam search hands processors a fresh log_softmax tensor, so masking it in place is
        # safe and saves a (batch*beams, vocab) allocation per step; greedy search and sampling
        # pass the raw logits that output_logits keeps for the scores, so they get a copy.
        inplace = o.mode == "beam" and o.beams > 1
        self.processors = (
            [SIDLogitsProcessor(trie, sid_only=True, stop_token_id=stop, inplace=inplace)]
            if o.constrained
            else []
        )
        self.config = sid_generation_config(
            mode=o.mode,
            levels=trie.levels,
            num_beams=o.beams,
            k=o.k,
            stop_token_id=stop,
            pad_token_id=pad,
            length_penalty=o.length_penalty,
            temperature=o.temperature,
            top_k=o.top_k,
            top_p=o.top_p,
        )
        # Unconstrained answer length: one SID (+ the stop token for chat answers).
        self.answer_len = trie.levels + 2 + int(o.stop_after_sid)
        if not o.constrained and not o.stop_after_sid:
            self.config.max_new_tokens = self.answer_len
            self.config.eos_token_id = None  # nothing ends a bare SID but its length
        self.invalid = {"malformed": 0, "not in catalog": 0}

    def batch(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor,
        prefixes: PrefixSets | None,
        item_filter: ItemFilter | None = None,
    ) -> list[list[Recommendation]]:
        """Ranked recommendations of one left-padded batch of prompts."""
        o = self.options
        for proc in self.processors:
            proc.prefixes = prefixes
            proc.item_filter = item_filter
        if o.engine == "sid_beam":
            out = sid_beam_search(
                self.model,
                ids,
                mask,
                self.trie,
                num_beams=o.beams,
                num_return_sequences=o.k,
                length_penalty=o.length_penalty,
                stop_token_id=self.stop,
                prefixes=prefixes,
                item_filter=item_filter,
                fresh=self.fresh,
            )
            rows = out.items.cpu().tolist()
            scores = out.scores.cpu().tolist()
            return [
                _ranked(
                    [(r, s) for r, s in zip(items, row_scores, strict=True) if r >= 0],
                    self.sid_map,
                    self.titles,
                )
                for items, row_scores in zip(rows, scores, strict=True)
            ]
        with _without_model_generation_defaults(self.model):
            out = self.model.generate(
                input_ids=ids,
                attention_mask=mask,
                generation_config=self.config,
                logits_processor=self.processors,
            )
        generated = out.sequences[:, ids.shape[1] :]  # (rows*k, new tokens)
        if not o.constrained:
            return _free_answers(
                out,
                generated,
                ids.shape[0],
                o.k,
                token_ids=self.token_ids,
                trie=self.trie,
                stop=self.stop if o.stop_after_sid else None,
                answer_len=self.answer_len,
                beam=o.mode == "beam",
                length_penalty=o.length_penalty,
                sid_map=self.sid_map,
                titles=self.titles,
                invalid=self.invalid,
            )
        levels = self.trie.levels
        if o.mode == "beam" and o.beams > 1:
            seq_scores = out.sequences_scores.float().cpu()
        else:
            seq_scores = _sequence_logprob(out.logits, generated, levels)
            if o.mode == "beam":  # one beam is greedy search; score it like a beam
                seq_scores = seq_scores / (levels + 3) ** o.length_penalty
        item_rows = _parse(generated, self.token_ids, self.trie).tolist()
        seq_scores = seq_scores.tolist()
        results = []
        for p in range(ids.shape[0]):
            span = slice(p * o.k, (p + 1) * o.k)
            pairs = [
                (int(r), float(s))
                for r, s in zip(item_rows[span], seq_scores[span], strict=True)
                if not (o.mode == "beam" and s < _GHOST_SCORE)
            ]
            results.append(_ranked(pairs, self.sid_map, self.titles))
        return results
