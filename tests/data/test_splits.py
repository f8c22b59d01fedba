"""Splits: leave-one-out and temporal, checked against hand-built expectations."""

from __future__ import annotations

import json
import logging

import pytest

from recllm.data import (
    DataConfig,
    Example,
    Interactions,
    leave_one_out,
    load_rec_dataset,
    split_dataset,
    temporal_split,
)
from recllm.data.splits import write_split

from .test_loaders import recbole_dir


def test_leave_one_out_exact(caplog):
    inter = Interactions({"a": ["1", "2", "3", "4", "5"], "b": ["6", "7", "8"], "c": ["9", "1"]})
    with caplog.at_level(logging.WARNING):
        split = leave_one_out(inter, max_history=2)
    assert "skipped 1 users with fewer than 3 interactions" in caplog.text
    assert split.train.sequences == {"a": ["1", "2", "3"], "b": ["6"]}
    assert split.valid == [Example("a", ("2", "3"), "4"), Example("b", ("6",), "7")]
    assert split.test == [Example("a", ("3", "4"), "5"), Example("b", ("6", "7"), "8")]
    assert list(split.train_examples()) == [
        Example("a", ("1",), "2"),
        Example("a", ("1", "2"), "3"),
    ]


def test_leave_one_out_untruncated_and_timestamps():
    inter = Interactions({"a": ["1", "2", "3", "4"]}, {"a": [1.0, 2.0, 3.0, 4.0]})
    split = leave_one_out(inter, max_history=None)
    assert split.test == [Example("a", ("1", "2", "3"), "4")]
    assert split.train.timestamps == {"a": [1.0, 2.0]}


def test_training_part_never_contains_eval_targets():
    inter = Interactions({u: [f"{u}{k}" for k in range(6)] for u in "abc"})
    split = leave_one_out(inter)
    train_items = split.train.item_ids()
    assert not train_items & {e.target for e in split.valid + split.test}


def test_temporal_split_exact():
    # 10 interactions at t=0..9; valid window [8, 9), test window [9, ...)
    inter = Interactions(
        {"a": ["1", "2", "3", "4", "5"], "b": ["6", "7", "8", "9", "10"]},
        {"a": [0.0, 2.0, 4.0, 6.0, 8.0], "b": [1.0, 3.0, 5.0, 7.0, 9.0]},
    )
    split = temporal_split(inter, valid_ratio=0.1, test_ratio=0.1, max_history=3)
    assert split.train.sequences == {"a": ["1", "2", "3", "4"], "b": ["6", "7", "8", "9"]}
    assert split.valid == [Example("a", ("2", "3", "4"), "5")]
    assert split.test == [Example("b", ("7", "8", "9"), "10")]


def test_temporal_split_needs_timestamps():
    with pytest.raises(ValueError, match=r"needs timestamps.*use --split loo"):
        temporal_split(Interactions({"a": ["1", "2", "3"]}))


def test_split_dataset_and_write(tmp_path):
    ds = load_rec_dataset(recbole_dir(tmp_path))
    split = split_dataset(ds, DataConfig(max_history=1))
    out = tmp_path / "out"
    write_split(split, ds, str(out))
    assert sorted(p.name for p in out.iterdir()) == [
        "items.jsonl",
        "split.json",
        "test.jsonl",
        "train.jsonl",
        "valid.jsonl",
    ]
    test_rows = [json.loads(x) for x in (out / "test.jsonl").read_text().splitlines()]
    assert test_rows == [
        {"user_id": "u1", "history": ["i2"], "target": "i3"},
        {"user_id": "u2", "history": ["i3"], "target": "i1"},
    ]
    meta = json.loads((out / "split.json").read_text())
    assert meta["split"] == "loo" and meta["counts"] == {"train_users": 2, "valid": 2, "test": 2}
    assert "transformers" in meta["versions"] and "recllm" in meta["versions"]
    # an existing output is never clobbered by accident, and no temp dirs are left behind
    with pytest.raises(FileExistsError, match="--overwrite"):
        write_split(split, ds, str(out))
    write_split(split, ds, str(out), overwrite=True)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_to_datasets_columns(tmp_path):
    split = split_dataset(load_rec_dataset(recbole_dir(tmp_path)))
    dd = split.to_datasets()
    assert dd["test"].column_names == ["user_id", "history", "target"]
    assert dd["test"][0] == {"user_id": "u1", "history": ["i1", "i2"], "target": "i3"}
    assert dd["train"][1]["item_ids"] == ["i2"]


def test_shared_ml100k_loo(shared_data):
    ds = load_rec_dataset(shared_data / "ml-100k")
    split = split_dataset(ds)
    assert len(split.test) == 943 and len(split.valid) == 943
    assert split.train.num_interactions == 100000 - 2 * 943
    assert max(len(e.history) for e in split.test) == 20
