"""Fixed-depth beam search over the SID trie: what ``model.generate`` does, at a fraction of the cost.

A recommendation answer is ``<|sid_begin|>`` + ``L`` code tokens + ``<|sid_end|>`` (+ the stop
token), so beam search over it has a fixed number of steps and a tiny candidate set per step.
:func:`sid_beam_search` exploits both:

1. The prompt, with ``<|sid_begin|>`` appended, runs ONCE per user (Hugging Face beam search
   expands every prompt to ``num_beams`` copies before the prefill, which dominates its cost).
2. Exactly ``L`` steps follow. At each, the candidates are the (beam, code) pairs the trie
   allows; one ``topk`` over ``(batch, beams * max_codes)`` picks the next beams, and the KV cache
   (a transformers ``Cache``) is expanded / reordered by beam index with ``Cache.reorder_cache``.
3. With ``stop_token_id`` the forced ``<|sid_end|>`` rides along with the last code token in
   one two-token forward, which scores ``<|sid_end|>`` and the stop token; they re-rank the beams
   without changing the set (each beam has one allowed token there).

**Ensembles.** Given several models that share one vocabulary (e.g. seeds of one recipe), each
keeps its own KV cache, and every step scores candidates with the mean of the models' log-probs
(a product of experts over the SID tokens). The tests check it against exhaustive scoring of
every catalog item.

**Equality with Hugging Face beam search** (checked by the tests on tiny Qwen3 / Qwen3-MoE):

- ``stop_token_id=None``: same items and scores as ``model.generate`` on the prompt + begin
  marker with :class:`~recllm.decode.processor.SIDLogitsProcessor` and ``max_new_tokens=L``;
  a score is ``sum of the L code log-probs / L ** length_penalty``.
- ``stop_token_id=t``: same as ``model.generate`` on the bare prompt with
  ``SIDLogitsProcessor(sid_only=True, stop_token_id=t)`` and ``max_new_tokens=L + 3``; a score is
  ``(log p(begin) + code log-probs + log p(end) + log p(t)) / (L + 3) ** length_penalty``.

Log-probs are full-vocabulary ``log_softmax`` values in float32, as in Hugging Face (which masks
after ``log_softmax``). transformers 5.x divides a finished beam's summed log-prob by (generated
tokens, the last one included) ``** length_penalty``; every SID answer has the same length, so
the penalty rescales scores without reordering them, and ``early_stopping`` changes nothing
(all beams finish at the same step). Where fewer than ``num_beams`` catalog items can be
reached, Hugging Face pads with duplicate beams scored about -1e9; here those slots are dead
(item -1, score -inf).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from recllm.decode.trie import SIDTrie

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from recllm.decode.filters import ItemFilter
    from recllm.decode.fresh import FreshItems
    from recllm.decode.prefixes import PrefixSets

__all__ = ["SIDBeamOutput", "sid_beam_search"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SIDBeamOutput:
    """Best SIDs per prompt, best first.

    Attributes:
        items: ``(batch, k)`` int64 SID-map rows of the items (``trie.leaf_item``); -1 for dead
            beams (fewer than ``k`` items reachable).
        codes: ``(batch, k, L)`` int64 code tuples (meaningless where ``items`` is -1).
        scores: ``(batch, k)`` float32 length-normalised log-probs; -inf for dead beams.
    """

    items: torch.Tensor
    codes: torch.Tensor
    scores: torch.Tensor


@torch.no_grad()
def sid_beam_search(
    model: PreTrainedModel | Sequence[PreTrainedModel],
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    trie: SIDTrie,
    *,
    num_beams: int,
    num_return_sequences: int | None = None,
    length_penalty: float = 1.0,
    stop_token_id: int | None = None,
    prefixes: PrefixSets | None = None,
    depth: int | None = None,
    item_filter: ItemFilter | None = None,
    fresh: FreshItems | None = None,
) -> SIDBeamOutput:
    """Beam search for the best catalog SIDs after each prompt (see the module docstring).

    Args:
        model: A causal LM whose vocabulary holds ``trie.token_ids``, or several sharing one
            vocabulary: an ensemble whose log-probs are averaged token by token (a product of
            experts; each model keeps its own KV cache).
        input_ids: ``(batch, T)`` LEFT-padded prompts, without the begin marker.
        attention_mask: ``(batch, T)`` 1 for tokens, 0 for padding; None when unpadded.
        trie: The catalog's SID trie.
        num_beams: Beams kept at every level.
        num_return_sequences: Items returned per prompt (``<= num_beams``, ``<= 2 x num_beams``
            with ``fresh``); ``num_beams`` when None.
        length_penalty: Exponent of the length normalisation, as in transformers.
        stop_token_id: Also score ``<|sid_begin|>``, ``<|sid_end|>`` and this stop token, to
            match ``generate`` with ``sid_only=True`` (None: score the code tokens only).
        prefixes: Per prompt, the SID prefixes the answer must start with
            (:class:`recllm.decode.prefixes.PrefixSets`, one row per prompt; think-ahead).
        depth: Search only the first ``depth`` levels and return the best prefixes (``codes``
            of ``depth`` columns, ``items`` -1 unless ``depth`` is ``L``, scores = summed code
            log-probs, not normalised);
            ``stop_token_id`` must be None. None: whole SIDs.
        item_filter: Per prompt, items to exclude / the only items to allow
            (:class:`recllm.decode.filters.ItemFilter`, one row per prompt): codes with no
            admissible item under them are never candidates, so the ``k`` answers are ``k``
            admissible items (fewer only when fewer exist).
        fresh: Items added after training and their score bonus
            (:class:`recllm.decode.fresh.FreshItems`): the beams walk only towards trained
            items, and a second group of ``num_beams`` beams per prompt, sharing the prefill,
            only into subtrees that hold a new item; the new items' scores get the bonus, and
            the two groups' answers are merged. Equals the merge of two searches, the trained
            items' alone and the new items' alone.

    Returns:
        A :class:`SIDBeamOutput` on the model's device.

    Raises:
        ValueError: Bad sizes, or a right-padded batch.
    """
    k = num_beams if num_return_sequences is None else num_return_sequences
    most = num_beams if fresh is None else 2 * num_beams  # two groups' answers with ``fresh``
    if num_beams < 1 or not 1 <= k <= most:
        raise ValueError(
            f"need 1 <= num_return_sequences ({k}) <= {'2 x ' if fresh else ''}num_beams "
            f"({num_beams}); Fix: raise num_beams"
        )
    models = _as_ensemble(model)
    device = models[0].device
    trie = trie.to(device)
    ids = trie.token_ids
    levels, max_codes = trie.levels, trie.max_codes
    batch = input_ids.shape[0]
    if depth is not None:
        if not 1 <= depth <= levels:
            raise ValueError(f"depth must be in 1..{levels}, got {depth}")
        if stop_token_id is not None:
            raise ValueError("a prefix search (depth) scores code tokens only: stop_token_id=None")
        if fresh is not None:
            raise ValueError("a prefix search (depth) returns no items: fresh=None")
    if prefixes is not None:
        prefixes.check_trie(trie)
        if prefixes.rows != batch:
            raise ValueError(f"{prefixes.rows} prefix-set rows for {batch} prompts")
        prefixes = prefixes.to(device)
    if item_filter is not None:
        item_filter.check_trie(trie)
        if item_filter.rows != batch:
            raise ValueError(f"{item_filter.rows} item-filter rows for {batch} prompts")
        item_filter = item_filter.to(device)
    if fresh is not None:
        fresh.check_trie(trie)
        fresh = fresh.to(device)
    input_ids = input_ids.to(device)
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    attention_mask = attention_mask.to(device)
    if batch and not bool(attention_mask[:, -1].all()):
        raise ValueError("prompts must be left-padded (the last column holds a real token)")

    # 1. Prefill prompt + <|sid_begin|>, once per prompt.
    caches, logp, scores, attention_mask, next_position, padded = prefill(
        models, input_ids, attention_mask, ids.begin_id, stop_token_id
    )
    nodes = torch.zeros(batch, 1, dtype=torch.long, device=device)  # (batch, beams)
    codes = torch.zeros(batch, 1, 0, dtype=torch.long, device=device)  # (batch, beams, depth)
    code_range = torch.arange(max_codes, device=device)
    prompts = batch  # the prompts; ``batch`` counts search rows (two per prompt with ``fresh``)
    if fresh is not None:
        # the new items' beam group: the same prefill, its own rows from here on
        dup = torch.arange(batch, device=device).repeat(2)
        for cache in caches:
            cache.reorder_cache(dup)
        attention_mask, logp = attention_mask[dup], logp[dup]
        scores, next_position, nodes, codes = (
            scores[dup],
            next_position[dup],
            nodes[dup],
            codes[dup],
        )
        batch = 2 * prompts
        fresh_group = (torch.arange(batch, device=device) >= prompts)[:, None, None]
    rows = torch.arange(batch, device=device)[:, None]
    prompt_rows = rows % prompts  # a search row's prompt (its prefixes and item filter)

    # 2. L steps: top-k over (beam, code) pairs the trie allows.
    stop_level = levels if depth is None else depth
    for level in range(stop_level):
        beams = scores.shape[1]
        token_cols = (trie.code_token_start[level] + code_range).clamp(max=ids.last_id)
        cand = logp[:, -1, token_cols].view(batch, beams, max_codes)  # (batch, beams, max_codes)
        allowed = trie.allowed[nodes] & (code_range < trie.codebook_sizes[level])
        if prefixes is not None and level < prefixes.depth:
            allowed &= prefixes.allowed_codes(trie, prompt_rows, nodes, level)
        if item_filter is not None:
            allowed &= ~item_filter.removed_codes(prompt_rows, nodes)
        if fresh is not None:  # trained items in the first group, new ones in the second
            below = trie.child(nodes[..., None].expand_as(allowed), code_range.expand_as(allowed))
            allowed &= fresh.walkable(below, fresh_group)
        cand = torch.where(allowed, cand + scores[..., None], float("-inf"))
        flat = cand.view(batch, beams * max_codes)
        width = min(num_beams, flat.shape[1])
        top, index = flat.topk(width, dim=1)  # (batch, width)
        if width < num_beams:  # fewer candidates than beams: dead slots
            top = torch.cat([top, top.new_full((batch, num_beams - width), float("-inf"))], 1)
            index = torch.cat([index, index.new_zeros((batch, num_beams - width))], 1)
        source = index // max_codes  # (batch, num_beams) beam each candidate extends
        code = index % max_codes
        alive = torch.isfinite(top)
        child = trie.child(nodes.gather(1, source), code)
        # Dead beams keep a valid node so later lookups stay in range; their score stays -inf.
        nodes = torch.where(alive, child, 0)
        codes = torch.cat([codes[rows, source], code[..., None]], dim=2)
        scores = top
        last = level == levels - 1
        if level == stop_level - 1 and stop_token_id is None:
            break
        # Expand (level 0) / reorder the cache rows to the beams' sources, then feed the codes.
        # After the last level the end marker is forced, so it rides along in the same forward:
        # position 0 scores <|sid_end|>, position 1 the stop token.
        flat_source = (rows * beams + source).view(-1)  # (batch*num_beams,)
        for cache in caches:
            cache.reorder_cache(flat_source)
        tokens = (trie.code_token_start[level] + code).view(-1, 1)  # (batch*num_beams, 1)
        if last:
            tokens = torch.cat([tokens, torch.full_like(tokens, ids.end_id)], dim=1)
        attention_mask = torch.cat(
            [attention_mask[flat_source], attention_mask.new_ones(tokens.shape)], dim=1
        )
        mask = attention_mask if padded else None
        logp = sum(
            _step(m, tokens, mask, next_position, cache)
            for m, cache in zip(models, caches, strict=True)
        ) / len(models)
        next_position = next_position + tokens.shape[1]

    if stop_token_id is not None:
        scores = scores + logp[:, 0, ids.end_id].view(batch, num_beams)
        scores = scores + logp[:, 1, stop_token_id].view(batch, num_beams)
        length = levels + 3
    else:
        length = levels
    if depth is None:
        scores = scores / (length**length_penalty)

    if fresh is not None:
        from recllm.decode.fresh import merge_groups

        leaf = (nodes - trie.num_internal).clamp(min=0)
        items = torch.where(torch.isfinite(scores), trie.leaf_item[leaf], -1)
        scores = scores + fresh.bonus * fresh.items[items.clamp(min=0)]
        both = (items.view(2, prompts, -1), codes.view(2, prompts, num_beams, -1), scores)
        items, codes, scores = merge_groups(
            torch.cat(list(both[0]), 1),
            torch.cat(list(both[1]), 1),
            torch.cat(list(scores.view(2, prompts, -1)), 1),
            k,
        )
        return SIDBeamOutput(items=items, codes=codes, scores=scores)

    scores, order = scores.sort(dim=1, descending=True, stable=True)
    scores, order = scores[:, :k], order[:, :k]
    nodes = nodes.gather(1, order)
    codes = codes[rows, order]
    if depth is not None and depth < levels:
        items = torch.full_like(nodes, -1)
    else:
        leaf = (nodes - trie.num_internal).clamp(min=0)
        items = torch.where(torch.isfinite(scores), trie.leaf_item[leaf], -1)
    return SIDBeamOutput(items=items, codes=codes, scores=scores)


def prefill(
    models: Sequence[PreTrainedModel],
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    begin_id: int,
    stop_token_id: int | None,
) -> tuple[list, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, bool]:
    """Run ``prompt + <|sid_begin|>`` once per prompt through every model.

    Returns:
        ``(caches, logp, scores, attention_mask, next_position, padded)``: one KV cache per
        model; the mean next-token log-probs ``(batch, 1, vocab)``; ``(batch, 1)`` the begin
        marker's log-prob when ``stop_token_id`` is set (answers are then scored from it), else
        zeros; the mask with the marker; the next position per prompt; whether any row is padded.
    """
    batch, device = input_ids.shape[0], input_ids.device
    begin = torch.full((batch, 1), begin_id, dtype=input_ids.dtype, device=device)
    shared = shared_prefix_length(input_ids, attention_mask) if batch > 1 else 0
    if shared < MIN_SHARED_PREFIX:
        shared = 0
    if shared:  # every prompt's first ``shared`` tokens leave the rows: [prefix][pads][rest]
        start = input_ids.shape[1] - int(attention_mask[0].sum())
        prefix = input_ids[:1, start : start + shared]
        input_ids, attention_mask = cut_prefix(input_ids, attention_mask, shared)
    input_ids = torch.cat([input_ids, begin], dim=1)
    attention_mask = torch.cat(
        [attention_mask.new_ones(batch, shared), attention_mask, torch.ones_like(begin)], dim=1
    )
    position_ids = (attention_mask.cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
    position_ids = position_ids[:, shared:]
    padded = not bool(attention_mask.all())
    caches = []
    logp = 0.0
    for m in models:
        cache = None
        if shared:
            cache = m(input_ids=prefix, use_cache=True, logits_to_keep=1).past_key_values
            cache.batch_repeat_interleave(batch)
        out = m(
            input_ids=input_ids,
            attention_mask=attention_mask if padded else None,
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=2 if stop_token_id is not None else 1,
        )
        caches.append(out.past_key_values)
        logp = logp + torch.log_softmax(out.logits.float(), dim=-1) / len(models)
        del out
    scores = torch.zeros(batch, 1, device=device)  # (batch, beams) summed log-probs
    if stop_token_id is not None:
        scores += logp[:, -2, begin_id, None]
    return caches, logp[:, -1:], scores, attention_mask, position_ids[:, -1] + 1, padded


#: A prompt prefix shared by every row of a batch is run once when it has this many tokens.
MIN_SHARED_PREFIX = 4


def shared_prefix_length(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> int:
    """How many leading tokens every LEFT-padded row's prompt has in common (chat templates
    give every recommendation prompt the same system turn and instruction), at most the
    shortest prompt's length less one (each row keeps a token of its own)."""
    lengths = attention_mask.sum(1)
    shortest = int(lengths.min())
    if shortest < 2:
        return 0
    width = input_ids.shape[1]
    cols = (width - lengths)[:, None] + torch.arange(shortest - 1, device=input_ids.device)
    heads = input_ids.gather(1, cols)  # (batch, shortest - 1): each prompt's first tokens
    differs = (heads != heads[:1]).any(0)
    return int(differs.float().argmax()) if bool(differs.any()) else shortest - 1


def cut_prefix(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, shared: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows without their first ``shared`` tokens, left-padded again to the new width."""
    lengths = attention_mask.sum(1) - shared
    width = int(lengths.max())
    cols = torch.arange(width, device=input_ids.device)
    keep = cols[None, :] >= (width - lengths)[:, None]
    src = (input_ids.shape[1] - width + cols)[None, :].expand_as(keep)
    ids = torch.where(keep, input_ids.gather(1, src.clamp(min=0)), input_ids[:, :1] * 0)
    return ids, keep.to(attention_mask.dtype)


def _as_ensemble(model) -> list:
    """``model`` as a list of models; several must share a device and a vocabulary size."""
    models = list(model) if isinstance(model, Sequence) else [model]
    if not models:
        raise ValueError("sid_beam_search needs at least one model")
    first = models[0]
    for m in models[1:]:
        if m.device != first.device:
            raise ValueError(
                f"ensemble models sit on {first.device} and {m.device}; Fix: move them to one device"
            )
        sizes = (
            first.get_output_embeddings().weight.shape[0],
            m.get_output_embeddings().weight.shape[0],
        )
        if sizes[0] != sizes[1]:
            raise ValueError(
                f"ensemble models have {sizes[0]} and {sizes[1]} output rows; an ensemble needs "
                "one shared vocabulary; Fix: ensemble models trained with the same tokenizer"
            )
    return models


def _step(
    model: PreTrainedModel,
    tokens: torch.Tensor,
    attention_mask: torch.Tensor | None,
    next_position: torch.Tensor,
    cache,
) -> torch.Tensor:
    """Feed ``(rows, t)`` tokens: full-vocabulary log-probs ``(rows, t, vocab)`` in float32."""
    rows, width = tokens.shape
    per_prompt = rows // next_position.shape[0]
    offsets = torch.arange(width, device=tokens.device)
    position_ids = next_position.repeat_interleave(per_prompt)[:, None] + offsets
    out = model(
        input_ids=tokens,
        attention_mask=attention_mask,
        position_ids=position_ids,
        past_key_values=cache,
        use_cache=True,
    )
    return torch.log_softmax(out.logits.float(), dim=-1)
