"""Loaders for the dataset layouts recommendation research uses, with format auto-detection.

Supported layouts (``detect_format`` picks one from the files present):

- ``recbole``: RecBole atomic files, ``NAME.inter`` (+ ``NAME.item``), tab-separated with
  ``field:type`` headers (MovieLens-100K as shipped by RecBole).
- ``p5``: ``sequential_data.txt`` (``user item item ...`` per line, chronological) +
  ``datamaps.json`` (``id2item``) + an ``ASIN text`` item-text file (P5 / TIGER splits).
- ``lcrec``: ``NAME.inter.json`` (``{user: [item, ...]}``) + ``NAME.item.json``
  (``{item: {title, description, ...}}``) (LC-Rec, LETTER).
- ``generic``: an interactions table (CSV, TSV, Parquet or JSONL; one row per interaction with
  named user, item and optional timestamp columns) + an optional items table with text columns.
  A directory holding ``interactions.<ext>`` and ``items.<ext>`` is detected as this layout.

Every loader validates as it reads and raises :class:`DataError` naming the file, the line or
key, and the fix. Recoverable cases (short histories, unused items, empty text) are cleaned and
counted in the log.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from recllm.data.config import DEFAULT_TIME_COL, FORMATS, DataConfig
from recllm.data.errors import DataError
from recllm.data.fetch import KNOWN_DATASETS, resolve
from recllm.data.reading import (
    TABLE_SUFFIXES,
    check_file,
    iter_lines,
    iter_table,
    read_json,
)
from recllm.data.types import Catalog, Interactions, RecDataset

logger = logging.getLogger(__name__)

_ITEMS_FILE_FIX = (
    "pass --items_file with the path of an existing file (the items table, the P5 `ASIN text` "
    "file or NAME.item.json), or leave it out to use the one next to the interactions"
)


def _as_text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, (list, tuple)):
        return ", ".join(_as_text(v) for v in value if _as_text(v))
    return str(value).strip()


_TIME_FIX = (
    "write seconds since the epoch or an ISO 8601 date, or pass --time_col none to use file order"
)


def _parse_time(value: Any, path: Path, line: int | None, key: str | None, col: str) -> float:
    """A timestamp in seconds: a finite number, or an ISO 8601 date (UTC unless it says)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DataError(path, f"empty timestamp in column {col!r}", _TIME_FIX, line=line, key=key)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number: float | None = float(value)
        text = str(value)
    else:
        text = str(value).strip()
        try:
            number = float(text)
        except ValueError:
            number = None
    if number is not None:
        # nan compares false with everything and inf sorts last: either would silently move
        # the row (into the test window of a temporal split), so both are refused.
        if not math.isfinite(number):
            raise DataError(
                path,
                f"timestamp {text!r} in column {col!r} is not a finite number",
                _TIME_FIX,
                line=line,
                key=key,
            )
        return number
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise DataError(
            path,
            f"timestamp {text!r} in column {col!r} is neither a number nor ISO 8601",
            _TIME_FIX,
            line=line,
            key=key,
        ) from None
    if when.tzinfo is None:
        # Local time would make the seconds (and, across DST changes, the order) depend on the
        # machine's time zone; UTC keeps a dataset's timestamps the same everywhere.
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def _time_index(columns: list[str], cfg: DataConfig, path: Path) -> int | None:
    """The index of the time column, None for file order; a mistyped name is an error.

    The default name (``timestamp``) may be absent: the data then has no time and file order is
    the chronology (a warning names the columns). A name the user chose must exist.
    """
    if not cfg.time_col:
        return None
    if cfg.time_col in columns:
        return columns.index(cfg.time_col)
    if cfg.time_col == DEFAULT_TIME_COL:
        logger.warning(
            "%s: no %r column (columns: %s): histories follow file order; pass --time_col COL "
            "to sort by time",
            path,
            cfg.time_col,
            columns,
        )
        return None
    raise DataError(
        path,
        f"no time column {cfg.time_col!r} (columns: {columns})",
        "pass --time_col with one of the columns, or --time_col none to use file order",
        key=cfg.time_col,
    )


def _single(directory: Path, pattern: str, what: str, fix: str) -> Path | None:
    found = sorted(directory.glob(pattern))
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise DataError(directory, f"several {what} files ({names})", fix)
    return found[0] if found else None


# --------------------------------------------------------------------------- detection


def detect_format(path: Path) -> str:
    """Name the loader for ``path`` from the files present.

    Raises:
        DataError: Nothing recognisable there.
    """
    if not path.exists():
        raise DataError(
            path,
            "no such file or directory",
            f"give a dataset directory or file, or a dataset name: {sorted(KNOWN_DATASETS)}",
        )
    if path.is_file():
        name = path.name
        if name.endswith(".inter"):
            return "recbole"
        if name.endswith(".inter.json"):
            return "lcrec"
        if name == "sequential_data.txt":
            return "p5"
        if path.suffix in TABLE_SUFFIXES:
            return "generic"
    else:
        if (path / "sequential_data.txt").is_file():
            return "p5"
        if any(path.glob("*.inter")):
            return "recbole"
        if any(path.glob("*.inter.json")) and any(path.glob("*.item.json")):
            return "lcrec"
        if any((path / f"interactions{s}").is_file() for s in TABLE_SUFFIXES):
            return "generic"
    raise DataError(
        path,
        "cannot tell the dataset format",
        "use one of the layouts: RecBole (NAME.inter + NAME.item), P5 (sequential_data.txt + "
        "datamaps.json + item text), LC-Rec (NAME.inter.json + NAME.item.json), or generic "
        f"(interactions{{{','.join(TABLE_SUFFIXES)}}} + items table); or set --data_format",
    )


def load_rec_dataset(
    source: str | Path | None = None, config: DataConfig | None = None
) -> RecDataset:
    """Load, validate and clean a dataset.

    Args:
        source: Path or dataset name; default ``config.data_path``.
        config: Reading and cleaning options; default :class:`DataConfig`.

    Returns:
        The dataset, with users below ``min_interactions`` and unused items dropped (counted in
        ``RecDataset.dropped`` and the log).

    Raises:
        DataError: Malformed input; the message names the file, line or key, and the fix.
    """
    cfg = config or DataConfig()
    if source is not None:
        cfg = replace(cfg, data_path=str(source))
    path = resolve(cfg.data_path, kind="dataset")
    fmt = cfg.data_format or detect_format(path)
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose from {FORMATS}")
    loader = {
        "recbole": _load_recbole,
        "p5": _load_p5,
        "lcrec": _load_lcrec,
        "generic": _load_generic,
    }[fmt]
    catalog, interactions = loader(path, cfg)
    name = (
        cfg.data_path
        if cfg.data_path in KNOWN_DATASETS
        # resolve(): the parent of a bare file name (`log.csv`) has an empty name
        else (path if path.is_dir() else path.parent).resolve().name
    )
    dataset = _clean(RecDataset(name, catalog, interactions, source=str(path), format=fmt), cfg)
    if cfg.holdout_items:  # the cold-start split: the SIDs and model never see these items
        from recllm.data.holdout import read_holdout_items, remove_from_catalog

        held = read_holdout_items(cfg.holdout_items)
        dataset = replace(
            dataset,
            catalog=remove_from_catalog(dataset.catalog, held, cfg.holdout_items),
            dropped={**dataset.dropped, "items_held_out": len(held)},
        )
    logger.info(
        "loaded %s (%s): %d users, %d items, %d interactions",
        dataset.name,
        fmt,
        dataset.interactions.num_users,
        len(dataset.catalog),
        dataset.interactions.num_interactions,
    )
    return dataset


def _clean(ds: RecDataset, cfg: DataConfig) -> RecDataset:
    # Duplicates first: they would count towards min_interactions.
    inter, duplicates = ds.interactions.drop_duplicate_events()
    if duplicates:
        logger.warning(
            "dropped %d duplicate events (same user, item and timestamp): a repeated log row "
            "would put the target in its own history",
            duplicates,
        )
    elif inter.timestamps is None and (repeats := inter.consecutive_repeats()):
        # Without timestamps a repeat may be a real re-purchase or a duplicated row; the
        # published P5 / LC-Rec splits have none, so keeping them changes no published number.
        logger.warning(
            "%d events repeat the item just before them; kept, since without timestamps a "
            "repeat purchase cannot be told from a duplicated row (remove duplicated rows "
            "upstream if that is what they are)",
            repeats,
        )
    if cfg.max_users is not None and cfg.max_users < inter.num_users:
        logger.info(
            "keeping the first %d of %d users (--max_users)", cfg.max_users, inter.num_users
        )
        inter = inter.subset(list(inter.sequences)[: cfg.max_users])
    short = [u for u, s in inter.sequences.items() if len(s) < cfg.min_interactions]
    if short:
        logger.warning(
            "dropped %d users with fewer than %d interactions", len(short), cfg.min_interactions
        )
        inter = inter.subset(
            u for u in inter.sequences if len(inter.sequences[u]) >= cfg.min_interactions
        )
    if not inter.sequences:
        raise DataError(
            ds.source,
            f"no user has {cfg.min_interactions} or more interactions",
            "check the user/item columns, or lower --min_interactions",
        )
    catalog = ds.catalog
    unused = 0
    if cfg.drop_unused_items:
        used = inter.item_ids()
        unused = len(catalog) - len(used & set(catalog.items))
        if unused:
            logger.warning("dropped %d catalog items that occur in no history", unused)
            catalog = catalog.subset(used)
    if catalog.title_field:
        empty = sum(1 for t in catalog.items.values() if not t[catalog.title_field])
        if empty:
            logger.warning(
                "%d items have an empty %r; their id stands in for the title",
                empty,
                catalog.title_field,
            )
    dropped = {"duplicate_events": duplicates, "users_short": len(short), "items_unused": unused}
    return replace(ds, catalog=catalog, interactions=inter, dropped=dropped)


def _select_fields(available: list[str], cfg: DataConfig, where: Path) -> tuple[str, ...]:
    if cfg.text_fields is None:
        return tuple(available)
    missing = [f for f in cfg.text_fields if f not in available]
    if missing:
        raise DataError(
            where,
            f"text field(s) {missing} not in the item data (available: {available})",
            "pass --text_fields with names from the available list",
            key=missing[0],
        )
    return tuple(cfg.text_fields)


def _sorted_by_time(
    seqs: dict[str, list[str]], times: dict[str, list[float]] | None
) -> Interactions:
    if times is None:
        return Interactions(seqs)
    for user, seq in seqs.items():
        ts = times[user]
        order = sorted(range(len(seq)), key=ts.__getitem__)  # stable: ties keep file order
        seqs[user] = [seq[i] for i in order]
        times[user] = [ts[i] for i in order]
    return Interactions(seqs, times)


def _unknown_item(
    path: Path, item: str, catalog_file: Path | str, *, line=None, key=None
) -> DataError:
    return DataError(
        path,
        f"item {item!r} is not in the catalog {catalog_file}",
        "add the item to the catalog or remove the interaction",
        line=line,
        key=key,
    )


# --------------------------------------------------------------------------- RecBole atomic


def _read_atomic(path: Path) -> tuple[list[str], list[str], Iterator[tuple[int, list[str]]]]:
    """Header names, header types, and streamed ``(line, values)`` rows of a RecBole atomic file."""
    lines = iter_lines(path)
    n, first = next(lines)
    while not first.strip():  # blank lines before the header
        n, first = next(lines)
    header = first.split("\t")
    names, types = [], []
    for h in header:
        name, sep, typ = h.partition(":")
        if not sep:
            raise DataError(
                path, f"header field {h!r} has no ':type'", "write headers as name:type", line=n
            )
        names.append(name)
        types.append(typ)

    def rows() -> Iterator[tuple[int, list[str]]]:
        any_row = False
        for n, text in lines:
            if not text.strip():
                continue
            values = text.split("\t")
            if len(values) != len(names):
                raise DataError(
                    path,
                    f"expected {len(names)} tab-separated fields ({', '.join(header)}), "
                    f"found {len(values)}",
                    "separate fields with single tabs and fill every column",
                    line=n,
                )
            any_row = True
            yield n, values
        if not any_row:
            raise DataError(path, "the file has a header but no rows", "add data rows")

    return names, types, rows()


def _col(names: list[str], col: str, path: Path, flag: str) -> int:
    if col not in names:
        raise DataError(
            path,
            f"no column {col!r} (columns: {names})",
            f"pass {flag} with one of the columns",
            key=col,
        )
    return names.index(col)


def _load_recbole(path: Path, cfg: DataConfig) -> tuple[Catalog, Interactions]:
    if path.is_file():
        inter_file = path
    else:
        inter_file = _single(path, "*.inter", ".inter", "keep one dataset per directory")
        if inter_file is None:  # only reachable with an explicit --format recbole
            raise DataError(
                path,
                "no NAME.inter file of the RecBole layout",
                "add it, or pass the --format that matches the files (or leave --format out)",
            )
    if cfg.items_file:
        item_file = check_file(Path(cfg.items_file), "items file", _ITEMS_FILE_FIX)
    else:
        item_file = inter_file.with_suffix(".item")
    catalog = _load_recbole_items(item_file, cfg) if item_file.exists() else None
    if catalog is None:
        logger.warning("%s not found: items have no text", item_file)

    names, _, rows = _read_atomic(inter_file)
    u_i = _col(names, cfg.user_col, inter_file, "--user_col")
    i_i = _col(names, cfg.item_col, inter_file, "--item_col")
    t_i = _time_index(names, cfg, inter_file)
    seqs: dict[str, list[str]] = {}
    times: dict[str, list[float]] | None = {} if t_i is not None else None
    # One str object per distinct item id, shared by every history that holds it: on a large
    # log this, not the text, dominates memory.
    seen_items: dict[str, str] = {}
    for n, v in rows:
        user, item = v[u_i].strip(), v[i_i].strip()
        if not user or not item:
            raise DataError(inter_file, "empty user or item id", "fill in both ids", line=n)
        if catalog is not None and item not in catalog:
            raise _unknown_item(inter_file, item, item_file, line=n)
        seqs.setdefault(user, []).append(seen_items.setdefault(item, item))
        if times is not None:
            assert t_i is not None and cfg.time_col is not None
            times.setdefault(user, []).append(
                _parse_time(v[t_i], inter_file, n, None, cfg.time_col)
            )
    if catalog is None:
        catalog = Catalog({i: {} for i in seen_items}, ())
    return catalog, _sorted_by_time(seqs, times)


def _load_recbole_items(item_file: Path, cfg: DataConfig) -> Catalog:
    names, types, rows = _read_atomic(item_file)
    id_i = _col(names, cfg.item_col, item_file, "--item_col")
    text_cols = [
        n
        for n, t in zip(names, types, strict=True)
        if n != cfg.item_col and t in ("token", "token_seq")
    ]
    fields = _select_fields(text_cols, cfg, item_file)
    idx = [names.index(f) for f in fields]
    items: dict[str, dict[str, str]] = {}
    first_line: dict[str, int] = {}
    for n, v in rows:
        item = v[id_i].strip()
        if item in items:
            raise DataError(
                item_file,
                f"duplicate item id {item!r} (first on line {first_line[item]})",
                "keep one row per item",
                line=n,
            )
        items[item] = {f: v[j].strip() for f, j in zip(fields, idx, strict=True)}
        first_line[item] = n
    return Catalog(items, fields)


# --------------------------------------------------------------------------- P5


def _load_p5(path: Path, cfg: DataConfig) -> tuple[Catalog, Interactions]:
    directory = path if path.is_dir() else path.parent
    seq_file = directory / "sequential_data.txt"
    maps_file = directory / "datamaps.json"
    for f in (seq_file, maps_file):
        if not f.is_file():
            raise DataError(
                f,
                "missing file of the P5 layout",
                "the P5 layout needs sequential_data.txt and datamaps.json side by side",
            )
    if cfg.items_file:
        text_file = check_file(Path(cfg.items_file), "items file", _ITEMS_FILE_FIX)
    else:
        found = _single(
            directory, "*item_text*.txt", "item-text", "pass --items_file to choose one"
        )
        if found is None:
            raise DataError(
                directory,
                "no item-text file (*item_text*.txt) next to sequential_data.txt",
                "add an `ASIN text` file per item, or pass --items_file PATH",
            )
        text_file = found

    maps = read_json(maps_file)
    if not isinstance(maps, dict) or not isinstance(maps.get("id2item"), dict):
        raise DataError(
            maps_file,
            "no 'id2item' object",
            "use P5's datamaps.json (id2item: id -> ASIN)",
            key="id2item",
        )
    id2item: dict[str, str] = maps["id2item"]

    texts: dict[str, str] = {}
    for n, line in iter_lines(text_file):
        if not line.strip():
            continue
        asin, _, text = line.partition(" ")
        asin = asin.strip()
        if asin in texts:
            raise DataError(text_file, f"duplicate item {asin!r}", "keep one line per item", line=n)
        texts[asin] = text.strip()
    fields = _select_fields(["text"], cfg, text_file)
    items: dict[str, dict[str, str]] = {}
    for item_id, asin in id2item.items():
        if asin not in texts:
            raise DataError(
                text_file,
                f"no text line for item {item_id} (ASIN {asin})",
                "add a line `ASIN text` for it",
                key=asin,
            )
        items[item_id] = {f: texts[asin] for f in fields}

    seqs: dict[str, list[str]] = {}
    user_line: dict[str, int] = {}
    for n, line in iter_lines(seq_file):
        parts = line.split()
        if not parts:
            continue
        user, history = parts[0], parts[1:]
        if not history:
            raise DataError(
                seq_file,
                f"user {user!r} has an empty history",
                "remove the line or add the user's items",
                line=n,
            )
        if user in seqs:
            raise DataError(
                seq_file,
                f"user {user!r} appears twice (first on line {user_line[user]})",
                "merge the user's histories into one line",
                line=n,
            )
        for item in history:
            if item not in items:
                raise _unknown_item(seq_file, item, maps_file, line=n)
        seqs[user] = history
        user_line[user] = n
    return Catalog(items, fields), Interactions(seqs)


# --------------------------------------------------------------------------- LC-Rec


def _load_lcrec(path: Path, cfg: DataConfig) -> tuple[Catalog, Interactions]:
    if path.is_file():
        inter_file = path
        item_file = path.with_name(path.name.removesuffix(".inter.json") + ".item.json")
    else:
        inter_file = _single(path, "*.inter.json", ".inter.json", "keep one dataset per directory")
        if inter_file is None:  # only reachable with an explicit --format lcrec
            raise DataError(
                path,
                "no NAME.inter.json file of the LC-Rec layout",
                "add it, or pass the --format that matches the files (or leave --format out)",
            )
        item_file = inter_file.with_name(inter_file.name.removesuffix(".inter.json") + ".item.json")
    if cfg.items_file:
        item_file = check_file(Path(cfg.items_file), "items file", _ITEMS_FILE_FIX)
    check_file(
        item_file, "item file", "put NAME.item.json next to NAME.inter.json, or pass --items_file"
    )

    raw_items = read_json(item_file, what="item id")
    if not isinstance(raw_items, dict) or not raw_items:
        raise DataError(
            item_file,
            "expected a non-empty object {item_id: {field: text}}",
            "write the items as one JSON object",
        )
    available: list[str] = []
    for record in raw_items.values():
        if isinstance(record, dict):
            available.extend(k for k in record if k not in available)
    fields = _select_fields(available, cfg, item_file)
    items: dict[str, dict[str, str]] = {}
    for item_id, record in raw_items.items():
        if not isinstance(record, dict):
            raise DataError(
                item_file,
                "item value is not an object of text fields",
                'write {"title": ..., ...}',
                key=item_id,
            )
        lacking = [f for f in fields if f not in record]
        if lacking:
            raise DataError(
                item_file,
                f"item lacks text field(s) {lacking}",
                "add the field (an empty string is allowed) or choose --text_fields",
                key=item_id,
            )
        items[item_id] = {f: _as_text(record[f]) for f in fields}

    raw_inter = read_json(inter_file, what="user id")
    if not isinstance(raw_inter, dict):
        raise DataError(
            inter_file, "expected an object {user_id: [item_id, ...]}", "write one JSON object"
        )
    seqs: dict[str, list[str]] = {}
    for user, history in raw_inter.items():
        if not isinstance(history, list):
            raise DataError(
                inter_file, "history is not a list of item ids", "write [item, item, ...]", key=user
            )
        if not history:
            raise DataError(inter_file, "empty history", "remove the user or add items", key=user)
        seq = [str(i) for i in history]
        for pos, item in enumerate(seq):
            if item not in items:
                raise _unknown_item(inter_file, item, item_file, key=f"{user}[{pos}]")
        seqs[str(user)] = seq
    return Catalog(items, fields), Interactions(seqs)


# --------------------------------------------------------------------------- generic tables


def _table_file(directory: Path, stem: str) -> Path | None:
    for s in TABLE_SUFFIXES:
        if (directory / f"{stem}{s}").is_file():
            return directory / f"{stem}{s}"
    return None


def _load_generic(path: Path, cfg: DataConfig) -> tuple[Catalog, Interactions]:
    if path.is_dir():
        inter_file = _table_file(path, "interactions")
        if inter_file is None:
            raise DataError(
                path, "no interactions table", f"add interactions{{{','.join(TABLE_SUFFIXES)}}}"
            )
        item_file = _table_file(path, "items")
    else:
        inter_file = path
        item_file = _table_file(path.parent, "items")
    if cfg.items_file:
        item_file = check_file(Path(cfg.items_file), "items file", _ITEMS_FILE_FIX)
    if inter_file.suffix not in TABLE_SUFFIXES:
        raise DataError(
            inter_file,
            f"unsupported table type {inter_file.suffix!r}",
            f"use one of {TABLE_SUFFIXES}",
        )

    catalog: Catalog | None = None
    if item_file is not None:
        cols, rows = iter_table(item_file)
        if cfg.item_col not in cols:
            raise DataError(
                item_file,
                f"no column {cfg.item_col!r} (columns: {cols})",
                "pass --item_col",
                key=cfg.item_col,
            )
        fields = _select_fields([c for c in cols if c != cfg.item_col], cfg, item_file)
        items: dict[str, dict[str, str]] = {}
        for n, key, row in rows:
            item = _as_text(row.get(cfg.item_col))
            if not item:
                raise DataError(item_file, "empty item id", "fill in the id", line=n, key=key)
            if item in items:
                raise DataError(
                    item_file,
                    f"duplicate item id {item!r}",
                    "keep one row per item",
                    line=n,
                    key=key,
                )
            lacking = [f for f in fields if f not in row]
            if lacking:
                raise DataError(
                    item_file,
                    f"item {item!r} lacks text field(s) {lacking}",
                    "add the field(s)",
                    line=n,
                    key=key,
                )
            items[item] = {f: _as_text(row[f]) for f in fields}
        catalog = Catalog(items, fields)
    else:
        logger.warning("no items table next to %s: items have no text", inter_file)

    cols, rows = iter_table(inter_file)
    for col, flag in ((cfg.user_col, "--user_col"), (cfg.item_col, "--item_col")):
        if col not in cols:
            raise DataError(
                inter_file,
                f"no column {col!r} (columns: {cols})",
                f"pass {flag} with one of the columns",
                key=col,
            )
    use_time = _time_index(cols, cfg, inter_file) is not None
    seqs: dict[str, list[str]] = {}
    times: dict[str, list[float]] | None = {} if use_time else None
    seen: dict[str, str] = {}  # one shared str per item id (see _load_recbole)
    for n, key, row in rows:
        user, item = _as_text(row.get(cfg.user_col)), _as_text(row.get(cfg.item_col))
        if not user or not item:
            raise DataError(
                inter_file, "empty user or item id", "fill in both ids", line=n, key=key
            )
        if catalog is not None and item not in catalog:
            raise _unknown_item(inter_file, item, item_file or "", line=n, key=key)
        seqs.setdefault(user, []).append(seen.setdefault(item, item))
        if times is not None:
            assert cfg.time_col is not None
            times.setdefault(user, []).append(
                _parse_time(row.get(cfg.time_col), inter_file, n, key, cfg.time_col)
            )
    if catalog is None:
        catalog = Catalog({i: {} for i in seen}, ())
    return catalog, _sorted_by_time(seqs, times)
