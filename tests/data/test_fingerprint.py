"""The data fingerprint a model records: stable, order-free, and it tells other data apart."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from recllm.data.fingerprint import (
    FINGERPRINT_FORMAT,
    check_data_fingerprint,
    data_fingerprint,
    fingerprint_differences,
)
from recllm.data.splits import leave_one_out, temporal_split
from recllm.data.types import Catalog, Interactions
from recllm.errors import UserError

ITEMS = [f"i{n}" for n in range(6)]


def catalog(items=ITEMS) -> Catalog:
    return Catalog({i: {"title": f"t {i}"} for i in items}, text_fields=("title",))


def sequences() -> dict[str, list[str]]:
    return {"u1": ["i0", "i1", "i2", "i3"], "u2": ["i5", "i4", "i3"], "u3": ["i1", "i2", "i0"]}


def test_values_and_stability():
    fp = data_fingerprint(leave_one_out(Interactions(sequences())), catalog())
    assert {k: fp[k] for k in ("format", "split", "users", "items", "interactions")} == {
        "format": FINGERPRINT_FORMAT,
        "split": "loo",
        "users": 3,
        "items": 6,
        "interactions": 2 + 1 + 1,  # each user's last two items are the valid / test targets
    }
    assert len(fp["catalog_sha256"]) == len(fp["split_sha256"]) == 64
    # the order users and items were read in does not matter
    shuffled = dict(reversed(list(sequences().items())))
    again = data_fingerprint(leave_one_out(Interactions(shuffled)), catalog(ITEMS[::-1]))
    assert again == fp
    # and a fresh interpreter (another hash seed) computes the same digests
    code = (
        "from tests.data.test_fingerprint import *; "
        "print(data_fingerprint(leave_one_out(Interactions(sequences())), catalog())"
        "['split_sha256'])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"PYTHONHASHSEED": "123", "PATH": ""},
        cwd=Path(__file__).resolve().parents[2],  # the repository root: `tests` importable
        check=True,
    )
    assert out.stdout.strip() == fp["split_sha256"]


def test_other_data_is_told_apart():
    base = data_fingerprint(leave_one_out(Interactions(sequences())), catalog())
    # one target changed, same ids everywhere: only the split digest tells
    seqs = sequences()
    seqs["u2"] = ["i5", "i4", "i2"]
    other = data_fingerprint(leave_one_out(Interactions(seqs)), catalog())
    assert fingerprint_differences(base, other) == ["other users, histories or targets"]
    # a catalog with one more item
    bigger = data_fingerprint(leave_one_out(Interactions(sequences())), catalog([*ITEMS, "i6"]))
    assert fingerprint_differences(base, bigger) == [
        "items 7 (trained on 6)",
        "other catalog item ids",
    ]
    # another split kind of the same interactions
    times = {u: [float(t) for t in range(len(s))] for u, s in sequences().items()}
    temporal = temporal_split(Interactions(sequences(), times), 0.2, 0.2)
    diffs = fingerprint_differences(base, data_fingerprint(temporal, catalog()))
    assert diffs[0] == "split temporal (trained on loo)"


def test_check(caplog):
    base = data_fingerprint(leave_one_out(Interactions(sequences())), catalog())
    bigger = data_fingerprint(leave_one_out(Interactions(sequences())), catalog([*ITEMS, "i6"]))
    check_data_fingerprint(base, dict(base), model="M", data="D")  # same data: silent
    with pytest.raises(UserError) as err:
        check_data_fingerprint(base, bigger, model="M", data="D")
    assert str(err.value) == (
        "--data D: not the data M was trained on (items 7 (trained on 6); other catalog item "
        "ids). Fix: evaluate on the data the model records (leave out --data), or pass "
        "--allow-other-data to score it on this data anyway"
    )
    with caplog.at_level(logging.WARNING, logger="recllm.data.fingerprint"):
        check_data_fingerprint(base, bigger, model="M", data="D", allow_other_data=True)
        check_data_fingerprint(None, bigger, model="M", data="D")
    assert [r.getMessage() for r in caplog.records] == [
        "--data D: not the data M was trained on (items 7 (trained on 6); other catalog item "
        "ids); evaluating anyway (--allow-other-data)",
        "M records no data fingerprint (saved by an older recllm, or by hand): cannot check "
        "that D is the data it was trained on",
    ]
