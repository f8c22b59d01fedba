"""Loaders: every layout, format detection, ordering, cleaning, conversion to `datasets`."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recllm.data import DataConfig, detect_format, load_rec_dataset


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def recbole_dir(root: Path) -> Path:
    d = root / "toy"
    write(
        d / "toy.inter",
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "u1\ti2\t5\t200\n"
        "u1\ti1\t3\t100\n"
        "u1\ti3\t4\t300\n"
        "u2\ti3\t4\t50\n"
        "u2\ti1\t4\t50\n"  # tie with the previous line: file order is kept
        "u2\ti2\t2\t10\n",
    )
    write(
        d / "toy.item",
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tscore:float\n"
        "i1\tAlpha\t1990\t1.0\n"
        "i2\tBeta\t1991\t2.0\n"
        "i3\tGamma\t1992\t3.0\n"
        "i4\tUnused\t1993\t4.0\n",
    )
    return d


def test_recbole_sorts_by_time_keeps_ties_and_drops_unused(tmp_path, caplog):
    d = recbole_dir(tmp_path)
    assert detect_format(d) == "recbole"
    with caplog.at_level(logging.WARNING):
        ds = load_rec_dataset(d)
    assert ds.format == "recbole"
    assert ds.interactions.sequences == {"u1": ["i1", "i2", "i3"], "u2": ["i2", "i3", "i1"]}
    assert ds.interactions.timestamps == {"u1": [100.0, 200.0, 300.0], "u2": [10.0, 50.0, 50.0]}
    # float columns are not text; the unused item is dropped and counted
    assert ds.catalog.text_fields == ("movie_title", "release_year")
    assert ds.catalog.ids == ["i1", "i2", "i3"]
    assert ds.dropped == {"duplicate_events": 0, "users_short": 0, "items_unused": 1}
    assert "dropped 1 catalog items" in caplog.text
    assert ds.catalog.title("i2") == "Beta"
    assert ds.catalog.text("i1") == "movie_title: Alpha; release_year: 1990"


def test_recbole_text_field_selection(tmp_path):
    d = recbole_dir(tmp_path)
    ds = load_rec_dataset(d, DataConfig(text_fields=["release_year"]))
    assert ds.catalog.items["i3"] == {"release_year": "1992"}


def test_drops_short_users_with_count(tmp_path, caplog):
    d = recbole_dir(tmp_path)
    with open(d / "toy.inter", "a", encoding="utf-8") as f:
        f.write("u3\ti1\t1\t1\nu3\ti2\t1\t2\n")
    with caplog.at_level(logging.WARNING):
        ds = load_rec_dataset(d)
    assert set(ds.interactions.sequences) == {"u1", "u2"}
    assert ds.dropped["users_short"] == 1
    assert "dropped 1 users with fewer than 3 interactions" in caplog.text


def p5_dir(root: Path) -> Path:
    d = root / "p5"
    write(d / "sequential_data.txt", "1 1 2 3\n2 3 1 2 4\n")
    maps = {"id2item": {"1": "A1", "2": "A2", "3": "A3", "4": "A4"}, "item2id": {}}
    write(d / "datamaps.json", json.dumps(maps))
    write(d / "my_item_text.txt", "A1 red lipstick\nA2 face cream\nA3 \nA4 nail polish\n")
    return d


def test_p5_layout(tmp_path, caplog):
    d = p5_dir(tmp_path)
    assert detect_format(d) == "p5"
    with caplog.at_level(logging.WARNING):
        ds = load_rec_dataset(d)
    assert ds.interactions.sequences == {"1": ["1", "2", "3"], "2": ["3", "1", "2", "4"]}
    assert ds.interactions.timestamps is None
    assert ds.catalog.items == {
        "1": {"text": "red lipstick"},
        "2": {"text": "face cream"},
        "3": {"text": ""},
        "4": {"text": "nail polish"},
    }
    # empty text is recoverable: counted, and the id stands in for the title
    assert "1 items have an empty 'text'" in caplog.text
    assert ds.catalog.title("3") == "3"


def lcrec_dir(root: Path) -> Path:
    d = root / "lc"
    write(d / "Toy.inter.json", json.dumps({"0": [0, 1, 2], "1": [2, 1, 0, 1]}))
    items = {
        "0": {"title": "Drill", "description": "cordless", "categories": ["Tools", "Power"]},
        "1": {"title": "Saw", "description": "", "categories": []},
        "2": {"title": "Tape", "description": "duct", "categories": ["Tools"]},
    }
    write(d / "Toy.item.json", json.dumps(items))
    return d


def test_lcrec_layout(tmp_path):
    d = lcrec_dir(tmp_path)
    assert detect_format(d) == "lcrec"
    ds = load_rec_dataset(d)
    assert ds.interactions.sequences == {"0": ["0", "1", "2"], "1": ["2", "1", "0", "1"]}
    assert ds.catalog.text_fields == ("title", "description", "categories")
    assert ds.catalog.items["0"] == {
        "title": "Drill",
        "description": "cordless",
        "categories": "Tools, Power",
    }
    assert ds.catalog.text("1") == "title: Saw"


def test_lcrec_file_path_is_detected(tmp_path):
    d = lcrec_dir(tmp_path)
    assert detect_format(d / "Toy.inter.json") == "lcrec"
    assert load_rec_dataset(d / "Toy.inter.json").interactions.num_interactions == 7


INTER_ROWS = [
    ("a", "x", "2024-01-02T00:00:00"),
    ("a", "y", "2024-01-01T00:00:00"),
    ("a", "z", "2024-01-03T00:00:00"),
]
ITEM_ROWS = [("x", "Ex"), ("y", "Why"), ("z", "Zed")]


@pytest.mark.parametrize("ext", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_generic_tables(tmp_path, ext):
    d = tmp_path / "g"
    d.mkdir()
    inter = {
        "user_id": [r[0] for r in INTER_ROWS],
        "item_id": [r[1] for r in INTER_ROWS],
        "timestamp": [r[2] for r in INTER_ROWS],
    }
    items = {"item_id": [r[0] for r in ITEM_ROWS], "name": [r[1] for r in ITEM_ROWS]}
    for stem, table in (("interactions", inter), ("items", items)):
        path = d / f"{stem}{ext}"
        cols = list(table)
        rows = list(zip(*table.values(), strict=True))
        if ext == ".parquet":
            pq.write_table(pa.table(table), path)
        elif ext == ".jsonl":
            write(path, "".join(json.dumps(dict(zip(cols, r, strict=True))) + "\n" for r in rows))
        else:
            sep = "\t" if ext == ".tsv" else ","
            write(path, sep.join(cols) + "\n" + "".join(sep.join(r) + "\n" for r in rows))
    assert detect_format(d) == "generic"
    ds = load_rec_dataset(d)
    assert ds.interactions.sequences == {"a": ["y", "x", "z"]}
    assert ds.catalog.items == {"x": {"name": "Ex"}, "y": {"name": "Why"}, "z": {"name": "Zed"}}
    assert ds.interactions.timestamps["a"][0] < ds.interactions.timestamps["a"][1]


def test_generic_custom_columns_without_items(tmp_path, caplog):
    f = write(tmp_path / "log.csv", "uid,iid,ts\n1,10,3\n1,11,1\n1,12,2\n")
    cfg = DataConfig(user_col="uid", item_col="iid", time_col="ts")
    with caplog.at_level(logging.WARNING):
        ds = load_rec_dataset(f, cfg)
    assert ds.interactions.sequences == {"1": ["11", "12", "10"]}
    assert ds.catalog.text_fields == ()
    assert ds.catalog.title("10") == "10"
    assert "no items table" in caplog.text


def test_to_datasets(tmp_path):
    ds = load_rec_dataset(recbole_dir(tmp_path))
    dd = ds.to_datasets()
    assert dd["items"].column_names == ["item_id", "movie_title", "release_year"]
    assert dd["items"]["movie_title"] == ["Alpha", "Beta", "Gamma"]
    assert dd["interactions"][0] == {
        "user_id": "u1",
        "item_ids": ["i1", "i2", "i3"],
        "timestamps": [100.0, 200.0, 300.0],
    }


SHARED_COUNTS = {
    "ml-100k": (943, 1682, 100000),
    "amazon_p5/beauty": (22363, 12101, 198502),
    "amazon18_scientific": (8317, 4344, 58492),
}


@pytest.mark.parametrize("rel", list(SHARED_COUNTS))
def test_shared_dataset_counts(rel, shared_data):
    ds = load_rec_dataset(shared_data / rel)
    users, items, interactions = SHARED_COUNTS[rel]
    assert (ds.interactions.num_users, len(ds.catalog), ds.interactions.num_interactions) == (
        users,
        items,
        interactions,
    )
    assert ds.dropped == {"duplicate_events": 0, "users_short": 0, "items_unused": 0}


def test_max_users_subset(tmp_path):
    ds = load_rec_dataset(recbole_dir(tmp_path), DataConfig(max_users=1))
    assert list(ds.interactions.sequences) == ["u1"]
    assert ds.catalog.ids == ["i1", "i2", "i3"]
