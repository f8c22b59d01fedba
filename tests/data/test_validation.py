"""Bad input: every case fails with a message naming the file, the line or key, and the fix."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from recllm.data import DataConfig, DataError, load_rec_dataset

from .test_loaders import lcrec_dir, p5_dir, recbole_dir, write

INTER_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"


def fails(path: Path, config: DataConfig | None = None) -> DataError:
    with pytest.raises(DataError) as info:
        load_rec_dataset(path, config)
    return info.value


def test_malformed_recbole_line(tmp_path):
    d = recbole_dir(tmp_path)
    write(d / "toy.inter", INTER_HEADER + "u1\ti1\t5\t1\nu1\ti2\t5\n")
    e = fails(d)
    assert str(e).startswith(f"{d / 'toy.inter'}:3: expected 4 tab-separated fields")
    assert "Fix: separate fields with single tabs" in str(e)
    assert (e.line, e.path) == (3, str(d / "toy.inter"))


def test_bad_timestamp(tmp_path):
    d = recbole_dir(tmp_path)
    write(d / "toy.inter", INTER_HEADER + "u1\ti1\t5\t1\nu1\ti2\t5\tyesterday\n")
    e = fails(d)
    assert str(e).startswith(f"{d / 'toy.inter'}:3: timestamp 'yesterday'")
    assert "Fix: write seconds since the epoch or an ISO 8601 date" in str(e)


def test_malformed_csv_row(tmp_path):
    f = write(tmp_path / "log.csv", "user_id,item_id\n1,a\n1,b,extra\n")
    e = fails(f)
    assert str(e).startswith(f"{f}:3: expected 2 fields (user_id, item_id), found 3")
    assert "Fix: quote fields that contain the delimiter" in str(e)


def test_malformed_jsonl_line(tmp_path):
    f = write(tmp_path / "log.jsonl", '{"user_id": 1, "item_id": 2}\n{"user_id": 1, item_id: 3}\n')
    e = fails(f)
    assert str(e).startswith(f"{f}:2: invalid JSON")
    assert "Fix: write one JSON object per line" in str(e)


def test_malformed_json_file(tmp_path):
    d = lcrec_dir(tmp_path)
    write(d / "Toy.inter.json", '{"0": [0, 1, 2],\n "1": [2, 1, 0\n}')
    e = fails(d)
    assert str(e).startswith(f"{d / 'Toy.inter.json'}:3: invalid JSON")
    assert "Fix: fix the JSON syntax" in str(e)


@pytest.mark.parametrize(
    ("layout", "expected_where"),
    [
        ("recbole", "toy.inter:3:"),
        ("p5", "sequential_data.txt:2:"),
        ("lcrec", "Toy.inter.json [key '1[2]']:"),
        ("csv", "interactions.csv:3:"),
    ],
)
def test_unknown_item_in_history(tmp_path, layout, expected_where):
    if layout == "recbole":
        d = recbole_dir(tmp_path)
        write(d / "toy.inter", INTER_HEADER + "u1\ti1\t5\t1\nu1\ti9\t5\t2\n")
    elif layout == "p5":
        d = p5_dir(tmp_path)
        write(d / "sequential_data.txt", "1 1 2 3\n2 3 1 99\n")
    elif layout == "lcrec":
        d = lcrec_dir(tmp_path)
        write(d / "Toy.inter.json", json.dumps({"0": [0, 1, 2], "1": [2, 1, 7]}))
    else:
        d = tmp_path / "g"
        write(d / "interactions.csv", "user_id,item_id\nu,a\nu,zz\n")
        write(d / "items.csv", "item_id,title\na,A\n")
    e = fails(d)
    assert expected_where in str(e)
    assert "is not in the catalog" in str(e)
    assert "Fix: add the item to the catalog or remove the interaction" in str(e)


@pytest.mark.parametrize("layout", ["recbole", "p5", "lcrec", "csv"])
def test_duplicate_item_ids(tmp_path, layout):
    if layout == "recbole":
        d = recbole_dir(tmp_path)
        write(d / "toy.item", "item_id:token\tmovie_title:token_seq\ni1\tA\ni2\tB\ni1\tC\ni3\tD\n")
        where, fix = (
            f"{d / 'toy.item'}:4: duplicate item id 'i1' (first on line 2)",
            "keep one row per item",
        )
    elif layout == "p5":
        d = p5_dir(tmp_path)
        write(d / "my_item_text.txt", "A1 red\nA2 blue\nA1 green\n")
        where, fix = f"{d / 'my_item_text.txt'}:3: duplicate item 'A1'", "keep one line per item"
    elif layout == "lcrec":
        d = lcrec_dir(tmp_path)
        write(
            d / "Toy.item.json", '{"0": {"title": "a"}, "1": {"title": "b"}, "0": {"title": "c"}}'
        )
        where, fix = (
            f"{d / 'Toy.item.json'} [key '0']: duplicate item id '0'",
            "keep one entry per item id",
        )
    else:
        d = tmp_path / "g"
        write(d / "interactions.csv", "user_id,item_id\nu,a\n")
        write(d / "items.csv", "item_id,title\na,A\nb,B\na,A2\n")
        where, fix = f"{d / 'items.csv'}:4: duplicate item id 'a'", "keep one row per item"
    e = fails(d)
    assert str(e).startswith(where)
    assert f"Fix: {fix}" in str(e)


def test_empty_history_p5(tmp_path):
    d = p5_dir(tmp_path)
    write(d / "sequential_data.txt", "1 1 2 3\n2\n")
    e = fails(d)
    assert str(e).startswith(f"{d / 'sequential_data.txt'}:2: user '2' has an empty history")
    assert "Fix: remove the line or add the user's items" in str(e)


def test_empty_history_lcrec(tmp_path):
    d = lcrec_dir(tmp_path)
    write(d / "Toy.inter.json", json.dumps({"0": [0, 1, 2], "5": []}))
    e = fails(d)
    assert str(e).startswith(f"{d / 'Toy.inter.json'} [key '5']: empty history")
    assert "Fix: remove the user or add items" in str(e)


def test_duplicate_user_p5(tmp_path):
    d = p5_dir(tmp_path)
    write(d / "sequential_data.txt", "1 1 2 3\n1 2 3 4\n")
    e = fails(d)
    assert str(e).startswith(
        f"{d / 'sequential_data.txt'}:2: user '1' appears twice (first on line 1)"
    )


def test_missing_text_field_lcrec(tmp_path):
    d = lcrec_dir(tmp_path)
    items = {
        "0": {"title": "a", "description": "x"},
        "1": {"description": "y"},
        "2": {"title": "c", "description": ""},
    }
    write(d / "Toy.item.json", json.dumps(items))
    e = fails(d)
    assert str(e).startswith(f"{d / 'Toy.item.json'} [key '1']: item lacks text field(s) ['title']")
    assert "Fix: add the field (an empty string is allowed) or choose --text_fields" in str(e)


def test_missing_text_line_p5(tmp_path):
    d = p5_dir(tmp_path)
    write(d / "my_item_text.txt", "A1 red\nA2 blue\nA3 green\n")
    e = fails(d)
    assert str(e).startswith(
        f"{d / 'my_item_text.txt'} [key 'A4']: no text line for item 4 (ASIN A4)"
    )
    assert "Fix: add a line `ASIN text` for it" in str(e)


def test_requested_text_field_absent(tmp_path):
    d = recbole_dir(tmp_path)
    e = fails(d, DataConfig(text_fields=["title"]))
    assert str(e).startswith(
        f"{d / 'toy.item'} [key 'title']: text field(s) ['title'] not in the item data"
    )
    assert "available: ['movie_title', 'release_year']" in str(e)
    assert "Fix: pass --text_fields" in str(e)


def test_missing_column(tmp_path):
    f = write(tmp_path / "log.csv", "user,item_id\n1,a\n")
    e = fails(f)
    assert str(e).startswith(
        f"{f} [key 'user_id']: no column 'user_id' (columns: ['user', 'item_id'])"
    )
    assert "Fix: pass --user_col with one of the columns" in str(e)


def test_bad_encoding(tmp_path):
    d = recbole_dir(tmp_path)
    write(
        d / "toy.item",
        "item_id:token\tmovie_title:token_seq\ni1\tA\ni2\tCaf\xe9\ni3\tC\n".encode("latin-1"),
    )
    e = fails(d)
    assert str(e).startswith(f"{d / 'toy.item'}:3: invalid UTF-8 byte b'\\xe9'")
    assert "Fix: re-encode the file as UTF-8" in str(e)


@pytest.mark.parametrize("content", ["", "\n  \n"])
def test_empty_file(tmp_path, content):
    d = recbole_dir(tmp_path)
    write(d / "toy.inter", content)
    e = fails(d)
    assert (
        str(e)
        == f"{d / 'toy.inter'}: the file is empty. Fix: check that the file was written completely"
    )


def test_header_only_file(tmp_path):
    d = recbole_dir(tmp_path)
    write(d / "toy.inter", INTER_HEADER)
    e = fails(d)
    assert str(e) == f"{d / 'toy.inter'}: the file has a header but no rows. Fix: add data rows"


def test_unrecognised_directory(tmp_path):
    write(tmp_path / "notes.txt", "hello")
    e = fails(tmp_path)
    assert str(e).startswith(f"{tmp_path}: cannot tell the dataset format")
    assert "or set --data_format" in str(e)


def test_missing_path(tmp_path):
    e = fails(tmp_path / "nope")
    assert str(e).startswith(f"{tmp_path / 'nope'}: no such file or directory")
    assert "ml-100k" in str(e)


def test_all_users_too_short(tmp_path):
    d = recbole_dir(tmp_path)
    write(d / "toy.inter", INTER_HEADER + "u1\ti1\t5\t1\nu1\ti2\t5\t2\n")
    e = fails(d)
    assert "no user has 3 or more interactions" in str(e)
    assert "Fix: check the user/item columns, or lower --min_interactions" in str(e)


def test_recoverable_cases_are_logged_not_raised(tmp_path, caplog):
    d = recbole_dir(tmp_path)
    with open(d / "toy.inter", "a", encoding="utf-8") as f:
        f.write("short\ti1\t1\t1\n")
    with caplog.at_level(logging.WARNING):
        ds = load_rec_dataset(d)
    assert ds.dropped == {"duplicate_events": 0, "users_short": 1, "items_unused": 1}


def test_config_cross_field_errors():
    with pytest.raises(ValueError, match="--split loo needs --min_interactions >= 3"):
        DataConfig(min_interactions=2)
    with pytest.raises(ValueError, match="--valid_ratio \\+ --test_ratio must be < 1"):
        DataConfig(split="temporal", valid_ratio=0.5, test_ratio=0.5)
    with pytest.raises(ValueError, match="--data_format: 'csv' is not one of"):
        DataConfig(data_format="csv")
