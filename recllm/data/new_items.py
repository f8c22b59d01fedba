"""Reading a file of new items (a fresh catalog's additions) for ``recllm sid assign``.

One row per item: an id column (``item_id``, or ``id`` / ``item`` / ``asin`` / ``parent_asin``)
and text columns. Formats: JSONL, CSV, TSV, Parquet (by suffix). Every fault is a
:class:`DataError` naming the file, the line (or row) and the fix.

Text is a new item's only signal (it has no interactions), so an item with no text is refused.
Ids already in the catalog are refused too (:func:`check_new_ids`): existing items never move,
so a file cannot update an existing item's code or text.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from recllm.data.errors import DataError
from recllm.data.reading import TABLE_SUFFIXES, check_file, iter_table
from recllm.data.types import Catalog

ID_COLUMNS = ("item_id", "id", "item", "asin", "parent_asin")
_FIX_FILE = "pass a .jsonl, .csv, .tsv or .parquet file with an item_id column and text columns"


def read_new_items(path: str | Path, text_fields: list[str] | None = None) -> Catalog:
    """Read new items as a :class:`Catalog` (file order).

    Args:
        path: The new-items file.
        text_fields: Columns to keep as text, in order (default: every column but the id; the
            SID quantizer then embeds the fields the build used).

    Raises:
        DataError: Another format, no id column, a missing text column, an item with no text,
            or a duplicate id; the message names the file and line and the fix.
    """
    p = check_file(Path(path), "new-items file", _FIX_FILE)
    if p.suffix not in TABLE_SUFFIXES:
        raise DataError(
            p, f"unsupported format {p.suffix or '(no suffix)'!r}", _FIX_FILE + " (by suffix)"
        )
    columns, rows = iter_table(p)
    id_col = next((c for c in ID_COLUMNS if c in columns), None)
    if id_col is None:
        raise DataError(
            p,
            f"no item id column (looked for {', '.join(ID_COLUMNS)}; the columns are "
            f"{columns[:8]})",
            "name the id column item_id",
            line=1 if p.suffix in (".csv", ".tsv", ".jsonl") else None,
        )
    fields = list(text_fields) if text_fields is not None else [c for c in columns if c != id_col]
    missing = [f for f in fields if f not in columns]
    if missing:
        raise DataError(
            p,
            f"no column {missing[0]!r} (the columns are {columns[:8]})",
            "add the column, or choose text fields among the file's columns",
        )
    items: dict[str, dict[str, str]] = {}
    first_line: dict[str, str] = {}
    for line, key, row in rows:
        where = {"line": line} if line is not None else {"key": key}
        raw = row.get(id_col)
        item = "" if raw is None else str(raw).strip()
        if not item:
            raise DataError(p, f"empty {id_col}", "give every row an item id", **where)
        if item in items:
            raise DataError(
                p,
                f"duplicate item id {item!r} (first at {first_line[item]})",
                "keep one row per new item",
                **where,
            )
        text = {f: ("" if row.get(f) is None else str(row.get(f)).strip()) for f in fields}
        if not any(text.values()):
            raise DataError(
                p,
                f"item {item!r} has no text in {fields}",
                "give it a title or description: text is a new item's only signal (it has no "
                "interactions), so an item without text cannot get a meaningful code",
                **where,
            )
        items[item] = text
        first_line[item] = f"line {line}" if line is not None else str(key)
    if not items:
        raise DataError(p, "no items in the file", "add one row per new item")
    return Catalog(items, tuple(fields))


def check_new_ids(new_catalog: Catalog, existing_ids: Iterable[str], source: str) -> None:
    """Refuse new items whose ids are already in the catalog.

    Raises:
        DataError: Names a few such ids, says that they are refused (existing items never move:
            their codes, text and token rows stay as the model learned them) and the fix.
    """
    existing = set(existing_ids)
    clash = [i for i in new_catalog.ids if i in existing]
    if clash:
        raise DataError(
            source,
            f"{len(clash)} item id(s) are already in the catalog (e.g. {clash[:3]}); they are "
            "refused, not updated: existing items never move (their codes and text stay as the "
            "model learned them)",
            "remove those rows from the file (to change an existing item's text, rebuild the "
            "SIDs and retrain), or give genuinely new items new ids",
            key=clash[0],
        )
