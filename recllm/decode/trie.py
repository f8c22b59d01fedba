"""The SID trie as tensors, and the span state of generated tokens, computed for a whole batch.

Everything in this module is plain torch (no transformers), so the Hugging Face logits processor
(:mod:`recllm.decode.processor`), our fixed-depth beam search (:mod:`recllm.decode.beam`) and a
vLLM logits processor share one implementation.

**Trie layout.** Nodes are numbered level by level: the root is node 0, then the distinct
length-1 prefixes in code order, then the length-2 prefixes in lexicographic order, and so on;
the nodes of depth ``d`` are ``level_starts[d] .. level_starts[d + 1] - 1`` and the leaves (depth
``L``, one per item, as SIDs are unique) come last. Because children are numbered in (parent,
code) order, the edge into node ``v`` is entry ``v - 1`` of the sorted ``edge_keys`` array
(``parent * max_codes + code``), so a child lookup is one ``searchsorted`` and needs no dense
child table. The tables:

- ``allowed``: bool ``(num_internal_nodes, max_codes)``, row ``n`` marks the codes that extend
  node ``n``. Dense on purpose: masking a batch is one row gather. Its size is bounded by the
  number of prefixes of length < L: 100,000 items x 3 levels x 256 codes have at most
  1 + 256 + 65,536 internal nodes, i.e. 17 MB (4 levels: at most ~100k + 65k rows, 43 MB).
- ``edge_keys``: int64 ``(num_nodes - 1,)``, sorted.
- ``leaf_item``: int64 ``(num_items,)``, the row (in the SID map) of the item at each leaf.

**Span state.** A SID is ``<|sid_begin|>`` + one code token per level + ``<|sid_end|>``. What a
row may emit next depends only on its last ``L + 1`` tokens (the "tail"): if a begin marker is
among them and no end marker follows it, the row is inside a span at depth ``d`` = the number of
tokens after the marker, and those tokens must spell a trie prefix. The state is recomputed from
the tokens at every step (beam search reorders rows between steps, so carried state goes stale)
with a handful of vectorized ops per level: no per-row Python.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from recllm.vocab.format import SIDTokenIds

if TYPE_CHECKING:
    from recllm.decode.filters import ItemFilter
    from recllm.decode.prefixes import PrefixSets

__all__ = [
    "SIDConstraint",
    "SIDTrie",
    "SpanState",
    "allowed_token_mask",
    "constrain_scores",
    "sid_constraint",
    "span_state",
    "tails_of",
]

logger = logging.getLogger(__name__)


class SIDTrie:
    """All SIDs of a catalog as a prefix tree, compiled to tensors (see the module docstring).

    Build it with :meth:`from_sid_map` (decoding) or :meth:`from_codes` (tests, vLLM workers
    that only have the codes). ``.to(device)`` returns a copy on another device.

    Attributes:
        token_ids: The SID token id layout the trie maps codes to.
        codebook_sizes: ``K_l`` per level.
        level_starts: First node id of each depth ``0..L``, then ``num_nodes``.
        allowed: ``(num_internal_nodes, max_codes)`` bool, the codes that extend each node.
        edge_keys: ``(num_nodes - 1,)`` int64, sorted ``parent * max_codes + code``.
        leaf_item: ``(num_items,)`` int64, SID-map row of the item at each leaf.
        item_ids: Item ids by SID-map row, when known.
    """

    def __init__(
        self,
        token_ids: SIDTokenIds,
        level_starts: tuple[int, ...],
        allowed: torch.Tensor,
        edge_keys: torch.Tensor,
        leaf_item: torch.Tensor,
        item_ids: list[str] | None = None,
    ) -> None:
        self.token_ids = token_ids
        self.codebook_sizes = token_ids.codebook_sizes
        self.level_starts = level_starts
        self.allowed = allowed
        self.edge_keys = edge_keys
        self.leaf_item = leaf_item
        self.item_ids = item_ids
        device = allowed.device
        # Token id of code 0 of each level, and K_l, as tensors for the vectorized walks.
        self.code_token_start = torch.tensor(
            [token_ids.level_ids(lv).start for lv in range(self.levels)], device=device
        )
        self.codebook = torch.tensor(self.codebook_sizes, device=device)

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def from_sid_map(cls, sid_map, token_ids: SIDTokenIds) -> SIDTrie:
        """The trie of every item of ``sid_map`` (a :class:`recllm.sid.sidmap.SIDMap`).

        Raises:
            ValueError: ``token_ids`` was made for other codebook sizes.
        """
        if tuple(token_ids.codebook_sizes) != tuple(sid_map.codebook_sizes):
            raise ValueError(
                f"token ids are laid out for codebook sizes {list(token_ids.codebook_sizes)}, "
                f"the SID map has {list(sid_map.codebook_sizes)}; Fix: build them with "
                "SID_FORMAT.token_ids(tokenizer, sid_map.codebook_sizes)"
            )
        return cls.from_codes(
            sid_map.codes, sid_map.codebook_sizes, token_ids, item_ids=list(sid_map.item_ids)
        )

    @classmethod
    def from_codes(
        cls,
        codes: np.ndarray | Sequence[Sequence[int]],
        codebook_sizes: Sequence[int],
        token_ids: SIDTokenIds | None = None,
        *,
        item_ids: list[str] | None = None,
    ) -> SIDTrie:
        """Build the trie of a list of code tuples.

        Args:
            codes: ``(N, L)`` codes, one row per item (unique rows; at least one row).
            codebook_sizes: ``K_l`` per level.
            token_ids: Token id layout; ``SIDTokenIds(0, codebook_sizes)`` when None (ids are
                then only meaningful relative to each other, which is all trie-only tests need).
            item_ids: Item ids by row, kept for :meth:`item_id`.

        Raises:
            ValueError: Empty or ragged codes, a code outside its codebook, or duplicate SIDs.
        """
        sizes = tuple(int(k) for k in codebook_sizes)
        arr = np.asarray(codes, dtype=np.int64)
        if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] != len(sizes):
            raise ValueError(
                f"codes must be a non-empty (items, {len(sizes)}) array, got shape {arr.shape}"
            )
        if item_ids is not None and len(item_ids) != len(arr):
            raise ValueError(f"{len(item_ids)} item ids for {len(arr)} code rows")
        bad = (arr < 0) | (arr >= np.asarray(sizes))
        if bad.any():
            row, level = np.argwhere(bad)[0]
            raise ValueError(
                f"row {row}: code {arr[row, level]} at level {level} is outside [0, {sizes[level]})"
            )
        if token_ids is None:
            token_ids = SIDTokenIds(0, sizes)
        elif tuple(token_ids.codebook_sizes) != sizes:
            raise ValueError(
                f"token ids are for codebook sizes {list(token_ids.codebook_sizes)}, "
                f"codes for {list(sizes)}"
            )
        levels = len(sizes)
        max_codes = max(sizes)

        order = np.lexsort(arr.T[::-1])  # rows in lexicographic code order
        sorted_codes = arr[order]
        n = len(arr)
        # new_at[d][i]: row i starts a new prefix of length d + 1 (rows are sorted, so equal
        # prefixes are adjacent and "differs from the previous row" finds each prefix once).
        differs = np.ones((n, levels), dtype=bool)
        differs[1:] = sorted_codes[1:] != sorted_codes[:-1]
        new_at = np.logical_or.accumulate(differs, axis=1)  # (n, L)
        if not new_at[:, -1].all():
            dup = sorted_codes[~new_at[:, -1]][0]
            raise ValueError(f"duplicate SID {tuple(int(c) for c in dup)}: SIDs must be unique")

        level_starts = [0, 1]
        node_of_row = np.zeros((n, levels + 1), dtype=np.int64)  # node of each row's prefix
        parents, child_codes = [], []
        for d in range(levels):
            fresh = new_at[:, d]
            node_of_row[:, d + 1] = level_starts[-1] + np.cumsum(fresh) - 1
            parents.append(node_of_row[fresh, d])
            child_codes.append(sorted_codes[fresh, d])
            level_starts.append(level_starts[-1] + int(fresh.sum()))
        parent = np.concatenate(parents)
        code = np.concatenate(child_codes)
        num_internal = level_starts[levels]

        allowed = np.zeros((num_internal, max_codes), dtype=bool)
        internal_edges = parent < num_internal  # every edge; parents are never leaves
        allowed[parent[internal_edges], code[internal_edges]] = True
        edge_keys = parent * max_codes + code  # already sorted: nodes are numbered in edge order
        leaf_item = np.empty(n, dtype=np.int64)
        leaf_item[node_of_row[:, levels] - level_starts[levels]] = order
        trie = cls(
            token_ids,
            tuple(level_starts),
            torch.from_numpy(allowed),
            torch.from_numpy(edge_keys),
            torch.from_numpy(leaf_item),
            item_ids,
        )
        logger.debug(
            "SID trie: %d items, %d levels, %d nodes (%d internal), allowed table %s",
            n,
            levels,
            trie.num_nodes,
            num_internal,
            tuple(allowed.shape),
        )
        return trie

    def to(self, device: torch.device | str) -> SIDTrie:
        """A copy whose tensors live on ``device`` (self when they already do)."""
        device = torch.device(device)
        if self.allowed.device == device:
            return self
        return SIDTrie(
            self.token_ids,
            self.level_starts,
            self.allowed.to(device),
            self.edge_keys.to(device),
            self.leaf_item.to(device),
            self.item_ids,
        )

    # -- sizes -------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.allowed.device

    @property
    def levels(self) -> int:
        return len(self.codebook_sizes)

    @property
    def max_codes(self) -> int:
        return self.allowed.shape[1]

    @property
    def num_nodes(self) -> int:
        return self.level_starts[-1]

    @property
    def num_internal(self) -> int:
        """Nodes with children: depths ``0 .. L - 1``."""
        return self.level_starts[self.levels]

    @property
    def num_items(self) -> int:
        return len(self.leaf_item)

    def __len__(self) -> int:
        return self.num_items

    def __repr__(self) -> str:
        return (
            f"SIDTrie(items={self.num_items}, codebook_sizes={list(self.codebook_sizes)}, "
            f"nodes={self.num_nodes}, device={self.device})"
        )

    # -- lookups (vectorized) ----------------------------------------------------------------

    def child(self, nodes: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Child of each internal node along ``codes``; -1 where that edge does not exist.

        Args:
            nodes: Internal node ids, any shape.
            codes: Codes, same shape (any integer; out-of-range codes give -1).
        """
        ok = (codes >= 0) & (codes < self.max_codes) & (nodes >= 0) & (nodes < self.num_internal)
        safe_nodes = torch.where(ok, nodes, 0)
        safe_codes = torch.where(ok, codes, 0)
        ok &= self.allowed[safe_nodes, safe_codes]
        child = torch.searchsorted(self.edge_keys, safe_nodes * self.max_codes + safe_codes) + 1
        return torch.where(ok, child, -1)

    def walk(self, codes: torch.Tensor) -> torch.Tensor:
        """Node of each code prefix: ``codes`` is ``(N, d)`` with ``d <= L``; -1 when off-trie."""
        node = torch.zeros(codes.shape[0], dtype=torch.long, device=codes.device)
        for d in range(codes.shape[1]):
            node = self.child(node, codes[:, d].long())  # child(-1, .) is -1
        return node

    def item_index(self, codes: torch.Tensor) -> torch.Tensor:
        """SID-map row of each ``(N, L)`` code tuple; -1 for tuples that are no item."""
        if codes.ndim != 2 or codes.shape[1] != self.levels:
            raise ValueError(f"expected (N, {self.levels}) codes, got {tuple(codes.shape)}")
        leaf = self.walk(codes.to(self.device))
        row = self.leaf_item[(leaf - self.num_internal).clamp(min=0)]
        return torch.where(leaf >= 0, row, -1)

    def item_id(self, row: int) -> str:
        """The item id of SID-map row ``row``.

        Raises:
            ValueError: The trie was built without item ids.
        """
        if self.item_ids is None:
            raise ValueError("this trie was built without item ids (use SIDTrie.from_sid_map)")
        return self.item_ids[row]

    def allowed_codes(self, nodes: torch.Tensor) -> torch.Tensor:
        """``(N, max_codes)`` bool: the codes that extend each internal node."""
        return self.allowed[nodes]


# -- span state: tails of token ids -> (in span, depth, node) -------------------------------------


def tails_of(input_ids: torch.Tensor, width: int, fill: int = -1) -> torch.Tensor:
    """The last ``width`` tokens of each row, left-filled with ``fill`` for shorter sequences."""
    if input_ids.shape[1] >= width:
        return input_ids[:, -width:]
    pad = input_ids.new_full((input_ids.shape[0], width - input_ids.shape[1]), fill)
    return torch.cat([pad, input_ids], dim=1)


@dataclass(frozen=True)
class SpanState:
    """Where each row stands relative to SID spans (see :func:`span_state`).

    Attributes:
        in_span: ``(N,)`` bool, a begin marker is among the last ``L + 1`` tokens and no end
            marker follows it.
        depth: ``(N,)`` int64, code tokens after the begin marker (``0..L``); 0 outside spans.
        node: ``(N,)`` int64, trie node of those codes (a leaf at depth ``L``); 0 outside spans
            and where the codes left the trie.
        off_trie: ``(N,)`` bool, inside a span whose tokens are not a trie prefix (a level
            token of the wrong level, a code no item uses, a non-SID token).
    """

    in_span: torch.Tensor
    depth: torch.Tensor
    node: torch.Tensor
    off_trie: torch.Tensor


def span_state(tails: torch.Tensor, trie: SIDTrie) -> SpanState:
    """Compute every row's span state from its last ``L + 1`` tokens, vectorized.

    Args:
        tails: ``(N, L + 1)`` token ids (:func:`tails_of`); entries < 0 are "no token".
        trie: The SID trie (on the device of ``tails``).

    Returns:
        The :class:`SpanState`. A window of ``L + 1`` tokens is enough: a span that is still
        open has at most ``L`` tokens after its marker, because the end marker is forced at
        depth ``L``.
    """
    levels = trie.levels
    width = levels + 1
    if tails.shape[1] != width:
        raise ValueError(f"tails must be (N, {width}), got {tuple(tails.shape)}")
    ids = trie.token_ids
    n = tails.shape[0]
    pos = torch.arange(width, device=tails.device)
    last_begin = torch.where(tails == ids.begin_id, pos, -1).amax(dim=1)  # (N,), -1: none
    after = pos[None, :] > last_begin[:, None]  # (N, W): tokens after the latest begin marker
    closed = (after & (tails == ids.end_id)).any(dim=1)
    in_span = (last_begin >= 0) & ~closed
    depth = torch.where(in_span, width - 1 - last_begin, 0)

    node = torch.zeros(n, dtype=torch.long, device=tails.device)
    off_trie = torch.zeros(n, dtype=torch.bool, device=tails.device)
    for level in range(levels):
        active = depth > level  # (N,) rows with a code token at this level
        at = (last_begin + 1 + level).clamp(0, width - 1)
        code = tails.gather(1, at[:, None]).squeeze(1) - trie.code_token_start[level]
        code = torch.where(code < trie.codebook[level], code, -1)  # another level's token
        child = trie.child(node, code)
        off_trie |= active & (child < 0)
        node = torch.where(active & ~off_trie, child, node)
    node = torch.where(off_trie, 0, node)
    return SpanState(in_span, depth, node, off_trie)


@dataclass(frozen=True)
class SIDConstraint:
    """What each row may emit next.

    Attributes:
        constrained: ``(N,)`` bool, the row is restricted; other rows are free text.
        forced: ``(N,)`` int64, the single allowed token of a restricted row, or -1.
        level: ``(N,)`` int64, the level whose codes a restricted row may emit, or -1.
        codes: ``(N, max_codes)`` bool, the allowed codes at ``level`` (all False where
            ``level`` is -1).
    """

    constrained: torch.Tensor
    forced: torch.Tensor
    level: torch.Tensor
    codes: torch.Tensor


def sid_constraint(
    tails: torch.Tensor,
    trie: SIDTrie,
    *,
    sid_only: bool = False,
    stop_token_id: int | None = None,
    check: bool = True,
    prefixes: PrefixSets | None = None,
    prefix_rows: torch.Tensor | None = None,
    item_filter: ItemFilter | None = None,
    filter_rows: torch.Tensor | None = None,
) -> SIDConstraint:
    """The next-token constraint of each row, from its tail.

    Inside a span at depth ``d < L`` a row may emit the level-``d`` codes that extend its trie
    node; at depth ``L`` only the end marker. Outside spans rows are free, unless ``sid_only``:
    then a row whose last token is the end marker (or ``stop_token_id`` right after it) must emit
    ``stop_token_id``, and any other row must open a span with the begin marker.

    Args:
        tails: ``(N, L + 1)`` last tokens of each row (:func:`tails_of`).
        trie: The SID trie.
        sid_only: The answer is exactly one SID followed by ``stop_token_id``.
        stop_token_id: Token forced after the end marker when ``sid_only`` (EOS / end of turn).
        check: Raise when a row sits in a span that left the trie (costs one device sync).
            Without the check such rows get no allowed token at all (every score -inf).
        prefixes: Per-row allowed SID prefixes (:class:`recllm.decode.prefixes.PrefixSets`,
            think-ahead): codes leading outside a row's set are removed too.
        prefix_rows: ``(N,)`` the row of ``prefixes`` each tail belongs to (e.g. ``n // beams``
            in beam search); ``arange(N)`` when None.
        item_filter: Per-row exclude / allow item sets
            (:class:`recllm.decode.filters.ItemFilter`): codes whose subtree holds no allowed,
            non-excluded item are removed too. None: no filter, no extra cost.
        filter_rows: ``(N,)`` the row of ``item_filter`` each tail belongs to; ``arange(N)``
            when None.

    Raises:
        ValueError: ``check`` and a row's span is off-trie (nothing valid could follow, so the
            row would otherwise be left with an empty allowed set), or ``sid_only`` without a
            ``stop_token_id``.
    """
    if sid_only and stop_token_id is None:
        raise ValueError("sid_only=True needs stop_token_id (the EOS / end-of-turn token id)")
    state = span_state(tails, trie)
    if check and bool(state.off_trie.any()):
        rows = state.off_trie.nonzero().flatten().tolist()
        raise ValueError(
            f"{len(rows)} row(s) are inside a SID span that is not a prefix of any catalog SID "
            f"(first: row {rows[0]}, last tokens {tails[rows[0]].tolist()}); the prompt holds a "
            "malformed or unknown SID, or the tokens were generated without this constraint. "
            "Fix: end SIDs in prompts with the end marker, and decode with the trie of the SID "
            "map the model was trained on"
        )
    ids = trie.token_ids
    levels = trie.levels
    on_trie = state.in_span & ~state.off_trie
    coding = on_trie & (state.depth < levels)
    closing = on_trie & (state.depth == levels)
    level = torch.where(coding, state.depth, -1)
    internal = torch.where(coding, state.node, 0)
    codes = trie.allowed[internal] & coding[:, None]  # (N, max_codes)
    if prefixes is not None:
        if prefix_rows is None:
            prefix_rows = torch.arange(tails.shape[0], device=tails.device)
        # a row at depth d steps into depth d + 1; restrict level by level (vectorized)
        for d in range(min(prefixes.depth, levels)):
            at = coding & (state.depth == d)
            if bool(at.any()):
                ok = prefixes.allowed_codes(trie, prefix_rows, internal, d)
                codes = torch.where(at[:, None], codes & ok, codes)
    if item_filter is not None:
        if filter_rows is None:
            filter_rows = torch.arange(tails.shape[0], device=tails.device)
        codes = codes & ~item_filter.removed_codes(filter_rows, internal)
    forced = torch.where(closing, ids.end_id, -1)
    # Off-trie rows (only reachable with check=False) stay restricted with nothing allowed.
    constrained = state.in_span
    if sid_only:
        last, prev = tails[:, -1], tails[:, -2]
        done = (last == ids.end_id) | ((last == stop_token_id) & (prev == ids.end_id))
        outside = ~state.in_span
        forced = torch.where(outside & done, stop_token_id, forced)
        forced = torch.where(outside & ~done, ids.begin_id, forced)
        constrained = constrained | outside
    return SIDConstraint(constrained, forced, level, codes)


def _block_mask(constraint: SIDConstraint, trie: SIDTrie) -> torch.Tensor:
    """``(N, num_sid_tokens)`` bool: allowed SID tokens of each row (markers included)."""
    ids = trie.token_ids
    n = constraint.level.shape[0]
    width = ids.num_tokens
    start = trie.code_token_start[constraint.level.clamp(min=0)] - ids.first_id  # (N,)
    cols = start[:, None] + torch.arange(trie.max_codes, device=start.device)
    # Disallowed codes and non-SID forced tokens write into one extra column, dropped below, so
    # no index depends on a device sync.
    cols = torch.where(constraint.codes, cols, width)
    forced = constraint.forced - ids.first_id
    forced = torch.where((forced >= 0) & (forced < width), forced, width)
    mask = torch.zeros((n, width + 1), dtype=torch.bool, device=start.device)
    mask.scatter_(1, torch.cat([cols, forced[:, None]], dim=1), True)
    return mask[:, :width]


def _forced_outside(constraint: SIDConstraint, trie: SIDTrie) -> torch.Tensor:
    """``(N,)`` bool: the row's forced token lies outside the SID block (EOS / end of turn)."""
    ids = trie.token_ids
    forced = constraint.forced
    return (forced >= 0) & ((forced < ids.first_id) | (forced > ids.last_id))


def constrain_scores(
    scores: torch.Tensor,
    constraint: SIDConstraint,
    trie: SIDTrie,
    *,
    inplace: bool = False,
) -> torch.Tensor:
    """``scores`` with -inf on every token a restricted row may not emit.

    Free rows are left unchanged, and allowed entries keep their value: applied to
    log-probabilities (Hugging Face beam search) the kept scores stay full-vocabulary
    log-probabilities. Cost: one write over the ``(N, vocab)`` scores plus one ``(N, K_l)``
    copy per level some row is at.

    Args:
        scores: ``(N, vocab)`` logits or log-probabilities.
        constraint: From :func:`sid_constraint`, for the same rows.
        trie: The SID trie.
        inplace: Overwrite ``scores`` and return it, instead of returning a new tensor. Saves
            allocating (and page-faulting) an ``(N, vocab)`` tensor per step, which dominates
            at 50k+ vocabularies; only for callers that own ``scores`` (see
            :class:`recllm.decode.processor.SIDLogitsProcessor`).
    """
    if scores.shape[1] <= trie.token_ids.last_id:
        raise ValueError(
            f"scores have {scores.shape[1]} columns but SID token ids go up to "
            f"{trie.token_ids.last_id}"
        )
    # Read what survives before anything is overwritten: per level some row is at, the
    # level's slice and which of its entries are allowed; per row, the forced token's value.
    kept = []
    for level in range(trie.levels):
        at_level = constraint.level == level  # (N,)
        if not bool(at_level.any()):
            continue
        lo = int(trie.code_token_start[level])
        width = trie.codebook_sizes[level]
        keep = constraint.codes[:, :width] & at_level[:, None]  # (N, K_level)
        values = scores[:, lo : lo + width]
        kept.append((lo, width, keep, values.clone() if inplace else values))
    forced = constraint.forced >= 0
    col = torch.where(forced, constraint.forced, 0)[:, None]  # (N, 1)
    forced_values = scores.gather(1, col)

    constrained = constraint.constrained
    everything = bool(constrained.all())
    if inplace:
        out = scores.fill_(float("-inf")) if everything else scores
        if not everything:
            out.masked_fill_(constrained[:, None], float("-inf"))
    elif everything:
        # Every row restricted (SID-only answers): a fill writes the output without reading
        # the scores, half the memory traffic of a masked copy.
        out = torch.full_like(scores, float("-inf"))
    else:
        out = scores.masked_fill(constrained[:, None], float("-inf"))  # (N, vocab)
    for lo, width, keep, values in kept:
        out[:, lo : lo + width] = torch.where(keep, values, out[:, lo : lo + width])
    # Forced tokens: one write per row; rows without one write back the value they hold.
    out.scatter_(1, col, torch.where(forced[:, None], forced_values, out.gather(1, col)))
    return out


def allowed_token_mask(constraint: SIDConstraint, trie: SIDTrie, vocab_size: int) -> torch.Tensor:
    """``(N, vocab_size)`` bool, True where a row may emit the token (all True for free rows)."""
    ids = trie.token_ids
    n = constraint.constrained.shape[0]
    mask = torch.zeros((n, vocab_size), dtype=torch.bool, device=constraint.constrained.device)
    mask[:, ids.first_id : ids.last_id + 1] = _block_mask(constraint, trie)
    outside = _forced_outside(constraint, trie)
    col = torch.where(outside, constraint.forced, 0)[:, None]
    mask.scatter_(1, col, outside[:, None] | mask.gather(1, col))
    return mask | ~constraint.constrained[:, None]
