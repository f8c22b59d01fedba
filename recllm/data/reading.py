"""Reading the files of a dataset: strict UTF-8 lines, JSON, and tables (CSV/TSV, Parquet,
JSONL) streamed row by row, every fault a :class:`DataError` naming the file, the line and the fix.

The format loaders of :mod:`recllm.data.loaders` read through these helpers. A CSV is parsed
with the csv module in strict mode: quoted fields keep their line breaks, and a quote left open
(which would otherwise swallow the rows after it into one field) is an error naming the line
where it opened.
"""

from __future__ import annotations

import codecs
import csv
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from recllm.data.errors import DataError

TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".jsonl")
_UTF8_FIX = "re-encode the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8 IN > OUT`)"

# Python's csv module refuses fields over 131,072 characters by default (a long product
# description is enough). The limit is process-wide, so it is raised only while a CSV is read.
_CSV_FIELD_LIMIT = min(sys.maxsize, 2**31 - 1)


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


#: A table row: ``(line, key, values)``; CSV/TSV and JSONL rows carry their (first) line,
#: Parquet rows a ``row N`` key.
Row = tuple[int | None, str | None, dict[str, Any]]


def iter_table(path: Path) -> tuple[list[str], Iterator[Row]]:
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
