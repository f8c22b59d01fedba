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

import codecs
import csv
import json
import logging
import math
import sys
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from recllm.data.config import DEFAULT_TIME_COL, FORMATS, DataConfig
from recllm.data.errors import DataError
from recllm.data.fetch import KNOWN_DATASETS, resolve
from recllm.data.types import Catalog, Interactions, RecDataset

logger = logging.getLogger(__name__)

TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".jsonl")
_UTF8_FIX = "re-encode the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8 IN > OUT`)"


# --------------------------------------------------------------------------- reading helpers

# Python's csv module refuses fields over 131,072 characters by default (a long product
# description is enough). The limit is process-wide, so it is raised only while a CSV is read.
_CSV_FIELD_LIMIT = min(sys.maxsize, 2**31 - 1)
_ITEMS_FILE_FIX = (
    "pass --items_file with the path of an existing file (the items table, the P5 `ASIN text` "
    "file or NAME.item.json), or leave it out to use the one next to the interactions"
)


def check_file(path: Path, what: str, fix: str) -> Path:
    """Return ``path`` if it is a readable file; otherwise raise a :class:`DataError` saying why.

    Args:
        path: The file to check.
        what: What the file is, for the message (``"items file"``).
        fix: What the user should do if it is missing or not a file.
    """
    if not path.exists():
        raise DataError(path, f"the {what} does not exist", fix)
    if path.is_dir():
        raise DataError(path, f"the {what} is a directory, not a file", fix)
    return path


def _check_not_empty(path: Path) -> None:
    """Raise if ``path`` holds nothing but whitespace, reading only as far as the first byte."""
    with open(path, "rb") as f:
        while chunk := f.read(1 << 16):
            if chunk.strip():
                return
    raise DataError(path, "the file is empty", "check that the file was written completely")


def iter_lines(path: Path, keep_ends: bool = False) -> Iterator[tuple[int, str]]:
    """Stream ``(line number, text)`` pairs of a strict UTF-8 file (a BOM is accepted).

    Lines end at ``\n`` only (``\r\n`` too): ``str.splitlines`` would also break at U+2028,
    U+2029, NEL (U+0085) and form feeds, which then vanish from titles and shift every later line
    number. One line is in memory at a time.

    Args:
        path: The file.
        keep_ends: Keep each line's terminator (the csv module needs it to keep quoted newlines).

    Raises:
        DataError: The file is empty, or a line is not valid UTF-8 (names the line).
    """
    _check_not_empty(path)
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            if n == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8) :]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                bad = raw[e.start : e.start + 1]
                raise DataError(path, f"invalid UTF-8 byte {bad!r}", _UTF8_FIX, line=n) from None
            yield n, (text if keep_ends else text.rstrip("\r\n"))


def read_text(path: Path) -> str:
    """Read a whole file as strict UTF-8 (a BOM is accepted); empty files are an error.

    Only for formats that must be parsed whole (JSON); line formats stream with
    :func:`iter_lines`.
    """
    data = path.read_bytes()
    if not data.strip():
        raise DataError(path, "the file is empty", "check that the file was written completely")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(
            path, f"invalid UTF-8 byte {data[e.start : e.start + 1]!r}", _UTF8_FIX, line=line
        ) from None


def _no_duplicate_keys(path: Path, what: str):
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in pairs:
            if k in out:
                raise DataError(
                    path, f"duplicate {what} {k!r}", f"keep one entry per {what}", key=k
                )
            out[k] = v
        return out

    return hook


def read_json(path: Path, what: str = "key") -> Any:
    """Parse a JSON file, rejecting duplicate object keys (``json`` silently keeps the last)."""
    text = read_text(path)
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_keys(path, what))
    except json.JSONDecodeError as e:
        raise DataError(
            path, f"invalid JSON ({e.msg})", "fix the JSON syntax", line=e.lineno
        ) from None


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


Row = tuple[int | None, str | None, dict[str, Any]]


def _iter_table(path: Path) -> tuple[list[str], Iterator[Row]]:
    """Columns and streamed ``(line, key, row)`` of a table.

    CSV/TSV and JSONL rows carry their (first) line number; Parquet rows a ``row N`` key. JSONL
    columns are those of the first object (a later row lacking one is caught by the caller).
    Nothing but the current row (Parquet: the current batch) is held in memory.
    """
    if path.suffix == ".parquet":
        return _parquet_rows(path)
    if path.suffix == ".jsonl":
        return _jsonl_rows(path)
    rows = _csv_rows(path, "\t" if path.suffix == ".tsv" else ",")
    header = next(rows)
    assert isinstance(header, list)
    return header, rows  # type: ignore[return-value]


def _parquet_rows(path: Path) -> tuple[list[str], Iterator[Row]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a corrupt file
        raise DataError(path, f"cannot read Parquet ({e})", "write a valid Parquet file") from None
    if pf.metadata.num_rows == 0:
        raise DataError(path, "the table has no rows", "add data rows")

    def rows() -> Iterator[Row]:
        r = 0
        for batch in pf.iter_batches(batch_size=65_536):
            for row in batch.to_pylist():
                yield None, f"row {r}", row
                r += 1

    return list(pf.schema_arrow.names), rows()


def _jsonl_rows(path: Path) -> tuple[list[str], Iterator[Row]]:
    def parsed() -> Iterator[tuple[int, dict[str, Any]]]:
        for n, line in iter_lines(path):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(
                    path, f"invalid JSON ({e.msg})", "write one JSON object per line", line=n
                ) from None
            if not isinstance(row, dict):
                raise DataError(
                    path, "line is not a JSON object", "write one JSON object per line", line=n
                )
            yield n, row

    objects = parsed()
    first = next(objects, None)
    if first is None:
        raise DataError(path, "the file is empty", "check that the file was written completely")

    def rows() -> Iterator[Row]:
        yield first[0], None, first[1]
        for n, row in objects:
            yield n, None, row

    return list(first[1]), rows()


def _csv_rows(path: Path, delimiter: str) -> Iterator[list[str] | Row]:
    """Yield the header, then ``(line, None, row)`` per record, with a real CSV parser.

    Quoted fields keep their line breaks (``\n`` and ``\r\n``) and the line reported for a
    record is the one it starts on. An unterminated quote is an error naming the line it
    opened on (:func:`_swallowed_rows`), not a title that silently holds the rows after it.
    """
    lines: list[str] = []  # the physical lines of the record being parsed

    def source() -> Iterator[str]:
        for _, text in iter_lines(path, keep_ends=True):
            lines.append(text)
            yield text

    # strict: a quote closed in the middle of a field, or never closed, raises instead of
    # being glued into the field (how an unterminated quote swallows the rows after it)
    reader = csv.reader(source(), delimiter=delimiter, strict=True)
    start = 1
    header: list[str] | None = None

    def record() -> list[str] | None:
        nonlocal start
        start = reader.line_num + 1
        lines.clear()
        # The limit is process-wide: raise it only while this record is parsed, so a reader
        # abandoned half-way (an error in the caller) cannot leave it raised for other code.
        previous_limit = csv.field_size_limit(_CSV_FIELD_LIMIT)
        try:
            values = next(reader, None)
        except csv.Error as e:
            how = _quote_fault(str(e))
            if how is not None:
                raise _unclosed_quote(path, start, lines, how, reader.line_num) from None
            raise DataError(
                path,
                f"cannot parse the CSV record ({e})",
                "end lines with \\n or \\r\\n and quote fields that contain line breaks",
                line=reader.line_num,
            ) from None
        finally:
            csv.field_size_limit(previous_limit)
        if header is not None and values is not None and len(lines) > 1:
            row = _swallowed_rows(lines, delimiter, len(header))
            if row is not None:
                raise _unclosed_quote(path, start, lines, "reads", start + row)
        return values

    header = record()
    if header is None or not any(h.strip() for h in header):
        raise DataError(path, "no header row", "put the column names on line 1", line=1)
    yield header
    while (values := record()) is not None:
        if not values or not any(v.strip() for v in values):
            continue
        if len(values) != len(header):
            raise DataError(
                path,
                f"expected {len(header)} fields ({', '.join(header)}), found {len(values)}",
                "quote fields that contain the delimiter and fill every column",
                line=start,
            )
        yield start, None, dict(zip(header, values, strict=True))


def _quote_fault(message: str) -> str | None:
    """What a strict-mode ``csv.Error`` says about a quote left open, or None: ``"closes"``
    (a quote closed mid-field, e.g. by the next quoted field's opening quote) or ``"ends"``."""
    if message.endswith("expected after '\"'"):
        return "closes"
    return "ends" if message == "unexpected end of data" else None


def _swallowed_rows(lines: list[str], delimiter: str, width: int) -> int | None:
    """Index of the first continuation line of a multi-line record that reads as a row.

    A quoted field may hold line breaks, so the lines after a record's first are field text.
    A line of such text that, read on its own, is a complete record of ``width`` fields with
    balanced quotes is almost surely a row a quote left open has swallowed; the closing line of
    a genuine multi-line field holds its odd closing quote, so it never qualifies.
    """
    if width < 2:
        return None
    for i, text in enumerate(lines[1:], start=1):
        if text.count('"') % 2 or not text.strip():
            continue
        try:
            fields = next(csv.reader([text], delimiter=delimiter, strict=True), [])
        except csv.Error:
            continue
        if len(fields) == width and fields[0].strip():
            return i
    return None


def _unclosed_quote(path: Path, start: int, lines: list[str], how: str, at: int) -> DataError:
    """The error of a quote left open in the record starting on line ``start``."""
    # the quote opened on the first line of the record with an odd number of quote marks
    opened = next((start + i for i, t in enumerate(lines) if t.count('"') % 2), start)
    end = start + len(lines) - 1
    problem = {
        "closes": f"closes on line {at} in the middle of a field",
        "ends": "is never closed: the file ends inside it",
        "reads": f"runs to line {end}, and line {at} reads as a row of its own",
    }[how]
    if end == opened:  # text after a quoted part: `i1,"Heat" (1995)`
        fix = 'quote the whole field and write each quote inside it as "": `"""Heat"" (1995)"`'
    else:
        problem += f", so lines {opened + 1}-{end} read as the text of one field"
        fix = (
            f'close the quote on line {opened}, or write a quote inside a field as "" (and quote '
            "that field); for line breaks that belong in a field, write the table as .jsonl or "
            ".parquet"
        )
    return DataError(path, f"the quote opened on line {opened} {problem}", fix, line=opened)


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
        cols, rows = _iter_table(item_file)
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

    cols, rows = _iter_table(inter_file)
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
