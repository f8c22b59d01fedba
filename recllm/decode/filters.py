"""Per-row item filters inside the SID trie: exclude items, or keep to an allow-list.

A recommender is asked to skip what the user has seen and to keep to an allow-list (in stock, a
region, a category). :class:`ItemFilter` applies both inside the constraint: at a trie node a
code is allowed only if some item under its child is allowed and not excluded, so beam search,
sampling and greedy search never spend a beam on an item that would be dropped afterwards, and a
top ``k`` holds ``k`` admissible items.

**How.** A filter is, per row, the set of ``(node, code)`` edges whose subtree has no live item
left. They are stored sparsely: a sorted int64 tensor of keys ``row * num_internal + node`` (the
internal nodes where something is removed) and a bool table ``removed`` of shape
``(keys + 1, max_codes)`` whose last row is all False (what a node without a key looks up, so
the step is one gather, without a broadcast ``&`` of the hit mask: that ``&`` alone cost 7x the
gather). The constrained step then does, for the ``(rows,)`` nodes it masks, one
``searchsorted`` and one ``(rows, max_codes)`` gather: ``O(rows x codes)``, as the unfiltered
mask. Building it costs ``O(excluded x levels)`` per row:

- exclude: walk each excluded item's leaf up to the root, count the excluded items under each
  node on those paths (``torch.unique`` over the keys), and mark the edges into nodes whose count
  equals the number of items under them (:attr:`TrieIndex.subtree`);
- allow: the live items (allowed and not excluded) mark their paths; at every node on those paths
  the codes without a live child are removed. An allow-list longer than half the catalog is
  turned into the exclusion of its complement, whichever is shorter.

Rows without a filter have no keys: their codes are the trie's. A caller with no filter at all
passes None and runs exactly the unfiltered code. A row whose filter leaves no item is refused
when the filter is built (it would have no allowed token).

**Growing.** :meth:`ItemFilter.with_excluded` returns the filter with more items excluded on some
rows (a slate decoder excludes the items already in each beam's slate, step by step); it
rebuilds from the filter's source pairs, still ``O(excluded x levels)``.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch

from recllm.decode.trie import SIDTrie
from recllm.errors import UserError, clip

__all__ = ["ItemFilter", "TrieIndex", "trie_index"]


@dataclass(frozen=True)
class TrieIndex:
    """Per-node facts of a trie the filters need (built once per trie, :func:`trie_index`).

    Attributes:
        parent: ``(num_nodes,)`` int64, the parent of each node (the root's is 0).
        code: ``(num_nodes,)`` int64, the code of the edge into each node (the root's is 0).
        subtree: ``(num_nodes,)`` int64, the number of items under each node.
        item_leaf: ``(num_items,)`` int64, the leaf node of each SID-map row.
        rows_by_id: Item id -> SID-map row (empty when the trie has no item ids).
    """

    parent: torch.Tensor
    code: torch.Tensor
    subtree: torch.Tensor
    item_leaf: torch.Tensor
    rows_by_id: Mapping[str, int]


_INDEXES: weakref.WeakKeyDictionary[SIDTrie, TrieIndex] = weakref.WeakKeyDictionary()


def trie_index(trie: SIDTrie) -> TrieIndex:
    """The :class:`TrieIndex` of ``trie`` (cached while the trie lives)."""
    index = _INDEXES.get(trie)
    if index is not None:
        return index
    device = trie.device
    n = trie.num_nodes
    parent = torch.zeros(n, dtype=torch.long, device=device)
    code = torch.zeros(n, dtype=torch.long, device=device)
    parent[1:] = trie.edge_keys // trie.max_codes  # edge v - 1 leads into node v
    code[1:] = trie.edge_keys % trie.max_codes
    subtree = torch.zeros(n, dtype=torch.long, device=device)
    subtree[trie.num_internal :] = 1  # one item per leaf
    for depth in range(trie.levels, 0, -1):  # children before parents
        lo, hi = trie.level_starts[depth], trie.level_starts[depth + 1]
        subtree.index_add_(0, parent[lo:hi], subtree[lo:hi].clone())
    item_leaf = torch.empty(trie.num_items, dtype=torch.long, device=device)
    item_leaf[trie.leaf_item] = torch.arange(trie.num_internal, n, device=device)
    rows_by_id = {} if trie.item_ids is None else {i: r for r, i in enumerate(trie.item_ids)}
    index = TrieIndex(parent, code, subtree, item_leaf, rows_by_id)
    _INDEXES[trie] = index
    return index


@dataclass(frozen=True)
class ItemFilter:
    """Per-row exclude / allow sets compiled into the trie (see the module docstring).

    Build it with :meth:`from_items` (SID-map rows) or :meth:`from_ids` (item ids).

    Attributes:
        keys: Sorted int64 ``row * num_internal + node`` of the internal nodes where a row has
            codes removed.
        removed: ``(len(keys) + 1, max_codes)`` bool, the removed codes at each keyed node, then
            one all-False row (for nodes without a key).
        filtered: ``(rows,)`` bool, the rows that have a filter.
        excluded: ``(E, 2)`` int64 ``(row, SID-map row)`` pairs excluded (the source).
        allowed: ``(A, 2)`` int64 ``(row, SID-map row)`` pairs of the allow-lists (the source).
        allow_rows: ``(rows,)`` bool, the rows that have an allow-list.
        num_internal: Internal nodes of the trie the keys index (checked against the trie).
        num_items: Items of that trie.
    """

    keys: torch.Tensor
    removed: torch.Tensor
    filtered: torch.Tensor
    excluded: torch.Tensor
    allowed: torch.Tensor
    allow_rows: torch.Tensor
    num_internal: int
    num_items: int

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def from_items(
        cls,
        trie: SIDTrie,
        exclude: Sequence[Iterable[int] | None] | None = None,
        allow: Sequence[Iterable[int] | None] | None = None,
    ) -> ItemFilter:
        """The filter of per-row SID-map rows to exclude and to allow.

        Args:
            trie: The catalog trie.
            exclude: Per row, the SID-map rows of the items it must not emit (or None).
            allow: Per row, the only SID-map rows it may emit (or None: every item).
                ``exclude`` and ``allow`` have one entry per row when both are given.

        Raises:
            ValueError: Lists of different lengths, a row index outside the catalog, or a row
                whose filter leaves no item.
        """
        if exclude is None and allow is None:
            raise ValueError("an ItemFilter needs exclude or allow (or pass no filter: None)")
        rows = len(exclude) if exclude is not None else len(allow)  # type: ignore[arg-type]
        if exclude is not None and allow is not None and len(allow) != rows:
            raise ValueError(f"{len(exclude)} exclude rows but {len(allow)} allow rows")
        ex_pairs, al_pairs, allow_rows = [], [], []
        for r in range(rows):
            ex = None if exclude is None else exclude[r]
            al = None if allow is None else allow[r]
            if ex is not None:
                ex_pairs.extend((r, int(x)) for x in ex)
            allow_rows.append(al is not None)
            if al is not None:
                al_pairs.extend((r, int(x)) for x in al)
        device = trie.device
        return cls._build(
            trie,
            _pairs(ex_pairs, device),
            _pairs(al_pairs, device),
            torch.tensor(allow_rows, dtype=torch.bool, device=device),
        )

    @classmethod
    def from_ids(
        cls,
        trie: SIDTrie,
        exclude: Sequence[Iterable[str] | None] | None = None,
        allow: Sequence[Iterable[str] | None] | None = None,
        *,
        where: str = "",
    ) -> ItemFilter:
        """:meth:`from_items` with item ids (the trie must know them, :meth:`SIDTrie.from_sid_map`).

        Args:
            where: Prefix of the error's location (``"request "``: ``request exclude``).

        Raises:
            UserError: An unknown item id (naming ``exclude`` or ``allow`` and the id), or a row
                whose filter leaves no item.
        """
        index = trie_index(trie)
        if trie.item_ids is None:
            raise ValueError("this trie was built without item ids (use SIDTrie.from_sid_map)")

        def rows_of(key: str, lists):
            if lists is None:
                return None
            out = []
            for ids in lists:
                if ids is None:
                    out.append(None)
                    continue
                if isinstance(ids, str | bytes):
                    raise UserError(
                        f"{where}{key}",
                        f"must be a list of item ids, got the string {clip(ids)}",
                        f'send a list, e.g. "{key}": ["item1", "item2"]',
                    )
                row = []
                for i in ids:
                    at = index.rows_by_id.get(str(i)) if not isinstance(i, bool) else None
                    if at is None:
                        raise UserError(
                            f"{where}{key}",
                            f"unknown item id {clip(i)}: not in the catalog of "
                            f"{trie.num_items} items this model decodes",
                            f"send item ids from that catalog (e.g. {trie.item_ids[0]!r})",
                        )
                    row.append(at)
                out.append(row)
            return out

        try:
            return cls.from_items(trie, rows_of("exclude", exclude), rows_of("allow", allow))
        except _EmptyRow as e:
            names = " and ".join(
                k for k, v in (("allow", allow), ("exclude", exclude)) if v is not None
            )
            raise UserError(
                f"{where}{names}",
                f"leave no catalog item to recommend (row {e.row})",
                "allow at least one item that is not excluded",
            ) from None

    @classmethod
    def _build(
        cls,
        trie: SIDTrie,
        excluded: torch.Tensor,
        allowed: torch.Tensor,
        allow_rows: torch.Tensor,
    ) -> ItemFilter:
        index = trie_index(trie)
        n_items, n_int, width = trie.num_items, trie.num_internal, trie.max_codes
        rows = int(allow_rows.shape[0])
        device = trie.device
        for pairs in (excluded, allowed):
            if pairs.numel() and not bool(((pairs[:, 1] >= 0) & (pairs[:, 1] < n_items)).all()):
                bad = pairs[(pairs[:, 1] < 0) | (pairs[:, 1] >= n_items)][0].tolist()
                raise ValueError(f"row {bad[0]}: item row {bad[1]} is outside [0, {n_items})")
        excluded = _unique_pairs(excluded, n_items)
        allowed = _unique_pairs(allowed, n_items)
        filtered = torch.zeros(rows, dtype=torch.bool, device=device)
        filtered[excluded[:, 0]] = True
        filtered |= allow_rows

        # Per allow row: keep mode (mark the live items' paths) when the allow-list is at most
        # half the catalog, else the exclusion of its complement.
        allow_count = torch.bincount(allowed[:, 0], minlength=rows)
        keep_rows = allow_rows & (allow_count <= n_items // 2)
        wide_rows = allow_rows & ~keep_rows
        drop_pairs = [excluded]
        if bool(wide_rows.any()):
            for r in wide_rows.nonzero().flatten().tolist():
                mask = torch.ones(n_items, dtype=torch.bool, device=device)
                mask[allowed[allowed[:, 0] == r, 1]] = False
                items = mask.nonzero().flatten()
                drop_pairs.append(torch.stack([torch.full_like(items, r), items], dim=1))
        drop = _unique_pairs(torch.cat(drop_pairs), n_items)
        in_keep = keep_rows[drop[:, 0]]
        keep_excluded = drop[in_keep]
        drop = drop[~in_keep]
        live = allowed[keep_rows[allowed[:, 0]]]
        if keep_excluded.numel():  # live = allowed minus excluded, on keep rows
            a = live[:, 0] * n_items + live[:, 1]
            e = keep_excluded[:, 0] * n_items + keep_excluded[:, 1]
            live = live[~torch.isin(a, e)]

        # A row is empty when everything is dropped (exclude mode) or nothing lives (keep mode).
        dropped = torch.bincount(drop[:, 0], minlength=rows)
        live_count = torch.bincount(live[:, 0], minlength=rows)
        empty = (~keep_rows & (dropped >= n_items)) | (keep_rows & (live_count == 0))
        if bool(empty.any()):
            raise _EmptyRow(int(empty.nonzero()[0]))

        key_parts, code_parts = [], []
        # Exclude mode: count dropped items per node on their paths; a node whose count is its
        # subtree size is dead, so the edge into it is removed.
        row, node = drop[:, 0], index.item_leaf[drop[:, 1]]
        count = torch.ones_like(row)  # dropped items under each (row, node) entry
        for _depth in range(trie.levels, 0, -1):
            key, inverse = torch.unique(row * trie.num_nodes + node, return_inverse=True)
            count = torch.zeros_like(key).index_add_(0, inverse, count)
            r, v = key // trie.num_nodes, key % trie.num_nodes
            dead = count == index.subtree[v]
            key_parts.append(r[dead] * n_int + index.parent[v[dead]])
            code_parts.append(index.code[v[dead]])
            row, node = r, index.parent[v]
        keys = torch.cat(key_parts) if key_parts else torch.zeros(0, dtype=torch.long)
        codes = torch.cat(code_parts) if code_parts else torch.zeros(0, dtype=torch.long)

        # Keep mode: the children of each node on a live path are kept, every other code goes.
        keep_keys, keep_codes = [], []
        row, node = live[:, 0], index.item_leaf[live[:, 1]]
        for _depth in range(trie.levels, 0, -1):
            key = torch.unique(row * trie.num_nodes + node)
            r, v = key // trie.num_nodes, key % trie.num_nodes
            keep_keys.append(r * n_int + index.parent[v])
            keep_codes.append(index.code[v])
            row, node = r, index.parent[v]

        all_keys = [keys, *keep_keys]
        uniq = torch.unique(torch.cat(all_keys)) if any(k.numel() for k in all_keys) else keys
        removed = torch.zeros((uniq.numel() + 1, width), dtype=torch.bool, device=device)
        if keys.numel():
            removed[torch.searchsorted(uniq, keys), codes] = True
        if keep_keys:
            kk, kc = torch.cat(keep_keys), torch.cat(keep_codes)
            if kk.numel():
                at = torch.searchsorted(uniq, kk)
                keyed = torch.unique(at)
                kept = torch.zeros((keyed.numel(), width), dtype=torch.bool, device=device)
                kept[torch.searchsorted(keyed, at), kc] = True
                nodes = uniq[keyed] % n_int
                removed[keyed] = trie.allowed[nodes] & ~kept
        return cls(
            uniq,
            removed,
            filtered,
            excluded,
            allowed,
            allow_rows,
            n_int,
            n_items,
        )

    # -- use ---------------------------------------------------------------------------------

    @property
    def rows(self) -> int:
        return int(self.filtered.shape[0])

    @property
    def device(self) -> torch.device:
        return self.keys.device

    def to(self, device: torch.device | str) -> ItemFilter:
        device = torch.device(device)
        if self.keys.device == device:
            return self
        return ItemFilter(
            self.keys.to(device),
            self.removed.to(device),
            self.filtered.to(device),
            self.excluded.to(device),
            self.allowed.to(device),
            self.allow_rows.to(device),
            self.num_internal,
            self.num_items,
        )

    def check_trie(self, trie: SIDTrie) -> None:
        if (trie.num_internal, trie.num_items) != (self.num_internal, self.num_items):
            raise ValueError(
                f"this item filter indexes a trie of {self.num_items} items and "
                f"{self.num_internal} internal nodes, the decoder's has {trie.num_items} and "
                f"{trie.num_internal}; Fix: build it with the decoder's SID trie"
            )

    def removed_codes(self, rows: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        """``(*nodes.shape, max_codes)`` bool: the codes the filter removes at each internal
        node (``rows``, broadcastable to ``nodes``, are the filter rows). One ``searchsorted``
        and one gather: no per-row Python."""
        n = self.keys.numel()
        if not n:
            return self.removed[torch.zeros_like(nodes)]  # the all-False row
        key = rows * self.num_internal + nodes
        at = torch.searchsorted(self.keys, key).clamp(max=n - 1)
        at = torch.where(self.keys[at] == key, at, n)  # no key: the all-False last row
        return self.removed[at]

    def allows_items(self, rows: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Whether each row may emit each SID-map row (a check for callers and tests)."""
        rows, items = torch.broadcast_tensors(rows, items)
        key = rows * self.num_items + items
        ok = torch.ones_like(items, dtype=torch.bool)
        if self.excluded.numel():
            ok &= ~torch.isin(key, self.excluded[:, 0] * self.num_items + self.excluded[:, 1])
        restricted = self.allow_rows[rows]
        allowed = torch.isin(key, self.allowed[:, 0] * self.num_items + self.allowed[:, 1])
        return ok & (allowed | ~restricted)

    def slice(self, start: int, stop: int) -> ItemFilter:
        """Rows ``start .. stop - 1`` as their own filter (a batch of a longer prompt list)."""
        stop = min(stop, self.rows)
        lo = int(torch.searchsorted(self.keys, torch.tensor(start * self.num_internal)))
        hi = int(torch.searchsorted(self.keys, torch.tensor(stop * self.num_internal)))

        def part(pairs: torch.Tensor) -> torch.Tensor:
            keep = (pairs[:, 0] >= start) & (pairs[:, 0] < stop)
            return pairs[keep] - torch.tensor([start, 0], device=pairs.device)

        return ItemFilter(
            self.keys[lo:hi] - start * self.num_internal,
            torch.cat([self.removed[lo:hi], self.removed[-1:]]),
            self.filtered[start:stop],
            part(self.excluded),
            part(self.allowed),
            self.allow_rows[start:stop],
            self.num_internal,
            self.num_items,
        )

    def repeat_rows(self, times: int) -> ItemFilter:
        """Each row ``times`` times in a row (row ``r`` becomes rows ``r*times .. r*times +
        times - 1``): one filter row per beam, for a decoder that then grows them apart."""
        step = torch.arange(times, device=self.device)

        def spread(pairs: torch.Tensor) -> torch.Tensor:
            out = pairs[:, None, :].repeat(1, times, 1)
            out[..., 0] = pairs[:, None, 0] * times + step
            return out.reshape(-1, 2)

        r, node = self.keys // self.num_internal, self.keys % self.num_internal
        keys = ((r[:, None] * times + step) * self.num_internal + node[:, None]).reshape(-1)
        removed = self.removed[:-1].repeat_interleave(times, dim=0)
        order = keys.argsort()
        return ItemFilter(
            keys[order],
            torch.cat([removed[order], self.removed[-1:]]),
            self.filtered.repeat_interleave(times),
            spread(self.excluded),
            spread(self.allowed),
            self.allow_rows.repeat_interleave(times),
            self.num_internal,
            self.num_items,
        )

    def with_excluded(self, trie: SIDTrie, rows: torch.Tensor, items: torch.Tensor) -> ItemFilter:
        """This filter with SID-map rows ``items`` also excluded on filter rows ``rows`` (1-D,
        same length; e.g. the items already in each beam's slate).

        Raises:
            ValueError: A row would be left with no item (catch it to end that beam).
        """
        self.check_trie(trie)
        extra = torch.stack([rows.long(), items.long()], dim=1).to(self.device)
        return ItemFilter._build(
            trie, torch.cat([self.excluded, extra]), self.allowed, self.allow_rows
        )

    @classmethod
    def stack(cls, trie: SIDTrie, filters: Mapping[int, ItemFilter], rows: int) -> ItemFilter:
        """One filter of ``rows`` rows from one-row filters placed at the given rows (the slots
        of a vLLM batch); other rows are unfiltered."""
        device = trie.device
        keys, removed, ex, al = [], [], [], []
        filtered = torch.zeros(rows, dtype=torch.bool, device=device)
        allow_rows = torch.zeros(rows, dtype=torch.bool, device=device)
        for slot, f in sorted(filters.items()):
            f.check_trie(trie)
            keys.append(f.keys + slot * f.num_internal)
            removed.append(f.removed[:-1])
            ex.append(f.excluded + torch.tensor([slot, 0], device=device))
            al.append(f.allowed + torch.tensor([slot, 0], device=device))
            filtered[slot] = bool(f.filtered[0])
            allow_rows[slot] = bool(f.allow_rows[0])
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return cls(
            torch.cat(keys) if keys else empty,
            torch.cat(
                [*removed, torch.zeros((1, trie.max_codes), dtype=torch.bool, device=device)]
            ),
            filtered,
            torch.cat(ex) if ex else empty.view(0, 2),
            torch.cat(al) if al else empty.view(0, 2),
            allow_rows,
            trie.num_internal,
            trie.num_items,
        )


class _EmptyRow(ValueError):
    def __init__(self, row: int) -> None:
        self.row = row
        super().__init__(
            f"row {row}: its exclude / allow sets leave no catalog item; Fix: allow at least one "
            "item that is not excluded"
        )


def _pairs(pairs: list[tuple[int, int]], device: torch.device) -> torch.Tensor:
    if not pairs:
        return torch.zeros((0, 2), dtype=torch.long, device=device)
    return torch.tensor(pairs, dtype=torch.long, device=device)


def _unique_pairs(pairs: torch.Tensor, n_items: int) -> torch.Tensor:
    """Sorted, deduplicated ``(row, item)`` pairs."""
    if not pairs.numel():
        return pairs.view(0, 2)
    key = torch.unique(pairs[:, 0] * n_items + pairs[:, 1])
    return torch.stack([key // n_items, key % n_items], dim=1)
