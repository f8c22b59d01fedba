"""Per-row allowed SID prefixes over the catalog trie: the runtime half of think-ahead.

OneRec-Think's think-ahead (appendix A.3.4 of the paper) lets a slow reasoning model choose, offline,
a small set of SID prefixes per user (the first ``P`` levels, e.g. ``P = 2``), and a fast model
decodes at request time with its trie restricted to that user's set. :class:`PrefixSets` is that
restriction as tensors, for a whole batch:

- Each row ``r`` has a set of allowed trie nodes: the nodes of its prefixes and all their
  ancestors, stored as one sorted int64 tensor of keys ``r * num_nodes + node`` over every row.
  Membership of a ``(rows, candidates)`` block of child nodes is one ``searchsorted``: no
  per-row Python in the decoding loop, and memory proportional to the prefixes, not to
  ``rows x nodes``.
- A code step into depth ``d <= P`` is allowed when the child node is in the row's set; below
  depth ``P`` nothing more is restricted (the walk is already inside an allowed prefix), so every
  item under an allowed prefix stays reachable and no allowed continuation is ever masked.
- A row built from ``None`` is unrestricted (the full trie): a user the prefix file does not
  cover decodes as without think-ahead. A row with an empty set is refused at construction, as it
  would leave the row with no allowed token at all.

The restriction composes with the catalog trie (it only removes codes), so every answer remains
a catalog item; :func:`recllm.decode.trie.sid_constraint`, :func:`recllm.decode.beam.sid_beam_search`
and the vLLM logits processor accept it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from recllm.decode.trie import SIDTrie

__all__ = ["PrefixSets", "read_prefix_file", "write_prefix_file"]


@dataclass(frozen=True)
class PrefixSets:
    """Allowed SID prefixes per row (see the module docstring).

    Build it with :meth:`from_prefixes`.

    Attributes:
        keys: Sorted int64 ``row * num_nodes + node`` of every allowed node of every
            restricted row (the prefixes' nodes and their ancestors, the root excluded).
        restricted: ``(rows,)`` bool, False for unrestricted rows.
        depth: Prefix length ``P`` (levels restricted: the first ``P``).
        num_nodes: Nodes of the trie the keys index (checked against the trie in use).
    """

    keys: torch.Tensor
    restricted: torch.Tensor
    depth: int
    num_nodes: int

    @property
    def rows(self) -> int:
        return int(self.restricted.shape[0])

    @property
    def device(self) -> torch.device:
        return self.keys.device

    def to(self, device: torch.device | str) -> PrefixSets:
        device = torch.device(device)
        if self.keys.device == device:
            return self
        return PrefixSets(
            self.keys.to(device), self.restricted.to(device), self.depth, self.num_nodes
        )

    @classmethod
    def from_prefixes(
        cls, trie: SIDTrie, prefixes: Sequence[Iterable[Sequence[int]] | None]
    ) -> PrefixSets:
        """The sets of code prefixes given per row.

        Args:
            trie: The catalog trie the prefixes index.
            prefixes: Per row, the allowed prefixes as code tuples of one common length ``P``
                (``1 <= P <= L``), or None for an unrestricted row.

        Raises:
            ValueError: Prefixes of mixed or bad length, a prefix that is no catalog prefix
                (a file made for another SID map), or a restricted row with no prefix.
        """
        depth = None
        flat: list[Sequence[int]] = []
        owner: list[int] = []
        restricted = []
        for row, entry in enumerate(prefixes):
            if entry is None:
                restricted.append(False)
                continue
            entry = [tuple(int(c) for c in p) for p in entry]
            if not entry:
                raise ValueError(
                    f"row {row}: an empty prefix set would leave no item to decode; Fix: give at "
                    "least one prefix, or None for an unrestricted row"
                )
            restricted.append(True)
            for p in entry:
                if depth is None:
                    depth = len(p)
                if len(p) != depth:
                    raise ValueError(
                        f"row {row}: prefix {list(p)} has {len(p)} levels, others {depth}; "
                        "Fix: give every prefix the same length"
                    )
                flat.append(p)
                owner.append(row)
        depth = depth or 1
        if not 1 <= depth <= trie.levels:
            raise ValueError(f"prefixes have {depth} levels; the SIDs have {trie.levels}")
        keys = torch.zeros(0, dtype=torch.long)
        if flat:
            codes = torch.tensor(flat, dtype=torch.long, device=trie.device)
            rows = torch.tensor(owner, dtype=torch.long, device=trie.device)
            parts = []
            node = torch.zeros(len(flat), dtype=torch.long, device=trie.device)
            for d in range(depth):
                node = trie.child(node, codes[:, d])
                if bool((node < 0).any()):
                    bad = int((node < 0).nonzero()[0])
                    raise ValueError(
                        f"row {owner[bad]}: prefix {list(flat[bad])} is not a prefix of any "
                        "catalog SID; Fix: make the prefixes with this model's SID map"
                    )
                parts.append(rows * trie.num_nodes + node)
            keys = torch.unique(torch.cat(parts))  # sorted
        return cls(
            keys.to(trie.device),
            torch.tensor(restricted, dtype=torch.bool, device=trie.device),
            depth,
            trie.num_nodes,
        )

    def slice(self, start: int, stop: int) -> PrefixSets:
        """Rows ``start .. stop - 1`` as their own sets (a batch of a longer prompt list)."""
        stop = min(stop, self.rows)
        lo = torch.searchsorted(self.keys, torch.tensor(start * self.num_nodes, device=self.device))
        hi = torch.searchsorted(self.keys, torch.tensor(stop * self.num_nodes, device=self.device))
        return PrefixSets(
            self.keys[int(lo) : int(hi)] - start * self.num_nodes,
            self.restricted[start:stop],
            self.depth,
            self.num_nodes,
        )

    def allows(self, rows: torch.Tensor, child: torch.Tensor, child_depth: int) -> torch.Tensor:
        """Whether each row may step into ``child`` (a node at ``child_depth``).

        Args:
            rows: Row index (into these sets) of each entry, broadcastable to ``child``.
            child: Node ids (any shape); entries < 0 (no such edge) come back False.
            child_depth: Depth of the children (``1..L``): the code level plus one.
        """
        exists = child >= 0
        if child_depth > self.depth:
            return exists
        rows = torch.broadcast_to(rows, child.shape)
        key = rows * self.num_nodes + child.clamp(min=0)
        if self.keys.numel():
            at = torch.searchsorted(self.keys, key).clamp(max=self.keys.numel() - 1)
            hit = self.keys[at] == key
        else:
            hit = torch.zeros_like(exists)
        return exists & (hit | ~self.restricted[rows])

    def allowed_codes(
        self, trie: SIDTrie, rows: torch.Tensor, nodes: torch.Tensor, level: int
    ) -> torch.Tensor:
        """``(*nodes.shape, max_codes)`` bool: the level-``level`` codes that extend each node
        inside the trie AND the row's prefix set (``rows`` broadcastable to ``nodes``)."""
        self.check_trie(trie)
        codes = torch.arange(trie.max_codes, device=nodes.device)
        child = trie.child(nodes[..., None].expand(*nodes.shape, trie.max_codes), codes)
        rows = torch.broadcast_to(rows, nodes.shape)[..., None]
        return self.allows(rows, child, level + 1)

    def check_trie(self, trie: SIDTrie) -> None:
        if trie.num_nodes != self.num_nodes:
            raise ValueError(
                f"these prefix sets index a trie of {self.num_nodes} nodes, the decoder's has "
                f"{trie.num_nodes}; Fix: build them with the decoder's SID trie"
            )


# -- the think-ahead file --------------------------------------------------------------------------


def write_prefix_file(
    path: str | os.PathLike[str],
    user_ids: Sequence[str],
    prefixes: Sequence[Sequence[Sequence[int]]],
    *,
    sid_map_hash: str,
    record: dict[str, Any],
) -> Path:
    """Save per-user prefix sets as Parquet (``user_id``, ``prefixes``: a list of code lists),
    atomically; the SID map's content hash and ``record`` go into the file's metadata."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from recllm.io import atomic_path

    table = pa.table(
        {
            "user_id": pa.array(list(user_ids), pa.string()),
            "prefixes": pa.array(
                [[list(map(int, p)) for p in row] for row in prefixes],
                pa.list_(pa.list_(pa.int32())),
            ),
        }
    )
    meta = {"recllm": json.dumps({**record, "sid_map_hash": sid_map_hash})}
    table = table.replace_schema_metadata(meta)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return Path(path)


def read_prefix_file(
    path: str | os.PathLike[str], sid_map_hash: str | None = None
) -> tuple[dict[str, list[tuple[int, ...]]], dict[str, Any]]:
    """Per-user prefix sets and the record of a file written by :func:`write_prefix_file`.

    Raises:
        UserError: Not such a file, or (with ``sid_map_hash``) made with another SID map, whose
            codes mean other items.
    """
    import json

    import pyarrow.parquet as pq

    from recllm.errors import UserError

    path = Path(path)
    try:
        table = pq.read_table(path)
        record = json.loads((table.schema.metadata or {})[b"recllm"])
    except (OSError, KeyError, ValueError) as e:
        raise UserError(
            f"--prefixes {path}",
            f"is not a think-ahead prefix file ({type(e).__name__})",
            "make one with `recllm think-ahead --out FILE.parquet`",
        ) from None
    if sid_map_hash is not None and record.get("sid_map_hash") != sid_map_hash:
        raise UserError(
            f"--prefixes {path}",
            "was made with another SID map than this model's (its codes mean other items)",
            "run think-ahead with a reasoning model that shares this model's SID map",
        )
    users = table.column("user_id").to_pylist()
    sets = table.column("prefixes").to_pylist()
    return {u: [tuple(p) for p in s] for u, s in zip(users, sets, strict=True)}, record
