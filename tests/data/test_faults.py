"""The silent data faults of issue 15, each reproduced: every one now errors or is repaired loudly."""

from __future__ import annotations

import csv
import json
import logging
import time
import tracemalloc
from pathlib import Path

import pytest

from recllm.data import (
    DataConfig,
    DataError,
    Example,
    Interactions,
    leave_one_out,
    load_rec_dataset,
    split_dataset,
    temporal_split,
)
from recllm.errors import UserError

from .test_loaders import lcrec_dir, p5_dir, recbole_dir, write

INTER_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
ITEMS_CSV = "item_id,title\ni1,One\ni2,Two\ni3,Three\ni8,Eight\n"


def fails(path: Path, config: DataConfig | None = None) -> DataError:
    with pytest.raises(DataError) as info:
        load_rec_dataset(path, config)
    return info.value


# --------------------------------------------------------------------------- duplicates


def test_duplicate_events_are_dropped_and_never_leak_the_target(tmp_path, caplog):
    # The case: a logged event repeated three times became history [.., i8, i8] -> i8.
    d = tmp_path / "g"
    write(d / "items.csv", ITEMS_CSV)
    write(
        d / "interactions.csv",
        "user_id,item_id,timestamp\n"
        "u,i1,1\nu,i2,2\nu,i3,3\nu,i8,4\nu,i8,4\nu,i8,4\n"
        "v,i1,1\nv,i8,2\nv,i2,3\nv,i8,5\n",  # i8 again at a later time: a real repeat, kept
    )
    with caplog.at_level(logging.WARNING):
        ds = load_rec_dataset(d)
    assert ds.interactions.sequences == {
        "u": ["i1", "i2", "i3", "i8"],
        "v": ["i1", "i8", "i2", "i8"],
    }
    assert ds.interactions.timestamps["u"] == [1.0, 2.0, 3.0, 4.0]
    assert ds.dropped["duplicate_events"] == 2
    assert "dropped 2 duplicate events (same user, item and timestamp)" in caplog.text
    split = split_dataset(ds)
    assert split.test == [
        Example("u", ("i1", "i2", "i3"), "i8"),
        Example("v", ("i1", "i8", "i2"), "i8"),
    ]
    assert split.valid[0] == Example("u", ("i1", "i2"), "i3")


def test_duplicate_events_are_dropped_recbole(tmp_path, caplog):
    d = recbole_dir(tmp_path)
    # same user, item and timestamp twice (non-adjacent in the file): one event
    write(
        d / "toy.inter",
        INTER_HEADER + "u1\ti1\t5\t1\nu1\ti2\t5\t2\nu1\ti3\t5\t3\nu1\ti2\t4\t2\n",
    )
    with caplog.at_level(logging.WARNING):
        ds = load_rec_dataset(d)
    assert ds.interactions.sequences == {"u1": ["i1", "i2", "i3"]}
    assert ds.dropped["duplicate_events"] == 1


@pytest.mark.parametrize("kind", ["loo", "temporal"])
def test_split_refuses_a_target_event_inside_its_own_history(kind):
    # Interactions built by hand bypass the loader's clean-up: the split itself must refuse.
    inter = Interactions(
        {"u": ["a", "b", "c", "d", "d"], "w": ["a", "b", "c", "e", "f"]},
        {"u": [1.0, 2.0, 3.0, 9.0, 9.0], "w": [1.0, 2.0, 3.0, 4.0, 5.0]},
    )
    with pytest.raises(UserError) as info:
        if kind == "loo":
            leave_one_out(inter)
        else:
            temporal_split(inter, 0.2, 0.2)
    assert str(info.value) == (
        "user 'u': item 'd' at time 9.0 occurs 2 times, so an example would hold its own target "
        "in its history. Fix: drop duplicate events (load_rec_dataset does) before splitting"
    )


def test_repeats_without_timestamps_are_kept_and_counted(tmp_path, caplog):
    # Without timestamps a repeated item may be a real re-purchase: it is kept (see README).
    d = p5_dir(tmp_path)
    write(d / "sequential_data.txt", "1 1 2 2 3\n2 3 1 2\n")
    with caplog.at_level(logging.INFO):
        ds = load_rec_dataset(d)
    assert ds.interactions.sequences["1"] == ["1", "2", "2", "3"]
    assert "1 events repeat the item just before them" in caplog.text
    assert ds.dropped["duplicate_events"] == 0


# --------------------------------------------------------------------------- timestamps


@pytest.mark.parametrize("value", ["nan", "inf", "-Infinity", "NaN"])
def test_non_finite_timestamp_recbole(tmp_path, value):
    d = recbole_dir(tmp_path)
    write(d / "toy.inter", INTER_HEADER + f"u1\ti1\t5\t1\nu1\ti2\t5\t2\nu1\ti3\t5\t{value}\n")
    e = fails(d)
    assert str(e) == (
        f"{d / 'toy.inter'}:4: timestamp {value!r} in column 'timestamp' is not a finite number. "
        "Fix: write seconds since the epoch or an ISO 8601 date, or pass --time_col none to use "
        "file order"
    )


def test_non_finite_timestamp_csv_and_jsonl(tmp_path):
    f = write(tmp_path / "log.csv", "user_id,item_id,timestamp\n1,a,1\n1,b,inf\n1,c,3\n")
    assert str(fails(f)).startswith(f"{f}:3: timestamp 'inf' in column 'timestamp' is not a finite")
    # json.loads accepts the NaN / Infinity literals
    g = write(
        tmp_path / "log.jsonl",
        '{"user_id": 1, "item_id": "a", "timestamp": 1}\n'
        '{"user_id": 1, "item_id": "b", "timestamp": Infinity}\n'
        '{"user_id": 1, "item_id": "c", "timestamp": 3}\n',
    )
    assert str(fails(g)).startswith(f"{g}:2: timestamp 'inf' in column 'timestamp' is not a finite")


def test_naive_iso_dates_are_utc(tmp_path, monkeypatch):
    # A naive date read as local time would shift with the machine's time zone.
    f = write(
        tmp_path / "log.csv", "user_id,item_id,timestamp\n1,a,1970-01-02T00:00:00\n1,b,2\n1,c,3\n"
    )
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        ds = load_rec_dataset(f)
    finally:
        monkeypatch.undo()
        time.tzset()
    assert ds.interactions.timestamps["1"] == [2.0, 3.0, 86400.0]


# --------------------------------------------------------------------------- line breaks


def test_unicode_line_separators_are_text_not_line_breaks(tmp_path):
    d = p5_dir(tmp_path)
    write(
        d / "my_item_text.txt",
        "A1 Lamp\u2028deluxe\nA2 Mug\x85blue\nA3 Chair\nA4 Desk\n",
    )
    ds = load_rec_dataset(d)
    assert ds.catalog.items["1"]["text"] == "Lamp\u2028deluxe"
    assert ds.catalog.items["2"]["text"] == "Mug\x85blue"
    # line numbers after a NEL stay right
    write(d / "sequential_data.txt", "1 1 2\x853\n2 3 1 2\n3 1 99\n")
    e = fails(d)
    assert str(e).startswith(f"{d / 'sequential_data.txt'}:3: item '99'")


def test_unicode_line_separators_recbole_and_csv(tmp_path):
    d = recbole_dir(tmp_path)
    write(
        d / "toy.item",
        "item_id:token\tmovie_title:token_seq\ni1\tA\u2028B\ni2\tC\x85D\ni3\tE\u2029F\n",
    )
    ds = load_rec_dataset(d)
    assert [ds.catalog.title(i) for i in ("i1", "i2", "i3")] == ["A\u2028B", "C\x85D", "E\u2029F"]
    g = tmp_path / "g"
    write(g / "items.csv", "item_id,title\ni1,One\u2028more\ni2,Two\x85\ni3,x\ni3,dup\n")
    write(g / "interactions.csv", "user_id,item_id\nu,i1\nu,i2\nu,i3\n")
    e = fails(g)
    assert str(e).startswith(f"{g / 'items.csv'}:5: duplicate item id 'i3'")


def test_quoted_multiline_csv_field(tmp_path):
    g = tmp_path / "g"
    write(g / "items.csv", 'item_id,title\ni1,"two\nlines"\ni2,"crlf\r\ninside"\r\ni3,Three\n')
    write(g / "interactions.csv", "user_id,item_id\nu,i1\nu,i2\nu,i3\n")
    ds = load_rec_dataset(g)
    assert ds.catalog.items == {
        "i1": {"title": "two\nlines"},
        "i2": {"title": "crlf\r\ninside"},
        "i3": {"title": "Three"},
    }
    # an error after a multi-line record names the line the bad record starts on
    write(g / "items.csv", 'item_id,title\ni1,"two\nlines"\ni2,Two\ni1,again\n')
    limit = csv.field_size_limit()
    e = fails(g)
    assert csv.field_size_limit() == limit  # a reader abandoned by an error leaves no trace
    assert str(e).startswith(f"{g / 'items.csv'}:5: duplicate item id 'i1'")


# Issue 29: an unterminated quote in the middle of items.csv swallowed the next rows into one
# title, and the only trace was "dropped 1 catalog items that occur in no history".
# No history names i4..i8, so nothing downstream notices that they are gone.
SWALLOW_HISTORY = "user_id,item_id\nu,i1\nu,i2\nu,i3\nv,i2\nv,i3\nv,i1\n"
ROWS_4_TO_6 = "i4,Four\ni5,Five\ni6,Six\n"


@pytest.mark.parametrize(
    ("closing", "why"),
    [
        # the quote of the next quoted title closes it, mid-field (the case)
        ('i7,"Heat"\ni8,Eight\n', "closes on line 8 in the middle of a field"),
        # a stray quote at the end of a later line closes it cleanly
        ('i7,Seven"\ni8,Eight\n', "line 5 reads as a row of its own"),
        # nothing closes it: the rest of the file is one title
        ("i7,Seven\ni8,Eight\n", "never closed: the file ends inside it"),
    ],
    ids=["closed-mid-field", "closed-at-a-line-end", "never-closed"],
)
def test_unterminated_quote_in_items_csv_is_an_error(tmp_path, closing, why):
    g = tmp_path / "g"
    items = write(
        g / "items.csv", f'item_id,title\ni1,One\ni2,Two\ni3,"Toy Story\n{ROWS_4_TO_6}{closing}'
    )
    write(g / "interactions.csv", SWALLOW_HISTORY)
    e = fails(g)
    assert (e.path, e.line) == (str(items), 4)  # the line where the quote opened
    assert str(e).startswith(f"{items}:4: the quote opened on line 4 ")
    assert why in e.problem
    assert e.fix.startswith('close the quote on line 4, or write a quote inside a field as ""')


def test_text_after_a_closed_quote_is_an_error(tmp_path):
    """`"Heat" (1995)` was read as `Heat (1995)`, quietly; now the line and the fix are named."""
    g = tmp_path / "g"
    items = write(g / "items.csv", 'item_id,title\ni1,One\ni2,"Heat" (1995)\ni3,Three\n')
    write(g / "interactions.csv", SWALLOW_HISTORY)
    e = fails(g)
    assert str(e) == (
        f"{items}:3: the quote opened on line 3 closes on line 3 in the middle of a field. "
        'Fix: quote the whole field and write each quote inside it as "": `"""Heat"" (1995)"`'
    )
    write(g / "items.csv", 'item_id,title\ni1,One\ni2,"""Heat"" (1995)"\ni3,Three\n')
    assert load_rec_dataset(g).catalog.title("i2") == '"Heat" (1995)'  # the fix works


def test_quoted_commas_escaped_quotes_and_line_breaks_still_load(tmp_path):
    """The control of the unterminated-quote check: well-formed quoting of every kind loads."""
    g = tmp_path / "g"
    write(
        g / "items.csv",
        'item_id,title\ni1,"Movie, The"\ni2,"Say ""hi"", then go"\ni3,"two\nlines, one comma"\n'
        'i8,12" Vinyl\ni4,"para one\n\npara ""two"", end"\n',
    )
    write(g / "interactions.csv", SWALLOW_HISTORY + "v,i4\nv,i8\n")
    ds = load_rec_dataset(g)
    assert ds.catalog.items == {
        "i1": {"title": "Movie, The"},
        "i2": {"title": 'Say "hi", then go'},
        "i3": {"title": "two\nlines, one comma"},
        "i8": {"title": '12" Vinyl'},
        "i4": {"title": 'para one\n\npara "two", end'},
    }


def test_bare_carriage_return_in_csv(tmp_path):
    g = tmp_path / "g"
    write(g / "items.csv", "item_id,title\ni1,One\ni2,Tw\ro\n")
    write(g / "interactions.csv", "user_id,item_id\nu,i1\nu,i2\nu,i1\n")
    e = fails(g)
    assert str(e).startswith(f"{g / 'items.csv'}:3: cannot parse the CSV record")
    assert "Fix: end lines with \\n or \\r\\n and quote fields that contain line breaks" in str(e)


def test_title_longer_than_the_csv_field_limit(tmp_path):
    g = tmp_path / "g"
    title = "x" * (131_072 + 10)  # over the csv module's default field limit
    write(g / "items.csv", f"item_id,title\ni1,{title}\ni2,Two\ni3,Three\n")
    write(g / "interactions.csv", "user_id,item_id\nu,i1\nu,i2\nu,i3\n")
    limit = csv.field_size_limit()
    ds = load_rec_dataset(g)
    assert ds.catalog.items["i1"]["title"] == title
    assert csv.field_size_limit() == limit  # the process-wide limit is restored


# --------------------------------------------------------------------------- columns and files


def test_mistyped_time_column_is_an_error(tmp_path):
    f = write(tmp_path / "log.csv", "user_id,item_id,ts\n1,a,3\n1,b,1\n1,c,2\n")
    e = fails(f, DataConfig(time_col="tss"))
    assert str(e) == (
        f"{f} [key 'tss']: no time column 'tss' (columns: ['user_id', 'item_id', 'ts']). "
        "Fix: pass --time_col with one of the columns, or --time_col none to use file order"
    )
    d = recbole_dir(tmp_path)
    e = fails(d, DataConfig(time_col="time"))
    assert "no time column 'time' (columns: ['user_id', 'item_id', 'rating', 'timestamp'])" in str(
        e
    )


def test_default_time_column_absent_warns_with_the_columns(tmp_path, caplog):
    f = write(tmp_path / "log.csv", "user_id,item_id,ts\n1,a,3\n1,b,1\n1,c,2\n")
    with caplog.at_level(logging.WARNING):
        ds = load_rec_dataset(f)
    assert ds.interactions.sequences == {"1": ["a", "b", "c"]}
    assert ds.interactions.timestamps is None
    assert (
        "no 'timestamp' column (columns: ['user_id', 'item_id', 'ts']): histories follow file "
        "order; pass --time_col COL to sort by time" in caplog.text
    )
    # with none, nothing to warn about
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load_rec_dataset(f, DataConfig(time_col=None))
    assert "no 'timestamp' column" not in caplog.text


@pytest.mark.parametrize("layout", ["generic", "p5", "lcrec"])
@pytest.mark.parametrize("problem", ["missing", "directory"])
def test_items_file_missing_or_a_directory(tmp_path, layout, problem):
    if layout == "generic":
        d = write(tmp_path / "log.csv", "user_id,item_id\nu,a\nu,b\nu,c\n")
    elif layout == "p5":
        d = p5_dir(tmp_path)
    else:
        d = lcrec_dir(tmp_path)
    items = tmp_path / "nope.csv"
    if problem == "directory":
        items.mkdir()
    e = fails(d, DataConfig(items_file=str(items)))
    what = "does not exist" if problem == "missing" else "is a directory, not a file"
    assert str(e).startswith(f"{items}: the items file {what}. Fix: ")
    assert "--items_file" in e.fix


# --------------------------------------------------------------------------- memory


@pytest.mark.parametrize("ext", [".csv", ".jsonl"])
def test_reading_streams_instead_of_holding_the_file(tmp_path, ext):
    # Reading used to hold the whole file (bytes, text, and a list of its lines) at once. Now
    # only one line is in memory at a time: what load_rec_dataset needs beyond the dataset it
    # returns stays far below the file's size. (Measured on a generated 2M-row, 48 MB CSV: peak
    # RSS 425 MB before, 148 MB now; see docs/data.md.)
    # a wide column makes the file large while the rows (and the dataset) stay small
    pad = "recommended-by-the-homepage-widget"
    rows = [(f"u{k // 20}", f"i{(k * 7919) % 5000}", 1000 + k, pad) for k in range(20_000)]
    keys = ("user_id", "item_id", "timestamp", "source")
    if ext == ".csv":
        text = ",".join(keys) + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows)
    else:
        text = "".join(json.dumps(dict(zip(keys, r, strict=True))) + "\n" for r in rows)
    f = write(tmp_path / f"log{ext}", text)
    tracemalloc.start()
    try:
        ds = load_rec_dataset(f, DataConfig(drop_unused_items=False))
        kept, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ds.interactions.num_interactions == 20_000
    assert peak - kept < f.stat().st_size // 2, (peak - kept, f.stat().st_size)


@pytest.mark.parametrize("fmt", ["recbole", "lcrec", "p5"])
def test_a_forced_format_on_other_files_is_a_clear_error(tmp_path, fmt):
    """`--format X` on a directory without X's files: named, not an AssertionError."""
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="Fix:") as e:
        load_rec_dataset(config=DataConfig(data_path=str(tmp_path), data_format=fmt))
    assert str(tmp_path) in str(e.value)
