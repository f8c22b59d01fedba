"""Slate decoding: ``n`` distinct catalog items per prompt in ONE generation.

A slate answer is ``n`` SID spans back to back, then the stop token::

    <|sid_begin|><a_3><b_1><c_0><|sid_end|><|sid_begin|><a_0><b_2><c_1><|sid_end|><|im_end|>

the shape a SID-sequence continues in (:mod:`recllm.tasks.sequence`: a history is SIDs back to
back, so its next items are more of them) and the shape a chat answer takes when it holds more
than one SID (one answer, markers in a row, then the end of the turn). A model trained on
single-item answers still scores it: the slate is the chain of its next-item predictions, each
conditioned on the items already written.

:func:`slate_search` decodes it with one prefill per prompt and the KV cache reused across all
``n`` SIDs:

1. The prompt + ``<|sid_begin|>`` runs once per prompt.
2. For each of the ``n`` slots, ``L`` constrained steps pick the codes. Inside the constraint,
   each beam's row of a per-beam :class:`~recllm.decode.filters.ItemFilter` excludes the items
   already in that beam's slate (plus the caller's ``item_filter``), so a code is a candidate
   only if some item under it is still free; the filter is rebuilt once per slot
   (:meth:`ItemFilter.with_excluded`), and within a slot each beam looks up the row of the beam
   it descends from.
3. After the last code of a slot, ``<|sid_end|>`` and the next ``<|sid_begin|>`` are forced, so
   they ride along with the code in one three-token forward (two tokens after the last slot:
   ``<|sid_end|>`` and the stop token).

Modes:

- ``"beam"``: beam search over slates; the ``num_beams`` best partial slates by joint log-prob
  (summed over all ``n`` SIDs) are kept at every step; returns the best ``num_return_sequences``.
  A width at least the number of partial slates is exhaustive (the tests compare it with
  brute-force scoring of every ordered slate).
- ``"greedy"``: beam search of width 1 (the arg-max code at every step).
- ``"sample"``: ``num_beams`` independent slates per prompt, each code drawn from the model's
  distribution over the allowed codes (``temperature``; ``seed`` makes it repeatable), returned
  best first by joint log-prob (two draws may give the same slate).

Scores are the summed full-vocabulary log-probs (float32) of the code tokens; with
``stop_token_id`` also of every forced marker and the stop token, so a score is the log-prob of
the whole answer. They are not length-normalised: every slate of ``n`` items has one length.

Diversity, two ways: ``spread`` excludes every item under a first SID code the slate already
holds (a hard rule: each item opens another first-level branch); ``diversity_penalty`` ``d``
only discourages it. A slate is then ranked by its log-prob minus ``d`` for every item that
shares its first code with an earlier item of the slate (``d`` x the number of such earlier
items), at every step of the search and in the returned order, while the scores returned stay
the log-probs. ``d = 0`` is the plain search; a large ``d`` gives ``spread``'s slates wherever
the catalog has ``n`` first codes to spread over.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch

from recllm.decode.answers import Recommendation
from recllm.decode.beam import _as_ensemble, _step, prefill
from recllm.decode.filters import ItemFilter
from recllm.decode.trie import SIDTrie

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = ["SLATE_MODES", "Slate", "SlateOutput", "slate_search"]

logger = logging.getLogger(__name__)

SlateMode = Literal["beam", "greedy", "sample"]
SLATE_MODES = ("beam", "greedy", "sample")


@dataclass(frozen=True)
class Slate:
    """One decoded slate, as :meth:`recllm.apps.recommender.Recommender.recommend_slate`
    returns it.

    Attributes:
        items: The ``n`` items in answer order; each ``score`` is the item's part of the joint
            log-prob (:attr:`SlateOutput.item_scores`).
        score: The slate's joint log-prob (the sum of the items' scores).
    """

    items: list[Recommendation]
    score: float


@dataclass(frozen=True)
class SlateOutput:
    """Slates per prompt, best first.

    Attributes:
        items: ``(batch, k, n)`` int64 SID-map rows, in answer order; -1 in dead slates (fewer
            than ``k`` slates reachable).
        codes: ``(batch, k, n, L)`` int64 code tuples (meaningless where ``items`` is -1).
        scores: ``(batch, k)`` float32 joint log-probs; -inf for dead slates.
        item_scores: ``(batch, k, n)`` float32, each item's part of ``scores``: its codes, the
            ``<|sid_end|>`` after them and the token after that (the next ``<|sid_begin|>``, or
            the stop token); the first item also owns the first ``<|sid_begin|>``. They sum to
            ``scores``.
    """

    items: torch.Tensor
    codes: torch.Tensor
    scores: torch.Tensor
    item_scores: torch.Tensor


@torch.no_grad()
def slate_search(
    model: PreTrainedModel | Sequence[PreTrainedModel],
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    trie: SIDTrie,
    *,
    n: int,
    mode: SlateMode = "beam",
    num_beams: int = 4,
    num_return_sequences: int | None = None,
    stop_token_id: int | None = None,
    item_filter: ItemFilter | None = None,
    distinct: bool = True,
    spread: bool = False,
    diversity_penalty: float = 0.0,
    temperature: float = 1.0,
    seed: int | None = None,
) -> SlateOutput:
    """Decode slates of ``n`` distinct items after each prompt (see the module docstring).

    Args:
        model: A causal LM whose vocabulary holds ``trie.token_ids`` (or several sharing one
            vocabulary: their log-probs are averaged, as in
            :func:`recllm.decode.beam.sid_beam_search`).
        input_ids: ``(batch, T)`` LEFT-padded prompts, without the begin marker.
        attention_mask: ``(batch, T)`` 1 for tokens, 0 for padding; None when unpadded.
        trie: The catalog's SID trie.
        n: Items per slate.
        mode: ``"beam"``, ``"greedy"`` or ``"sample"``.
        num_beams: Beams kept (``"beam"``) or slates drawn (``"sample"``) per prompt; ignored
            by ``"greedy"`` (1).
        num_return_sequences: Slates returned per prompt (``<= num_beams``); ``num_beams``
            when None.
        stop_token_id: Also score ``<|sid_begin|>``, the markers between SIDs, the last
            ``<|sid_end|>`` and this stop token (None: the code tokens only).
        item_filter: Per prompt, items to exclude / the only items to allow
            (:class:`recllm.decode.filters.ItemFilter`, one row per prompt), on top of the
            slate's own items.
        distinct: Exclude the items already in a slate (False: a control that may repeat).
        spread: Also exclude every item whose first SID code is already in the slate, so each
            item of a slate opens another first-level branch of the catalog (with
            ``distinct``).
        diversity_penalty: Subtracted from a slate's ranking score once per earlier item of
            the slate under the same first SID code as a new item (the module docstring): beams
            are kept, drawn and returned by log-prob minus the penalties; 0 = off.
        temperature: Softmax temperature of ``"sample"`` (scores stay the model's log-probs).
        seed: Seed of ``"sample"`` (None: torch's global generator).

    Returns:
        A :class:`SlateOutput` on the model's device, best first (by log-prob minus the
        diversity penalties when ``diversity_penalty`` > 0).

    Raises:
        ValueError: A bad mode or size, a right-padded batch, or a prompt whose filter leaves
            fewer than ``n`` items (with ``distinct``), or fewer than ``n`` first codes (with
            ``spread``).
    """
    if mode not in SLATE_MODES:
        raise ValueError(f"mode must be one of {SLATE_MODES}, got {mode!r}")
    if mode == "greedy":
        num_beams = 1
    k = num_beams if num_return_sequences is None else num_return_sequences
    if n < 1:
        raise ValueError(f"a slate needs n >= 1 items, got {n}")
    if num_beams < 1 or not 1 <= k <= num_beams:
        raise ValueError(
            f"need 1 <= num_return_sequences ({k}) <= num_beams ({num_beams}); Fix: raise num_beams"
        )
    if mode == "sample" and not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0 <= diversity_penalty < float("inf"):
        raise ValueError(f"diversity_penalty must be a finite number >= 0, got {diversity_penalty}")
    soft = diversity_penalty > 0 and n > 1  # rank by log-prob - penalty; else plain log-prob
    models = _as_ensemble(model)
    device = models[0].device
    trie = trie.to(device)
    ids = trie.token_ids
    levels, max_codes = trie.levels, trie.max_codes
    batch = input_ids.shape[0]
    if item_filter is not None:
        item_filter.check_trie(trie)
        if item_filter.rows != batch:
            raise ValueError(f"{item_filter.rows} item-filter rows for {batch} prompts")
        item_filter = item_filter.to(device)
    first = _first_nodes(trie) if spread and distinct else None
    if distinct:
        _check_enough_items(trie, item_filter, batch, n, first)
    input_ids = input_ids.to(device)
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    attention_mask = attention_mask.to(device)
    if batch and not bool(attention_mask[:, -1].all()):
        raise ValueError("prompts must be left-padded (the last column holds a real token)")
    generator = None
    if mode == "sample" and seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)

    # 1. Prefill prompt + <|sid_begin|>, once per prompt.
    caches, logp, scores, attention_mask, next_position, padded = prefill(
        models, input_ids, attention_mask, ids.begin_id, stop_token_id
    )
    penalty = torch.zeros_like(scores)  # each beam's summed diversity penalty (soft only)
    nodes = torch.zeros(batch, 1, dtype=torch.long, device=device)
    codes = torch.zeros(batch, 1, 0, levels, dtype=torch.long, device=device)  # done slots
    slot_codes = torch.zeros(batch, 1, 0, dtype=torch.long, device=device)  # this slot's
    slate = torch.zeros(batch, 1, 0, dtype=torch.long, device=device)  # items so far
    parts = torch.zeros(batch, 1, 0, device=device)  # each done item's part of the score
    code_range = torch.arange(max_codes, device=device)
    rows = torch.arange(batch, device=device)[:, None]
    # filter row of each beam: the row of the beam it descended from at the slot's start
    filt = item_filter
    origin = torch.arange(batch, device=device)[:, None]

    # 2. n slots of L steps.
    for s in range(n):
        # the score before this slot's tokens, per beam (the first item owns the first marker)
        start = torch.zeros_like(scores) if s == 0 else scores
        for level in range(levels):
            beams = scores.shape[1]
            token_cols = (trie.code_token_start[level] + code_range).clamp(max=ids.last_id)
            step_logp = logp[:, -1, token_cols].view(batch, beams, max_codes)
            allowed = trie.allowed[nodes] & (code_range < trie.codebook_sizes[level])
            if filt is not None:
                allowed &= ~filt.removed_codes(origin, nodes)
            # (batch, beams, codes): the penalty of each first code, from the slate's first codes
            step_pen = None
            if soft and level == 0 and s > 0:
                used = torch.nn.functional.one_hot(codes[..., 0], max_codes).sum(2)
                step_pen = diversity_penalty * used.to(step_logp.dtype)
            if mode == "sample":
                if beams < num_beams:  # the first step: every draw starts from the one beam
                    step_logp = step_logp.expand(batch, num_beams, max_codes)
                    allowed = allowed.expand(batch, num_beams, max_codes)
                    source = torch.zeros(batch, num_beams, dtype=torch.long, device=device)
                else:
                    source = torch.arange(num_beams, device=device).expand(batch, num_beams)
                alive_rows = torch.isfinite(scores.gather(1, source))
                ranked = step_logp if step_pen is None else step_logp - step_pen
                weights = torch.where(allowed, ranked / temperature, float("-inf"))
                weights = torch.where(alive_rows[..., None], weights, 0.0)  # dead: any code
                probs = torch.softmax(weights.view(-1, max_codes), dim=-1)
                code = torch.multinomial(probs, 1, generator=generator).view(batch, num_beams)
                picked = step_logp.gather(2, code[..., None])[..., 0]
                ok = allowed.gather(2, code[..., None])[..., 0]
                top = torch.where(ok, scores.gather(1, source) + picked, float("-inf"))
                if soft:  # (the first draw widens one beam into num_beams: gather, always)
                    penalty = penalty.gather(1, source)
                    if step_pen is not None:
                        penalty = penalty + step_pen.gather(2, code[..., None])[..., 0]
            else:
                rank = scores - penalty if soft else scores
                cand = step_logp + rank[..., None]
                if step_pen is not None:
                    cand = cand - step_pen
                cand = torch.where(allowed, cand, float("-inf"))
                flat = cand.view(batch, beams * max_codes)
                width = min(num_beams, flat.shape[1])
                top, index = flat.topk(width, dim=1)
                if width < num_beams:  # fewer candidates than beams: dead slots
                    pad = num_beams - width
                    top = torch.cat([top, top.new_full((batch, pad), float("-inf"))], 1)
                    index = torch.cat([index, index.new_zeros((batch, pad))], 1)
                source, code = index // max_codes, index % max_codes
                if soft:  # top holds ranking scores: back to log-probs, penalties apart
                    live = torch.isfinite(top)
                    picked = step_logp.reshape(batch, -1).gather(1, index)
                    top = torch.where(live, scores.gather(1, source) + picked, float("-inf"))
                    penalty = penalty.gather(1, source)
                    if step_pen is not None:
                        penalty = penalty + step_pen.reshape(batch, -1).gather(1, index)
            alive = torch.isfinite(top)
            child = trie.child(nodes.gather(1, source), code)
            nodes = torch.where(alive, child, 0)
            slot_codes = torch.cat([slot_codes[rows, source], code[..., None]], dim=2)
            codes, slate, parts = codes[rows, source], slate[rows, source], parts[rows, source]
            origin, start = origin.gather(1, source), start.gather(1, source)
            scores = top
            last_level = level == levels - 1
            last_slot = s == n - 1
            if last_level:
                leaf = (nodes - trie.num_internal).clamp(min=0)
                item = torch.where(alive, trie.leaf_item[leaf], -1)
                slate = torch.cat([slate, item[..., None]], dim=2)
                codes = torch.cat([codes, slot_codes[:, :, None]], dim=2)
                slot_codes = slot_codes[:, :, :0]
                nodes = torch.zeros_like(nodes)
                if last_slot and stop_token_id is None:
                    break
            flat_source = (rows * beams + source).view(-1)
            for cache in caches:
                cache.reorder_cache(flat_source)
            tokens = (trie.code_token_start[level] + code).view(-1, 1)
            if last_level:
                tail = [ids.end_id] if last_slot else [ids.end_id, ids.begin_id]
                tokens = torch.cat([tokens, tokens.new_tensor(tail).expand(tokens.shape[0], -1)], 1)
            attention_mask = torch.cat(
                [attention_mask[flat_source], attention_mask.new_ones(tokens.shape)], dim=1
            )
            mask = attention_mask if padded else None
            logp = sum(
                _step(m, tokens, mask, next_position, cache)
                for m, cache in zip(models, caches, strict=True)
            ) / len(models)
            next_position = next_position + tokens.shape[1]
            if last_level and stop_token_id is not None:
                forced = (
                    logp[:, 0, ids.end_id]
                    + logp[:, 1, stop_token_id if last_slot else ids.begin_id]
                )
                scores = scores + forced.view(batch, num_beams)
        parts = torch.cat([parts, (scores - start)[..., None]], dim=2)
        if s < n - 1 and distinct:
            filt, origin = _slate_filter(trie, item_filter, slate, batch, first)

    if soft:
        _, order = (scores - penalty).sort(dim=1, descending=True, stable=True)
        scores = scores.gather(1, order)
    else:
        scores, order = scores.sort(dim=1, descending=True, stable=True)
    scores, order = scores[:, :k], order[:, :k]
    items = slate[rows, order]
    live = torch.isfinite(scores)[..., None]
    items = torch.where(live, items, -1)
    item_scores = torch.where(live, parts[rows, order], float("-inf"))
    return SlateOutput(
        items=items, codes=codes[rows, order], scores=scores, item_scores=item_scores
    )


def _first_nodes(trie: SIDTrie) -> torch.Tensor:
    """``(num_items,)``: each item's first-level trie node (items sharing one share a first
    code)."""
    from recllm.decode.filters import trie_index

    index = trie_index(trie)
    node = index.item_leaf
    for _ in range(trie.levels - 1):
        node = index.parent[node]
    return node


def _check_enough_items(
    trie: SIDTrie,
    item_filter: ItemFilter | None,
    batch: int,
    n: int,
    first: torch.Tensor | None = None,
) -> None:
    what = "items" if first is None else "first SID codes (spread)"
    if item_filter is None:
        have = trie.num_items if first is None else int(first.unique().numel())
        if have < n:
            raise ValueError(
                f"a slate of {n} distinct {what} from a catalog of {have}; Fix: ask for n <= {have}"
            )
        return
    every = torch.arange(trie.num_items, device=item_filter.device)
    for r in range(batch):
        ok = item_filter.allows_items(torch.tensor(r, device=every.device), every)
        free = int(ok.sum()) if first is None else int(first[ok].unique().numel())
        if free < n:
            raise ValueError(
                f"prompt {r}: its filter leaves {free} {what}, fewer than the slate's {n}; Fix: "
                f"ask for n <= {free} or loosen the filter"
            )


def _slate_filter(
    trie: SIDTrie,
    base: ItemFilter | None,
    slate: torch.Tensor,
    batch: int,
    first: torch.Tensor | None = None,
) -> tuple[ItemFilter, torch.Tensor]:
    """The per-beam filter for the next slot: ``base`` (one row per prompt) repeated per beam,
    plus each beam's slate items (with ``first``, every item sharing a first-level node with
    one of them); and each beam's row in it."""
    beams = slate.shape[1]
    rows = torch.arange(batch * beams, device=slate.device)
    flat = slate.reshape(batch * beams, -1)
    live = flat >= 0
    pair_rows = rows[:, None].expand_as(flat)[live]
    pair_items = flat[live]
    if first is not None:  # (pairs, num_items): items under the same first code
        pair, item = (first[pair_items][:, None] == first[None, :]).nonzero(as_tuple=True)
        pair_rows, pair_items = pair_rows[pair], item
    if base is None:
        lists = [[] for _ in range(batch * beams)]
        for r, i in zip(pair_rows.tolist(), pair_items.tolist(), strict=True):
            lists[r].append(i)
        filt = ItemFilter.from_items(trie, exclude=lists)
    else:
        filt = base.repeat_rows(beams).with_excluded(trie, pair_rows, pair_items)
    return filt, rows.view(batch, beams)
