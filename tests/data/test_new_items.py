"""read_new_items / check_new_ids: each bad input is one DataError naming the file, the line and
the fix; controls read the good files."""

from __future__ import annotations

import json

import pytest

from recllm.data.errors import DataError
from recllm.data.new_items import check_new_ids, read_new_items


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_reads_every_format(tmp_path):
    rows = [
        {"item_id": "a", "title": "Red saw", "brand": "X"},
        {"item_id": "b", "title": "Lamp", "brand": ""},
    ]
    j = _jsonl(tmp_path / "n.jsonl", rows)
    c = tmp_path / "n.csv"
    c.write_text("item_id,title,brand\na,Red saw,X\nb,Lamp,\n")
    t = tmp_path / "n.tsv"
    t.write_text("item_id\ttitle\tbrand\na\tRed saw\tX\nb\tLamp\t\n")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq_path = tmp_path / "n.parquet"
    pq.write_table(pa.Table.from_pylist(rows), pq_path)
    for p in (j, c, t, pq_path):
        cat = read_new_items(p)
        assert cat.ids == ["a", "b"] and cat.text_fields == ("title", "brand")
        assert cat.items["a"] == {"title": "Red saw", "brand": "X"}
    assert read_new_items(c, ["title"]).text_fields == ("title",)


def test_other_format(tmp_path):
    p = tmp_path / "new.xlsx"
    p.write_text("x")
    with pytest.raises(
        DataError, match=r"new.xlsx: unsupported format '.xlsx'. Fix: pass a .jsonl"
    ):
        read_new_items(p)


def test_missing_id_column(tmp_path):
    p = tmp_path / "n.csv"
    p.write_text("name,title\na,Red saw\n")
    with pytest.raises(
        DataError, match=r"n.csv:1: no item id column.*Fix: name the id column item_id"
    ):
        read_new_items(p)


def test_item_without_text(tmp_path):
    p = tmp_path / "n.csv"
    p.write_text("item_id,title,brand\na,Red saw,X\nb,,\n")
    with pytest.raises(DataError, match=r"n.csv:3: item 'b' has no text.*Fix: give it a title"):
        read_new_items(p)


def test_duplicate_ids(tmp_path):
    p = _jsonl(
        tmp_path / "n.jsonl", [{"item_id": "a", "title": "x"}, {"item_id": "a", "title": "y"}]
    )
    with pytest.raises(DataError, match=r"n.jsonl:2: duplicate item id 'a' \(first at line 1\)"):
        read_new_items(p)


def test_missing_text_column(tmp_path):
    p = tmp_path / "n.csv"
    p.write_text("item_id,title\na,Red saw\n")
    with pytest.raises(DataError, match=r"no column 'brand'"):
        read_new_items(p, ["title", "brand"])


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_new_items(tmp_path / "nope.csv")


def test_existing_ids_are_refused(tmp_path):
    p = tmp_path / "n.csv"
    p.write_text("item_id,title\na,Red saw\nz,Lamp\n")
    cat = read_new_items(p)
    with pytest.raises(
        DataError, match=r"refused, not updated: existing items never move.*Fix: remove"
    ):
        check_new_ids(cat, ["z", "q"], str(p))
    check_new_ids(cat, ["q"], str(p))  # control: no overlap passes
