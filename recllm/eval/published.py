"""Published figures the benchmark scripts print beside their own, read from ``published.yaml``.

The table (package data next to this module) holds one entry per dataset: how a data directory
is recognised, the protocol, and rows of figures, each with its source. :func:`load_published`
reads and checks it; :func:`match_dataset` names the entry a data directory belongs to.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from recllm.errors import UserError

#: The columns of the published tables.
COLUMNS = ("recall@5", "ndcg@5", "recall@10", "ndcg@10")
#: The packaged table.
PUBLISHED_YAML = "published.yaml"


@dataclass(frozen=True)
class PublishedRow:
    """One method's figures on one dataset, and where they were published."""

    name: str
    source: str
    metrics: dict[str, float]


@dataclass(frozen=True)
class PublishedTable:
    """A dataset's entry: how its directories are recognised, its protocol and its rows."""

    key: str
    title: str
    protocol: str
    names: tuple[str, ...]
    rows: tuple[PublishedRow, ...]


def _table(key: str, entry: Any, where: str) -> PublishedTable:
    if not isinstance(entry, dict):
        raise UserError(f"{where} [{key}]", "not a mapping", "give title, match, protocol, rows")
    unknown = set(entry) - {"title", "match", "protocol", "rows"}
    if unknown:
        raise UserError(f"{where} [{key}]", f"unknown keys {sorted(unknown)}", "remove them")
    names = (entry.get("match") or {}).get("names") or []
    if not names or not all(isinstance(n, str) for n in names):
        raise UserError(f"{where} [{key}.match.names]", "no folder names", "list one or more")
    rows = []
    for i, row in enumerate(entry.get("rows") or []):
        at = f"{where} [{key}.rows[{i}]]"
        if not isinstance(row, dict) or not row.get("name") or not row.get("source"):
            raise UserError(at, "a row needs a name and a source", "add both")
        metrics = {k: v for k, v in row.items() if k not in ("name", "source")}
        bad = sorted(set(metrics) - set(COLUMNS))
        if bad:
            raise UserError(at, f"unknown columns {bad}", f"use {COLUMNS}")
        if not metrics:
            raise UserError(at, "no figures", f"give at least one of {COLUMNS}")
        for k, v in metrics.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
                raise UserError(at, f"{k} {v!r} is not a number in [0, 1]", "fix the figure")
        rows.append(PublishedRow(str(row["name"]), str(row["source"]), metrics))
    return PublishedTable(
        key=key,
        title=str(entry.get("title") or key),
        protocol=str(entry.get("protocol") or ""),
        names=tuple(n.lower() for n in names),
        rows=tuple(rows),
    )


def load_published(path: str | Path | None = None) -> dict[str, PublishedTable]:
    """The published tables, by dataset key (default: the packaged ``published.yaml``).

    Raises:
        UserError: A row without a source, an unknown column, a figure outside [0, 1], or an
            entry without folder names to match.
    """
    import yaml

    if path is None:
        text = resources.files("recllm.eval").joinpath(PUBLISHED_YAML).read_text("utf-8")
        where = f"recllm/eval/{PUBLISHED_YAML}"
    else:
        text, where = Path(path).read_text("utf-8"), str(path)
    doc = yaml.safe_load(text) or {}
    if not isinstance(doc, dict):
        raise UserError(where, "not a mapping of dataset keys", "write `KEY: {...}` entries")
    return {str(k): _table(str(k), v, where) for k, v in doc.items()}


@cache
def _packaged() -> dict[str, PublishedTable]:
    return load_published()


def match_dataset(
    data_path: str | Path, tables: dict[str, PublishedTable] | None = None
) -> str | None:
    """The key of the table ``data_path`` belongs to, or None when no entry matches.

    The folder's name is tried first (``amazon_p5/beauty`` -> beauty), then the stems of the
    files in it (``Scientific.inter.json`` -> scientific). A file path is matched by its folder
    and its own stem.

    Raises:
        UserError: The files match several entries (pass ``--dataset NAME``).
    """
    tables = _packaged() if tables is None else tables
    path = Path(data_path)
    folder = path if path.is_dir() else path.parent
    files = [path] if path.is_file() else sorted(p for p in folder.glob("*") if p.is_file())

    def keys_for(name: str) -> list[str]:
        return [k for k, t in tables.items() if name.lower() in t.names]

    if by_folder := keys_for(folder.resolve().name):
        return by_folder[0]
    found = sorted({k for f in files for k in keys_for(f.name.split(".", 1)[0])})
    if len(found) > 1:
        raise UserError(
            folder, f"its files match several published tables {found}", "pass --dataset NAME"
        )
    return found[0] if found else None


def published_rows(key: str, tables: dict[str, PublishedTable] | None = None) -> dict[str, dict]:
    """``{row name: figures}`` of dataset ``key`` (missing columns as NaN).

    Raises:
        UserError: No such dataset key.
    """
    tables = _packaged() if tables is None else tables
    if key not in tables:
        raise UserError(
            f"--dataset {key}", "no published table of that name", f"one of {sorted(tables)}"
        )
    return {r.name: {c: r.metrics.get(c, math.nan) for c in COLUMNS} for r in tables[key].rows}


#: TIGER (NeurIPS 2023) Table 1 and other published rows on Amazon Beauty (P5 split).
BEAUTY_PUBLISHED = published_rows("beauty")
