"""Held-out items (the cold-start split): out of every example the training run sees."""

from __future__ import annotations

from pathlib import Path

import pytest

from recllm.data import DataConfig, load_rec_dataset, split_dataset
from recllm.data.errors import DataError
from recllm.data.fingerprint import data_fingerprint
from recllm.data.holdout import choose_holdout_items, read_holdout_items, write_holdout_items


def _toy(root: Path) -> Path:
    """8 users, 6 items (i1..i6), timestamps in file order."""
    d = root / "toy"
    d.mkdir()
    seqs = {
        "u1": "i1 i2 i3 i4",
        "u2": "i2 i5 i1 i3",
        "u3": "i5 i6 i2 i1",
        "u4": "i3 i4 i5 i6",
        "u5": "i6 i1 i2 i5",
        "u6": "i4 i6 i3 i2",
        "u7": "i1 i3 i5",
        "u8": "i2 i4 i6",
    }
    rows = ["user_id:token\titem_id:token\ttimestamp:float"]
    for u, seq in seqs.items():
        rows += [f"{u}\t{i}\t{t}" for t, i in enumerate(seq.split())]
    (d / "toy.inter").write_text("\n".join(rows) + "\n")
    items = "".join(f"i{k}\tTitle {k}\n" for k in range(1, 7))
    (d / "toy.item").write_text("item_id:token\tmovie_title:token_seq\n" + items)
    return d


def test_holdout_removes_items_from_training_and_keeps_test(tmp_path):
    d = _toy(tmp_path)
    held = ["i2", "i5"]
    path = write_holdout_items(tmp_path / "held.txt", held)
    full_cfg = DataConfig(data_path=str(d), max_history=None)
    cfg = DataConfig(data_path=str(d), max_history=None, holdout_items=str(path))
    full_ds, ds = load_rec_dataset(config=full_cfg), load_rec_dataset(config=cfg)
    full, split = split_dataset(full_ds, full_cfg), split_dataset(ds, cfg)

    assert ds.catalog.ids == ["i1", "i3", "i4", "i6"]
    assert ds.dropped["items_held_out"] == 2
    # the training sequences: the usual s[:-2] without i2 / i5 (u2, u8: nothing left)
    assert split.train.sequences == {
        "u1": ["i1"],
        "u3": ["i6"],
        "u4": ["i3", "i4"],
        "u5": ["i6", "i1"],
        "u6": ["i4", "i6"],
        "u7": ["i1"],
    }
    assert split.train.timestamps == {
        "u1": [0.0],
        "u3": [1.0],
        "u4": [0.0, 1.0],
        "u5": [0.0, 1.0],
        "u6": [0.0, 1.0],
        "u7": [0.0],
    }
    # validation: held-out targets (u3, u4, u5) and emptied histories (u2, u8) dropped
    assert [(ex.user_id, ex.history, ex.target) for ex in split.valid] == [
        ("u1", ("i1",), "i3"),
        ("u6", ("i4", "i6"), "i3"),
        ("u7", ("i1",), "i3"),
    ]
    # no held-out item in any training example or validation example fed to training
    seen = {i for ex in split.train_examples() for i in (*ex.history, ex.target)}
    seen |= {i for ex in split.valid for i in (*ex.history, ex.target)}
    assert seen == {"i1", "i3", "i4", "i6"}
    # control: the usual split does train on them
    assert {"i2", "i5"} <= {i for s in full.train.sequences.values() for i in s}
    # test examples of the training run: the same treatment (u5, u6, u7 have held-out
    # targets; u8's history i2 i4 keeps i4); the benchmark scores full.test, unchanged
    assert [(ex.user_id, ex.history, ex.target) for ex in split.test] == [
        ("u1", ("i1", "i3"), "i4"),
        ("u2", ("i1",), "i3"),
        ("u3", ("i6",), "i1"),
        ("u4", ("i3", "i4"), "i6"),
        ("u8", ("i4",), "i6"),
    ]
    assert [ex.user_id for ex in full.test if ex.target in held] == ["u5", "u6", "u7"]
    # the fingerprint tells the two models apart
    assert data_fingerprint(split, ds.catalog) != data_fingerprint(full, full_ds.catalog)


def test_choose_holdout_items_is_seeded():
    ids = [f"i{k}" for k in range(100)]
    a = choose_holdout_items(ids, 0.1, seed=3)
    assert len(a) == 10 and set(a) <= set(ids)
    assert a == choose_holdout_items(list(reversed(ids)), 0.1, seed=3)  # file order irrelevant
    assert a != choose_holdout_items(ids, 0.1, seed=4)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        choose_holdout_items(ids, 1.0)


def test_holdout_file_errors(tmp_path):
    with pytest.raises(DataError, match="no such held-out items file"):
        read_holdout_items(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(DataError, match="names no item"):
        read_holdout_items(tmp_path / "empty.txt")
    d = _toy(tmp_path)
    path = write_holdout_items(tmp_path / "held.txt", ["i2", "nope"])
    with pytest.raises(DataError, match=r"not in the catalog, e\.g\. 'nope'"):
        load_rec_dataset(config=DataConfig(data_path=str(d), holdout_items=str(path)))
