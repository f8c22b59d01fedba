"""The SID map: item id <-> code tuple, the one object vocab/, decode/ and eval/ use.

On disk it is one JSON file, ``sid_map.json``, written atomically::

    {"format": "recllm.sid_map/1", "content_hash": "...", "codebook_sizes": [256, 256, 256],
     "items": {"item_id": [12, 200, 7], ...}, "meta": {config, embedding source, versions}}

``content_hash`` covers the item ids, their codes and the codebook sizes (not ``meta``), so two
maps with the same hash assign the same codes; loading recomputes it and refuses a file whose
codes were edited. The file holds no timestamps: the same data, config and seed give a
byte-identical file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recllm.errors import UserError
from recllm.io import write_text_atomic

FORMAT = "recllm.sid_map/1"
FILENAME = "sid_map.json"


def content_hash(item_ids: list[str], codes: np.ndarray, codebook_sizes: tuple[int, ...]) -> str:
    """SHA-256 over the canonical JSON of ids, codes and codebook sizes."""
    payload = json.dumps(
        {
            "sizes": list(codebook_sizes),
            "items": [[i, c] for i, c in zip(item_ids, codes.tolist(), strict=True)],
        },
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass
class SIDMap:
    """A unique assignment of code tuples to items.

    Attributes:
        item_ids: Items, in catalog order.
        codes: ``(N, L)`` int64 codes, unique rows.
        codebook_sizes: Number of codes at each level.
        meta: How the map was made (config, embedding source, library versions, ...).
    """

    item_ids: list[str]
    codes: np.ndarray
    codebook_sizes: tuple[int, ...]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.codes = np.asarray(self.codes, dtype=np.int64)
        self.codebook_sizes = tuple(int(k) for k in self.codebook_sizes)
        if self.codes.ndim != 2 or len(self.codes) != len(self.item_ids):
            raise ValueError(
                f"codes must be (items, levels) = ({len(self.item_ids)}, L); got {self.codes.shape}"
            )
        if self.codes.shape[1] != len(self.codebook_sizes):
            raise ValueError(
                f"{self.codes.shape[1]} code levels but {len(self.codebook_sizes)} codebook sizes"
            )
        if len(set(self.item_ids)) != len(self.item_ids):
            raise ValueError("duplicate item ids in the SID map")
        bad = (self.codes < 0) | (self.codes >= np.asarray(self.codebook_sizes))
        if bad.any():
            row, level = np.argwhere(bad)[0]
            raise ValueError(
                f"item {self.item_ids[row]!r}: code {self.codes[row, level]} at level {level} is "
                f"outside [0, {self.codebook_sizes[level]})"
            )
        if len(np.unique(self.codes, axis=0)) != len(self.codes):
            raise ValueError(
                "the codes are not unique; resolve collisions first (recllm.sid.collisions)"
            )
        self._by_code = {
            tuple(c): i for i, c in zip(self.item_ids, self.codes.tolist(), strict=True)
        }
        self._row = {item: k for k, item in enumerate(self.item_ids)}

    def __len__(self) -> int:
        return len(self.item_ids)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._row

    @property
    def levels(self) -> int:
        return len(self.codebook_sizes)

    @property
    def content_hash(self) -> str:
        return content_hash(self.item_ids, self.codes, self.codebook_sizes)

    def code(self, item_id: str) -> tuple[int, ...]:
        """The code tuple of an item.

        Raises:
            KeyError: The item is not in the map.
        """
        try:
            return tuple(int(c) for c in self.codes[self._row[item_id]])
        except KeyError:
            raise KeyError(f"item {item_id!r} is not in the SID map") from None

    def item(self, code: tuple[int, ...] | list[int]) -> str | None:
        """The item holding ``code``, or None if no item does."""
        return self._by_code.get(tuple(int(c) for c in code))

    def items_with_prefix(self, prefix: tuple[int, ...] | list[int]) -> list[str]:
        """Items whose code starts with ``prefix``, in catalog order (all items for ``()``)."""
        prefix = [int(c) for c in prefix]
        if len(prefix) > self.levels:
            return []
        if not prefix:
            return list(self.item_ids)
        hit = (self.codes[:, : len(prefix)] == np.asarray(prefix)).all(axis=1)
        return [self.item_ids[k] for k in np.flatnonzero(hit)]

    def to_json(self) -> str:
        doc = {
            "format": FORMAT,
            "content_hash": self.content_hash,
            "codebook_sizes": list(self.codebook_sizes),
            "items": dict(zip(self.item_ids, self.codes.tolist(), strict=True)),
            "meta": self.meta,
        }
        return json.dumps(doc, indent=1, ensure_ascii=False, sort_keys=False) + "\n"

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``sid_map.json`` into directory ``path`` (or to ``path`` if it ends in .json),
        atomically. Returns the file path."""
        p = Path(path)
        target = p if p.suffix == ".json" else p / FILENAME
        return write_text_atomic(target, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SIDMap:
        """Read a map written by :meth:`save` and check its content hash.

        Args:
            path: An artifact directory holding ``sid_map.json``, or the file itself.

        Raises:
            UserError: The file is missing, truncated or corrupt, not a recllm SID map, or its
                codes do not match its content hash; the message names the file and the fix.
        """
        p = Path(path)
        target = p / FILENAME if p.is_dir() else p
        rebuild = (
            "rebuild it with `recllm sid build --data DATA --out DIR --overwrite` (or restore "
            "the file saved with the model)"
        )
        if not target.is_file():
            raise UserError(
                target,
                "no such file" if not target.exists() else "not a file",
                f"pass a SID artifact directory written by `recllm sid build`, or its {FILENAME}",
            )
        try:
            doc = json.loads(target.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise UserError(target, "not UTF-8 text: the file is corrupt", rebuild) from None
        except json.JSONDecodeError as e:
            # A parser position alone does not say what happened: a save cut short (an old
            # non-atomic copy, a full disk, a partial download) ends the JSON early.
            state = "truncated" if not e.doc.rstrip().endswith("}") else "corrupt"
            raise UserError(
                target,
                f"the file is {state}, not valid JSON ({e.msg} at line {e.lineno})",
                rebuild,
            ) from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise UserError(
                target,
                f"not a recllm SID map (format {FORMAT!r})",
                "build one with `recllm sid build`, or import published SIDs with "
                "SIDMap.from_index_json",
            )
        try:
            items = doc["items"]
            sid_map = cls(
                list(items),
                np.asarray(list(items.values()), dtype=np.int64),
                tuple(doc["codebook_sizes"]),
                doc.get("meta", {}),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            problem = f"missing key {e}" if isinstance(e, KeyError) else str(e)
            raise UserError(target, f"not a valid SID map ({problem})", rebuild) from None
        if sid_map.content_hash != doc.get("content_hash"):
            raise UserError(
                target,
                "content hash mismatch (the codes were changed after the map was written)",
                rebuild,
            )
        return sid_map

    @classmethod
    def from_index_json(cls, path: str | os.PathLike[str], resolve: str | None = None) -> SIDMap:
        """Import SIDs published in the LC-Rec / LETTER ``*.index.json`` format.

        Args:
            path: ``{"item": ["<a_12>", "<b_3>", ...]}``.
            resolve: How to handle shared codes, as in :func:`recllm.sid.collisions.resolve_collisions`
                without vectors: only ``"extra-level"`` applies. None raises on collisions.
        """
        from recllm.sid.collisions import add_extra_level

        item_ids, codes = read_index_json(path)
        sizes = tuple(int(c) + 1 for c in codes.max(0))
        if resolve == "extra-level":
            codes, extra = add_extra_level(codes)
            sizes = (*sizes, extra)
        elif resolve is not None:
            raise ValueError(f"resolve must be None or 'extra-level', not {resolve!r}")
        return cls(item_ids, codes, sizes, {"imported_from": str(path)})


_TOKEN = re.compile(r"<([a-z])_(\d+)>")


def read_index_json(path: str | os.PathLike[str]) -> tuple[list[str], np.ndarray]:
    """Item ids and ``(N, L)`` codes of an LC-Rec / LETTER ``*.index.json`` file (collisions kept).

    Raises:
        UserError: Not JSON, a token is not ``<x_N>``, or items have different numbers of levels.
    """
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(
            path,
            f"not a valid JSON index file, truncated or corrupt ({e})",
            "download the published *.index.json again",
        ) from None
    if not isinstance(doc, dict):
        raise UserError(path, "not an index file ({item: [tokens]})", "pass a *.index.json file")
    item_ids, rows = [], []
    for item, tokens in doc.items():
        row = []
        for level, tok in enumerate(tokens):
            m = _TOKEN.fullmatch(tok)
            if m is None or ord(m.group(1)) - ord("a") != level:
                raise UserError(
                    f"{path} [key {item!r}]",
                    f"token {tok!r} is not <{chr(97 + level)}_N>",
                    "write level L's code N as <x_N>, x the L-th letter (a = level 0)",
                )
            row.append(int(m.group(2)))
        item_ids.append(item)
        rows.append(row)
    if len({len(r) for r in rows}) != 1:
        raise UserError(
            path, "items have different numbers of levels", "give every item one token per level"
        )
    return item_ids, np.asarray(rows, dtype=np.int64)
