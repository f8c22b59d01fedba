"""SIDMap: invariants, atomic save/load with content hash, published index import."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from recllm.errors import UserError
from recllm.sid.sidmap import SIDMap, read_index_json


def make() -> SIDMap:
    return SIDMap(["a", "b", "c"], np.array([[0, 1], [0, 2], [3, 0]]), (4, 3), {"note": "x"})


def test_lookup_both_ways():
    m = make()
    assert m.code("b") == (0, 2)
    assert m.item((3, 0)) == "c" and m.item([0, 0]) is None
    assert m.levels == 2 and len(m) == 3 and "a" in m
    with pytest.raises(KeyError, match="'zz' is not in the SID map"):
        m.code("zz")


def test_save_load_roundtrip_and_bytes(tmp_path):
    m = make()
    path = m.save(tmp_path)
    assert path.name == "sid_map.json"
    back = SIDMap.load(tmp_path)
    assert back.item_ids == m.item_ids and np.array_equal(back.codes, m.codes)
    assert back.codebook_sizes == (4, 3) and back.meta == {"note": "x"}
    assert back.content_hash == m.content_hash
    assert back.to_json() == path.read_text()


def test_edited_file_is_refused(tmp_path):
    path = make().save(tmp_path)
    doc = json.loads(path.read_text())
    doc["items"]["a"] = [1, 1]
    path.write_text(json.dumps(doc))
    with pytest.raises(UserError, match=r"content hash mismatch.*Fix: rebuild"):
        SIDMap.load(tmp_path)


REBUILD = (
    "Fix: rebuild it with `recllm sid build --data DATA --out DIR --overwrite` (or restore the "
    "file saved with the model)"
)


def test_truncated_file_is_named_with_the_fix(tmp_path):
    """Issue 15: a truncated sid_map.json reported only a JSON parser position."""
    path = make().save(tmp_path)
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    with pytest.raises(UserError) as err:
        SIDMap.load(tmp_path)
    message = str(err.value)
    assert message.startswith(f"{path}: the file is truncated, not valid JSON (")
    assert message.endswith(REBUILD)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ('{"format": "recllm.sid_map/1",, }', "the file is corrupt, not valid JSON"),
        ('{"format": "recllm.sid_map/1"}', "not a valid SID map (missing key 'items')"),
        (
            '{"format": "recllm.sid_map/1", "items": {"a": [0], "b": [0]}, "codebook_sizes": [2]}',
            "not a valid SID map (the codes are not unique",
        ),
    ],
)
def test_corrupt_file_is_named(tmp_path, content, problem):
    (tmp_path / "sid_map.json").write_text(content)
    with pytest.raises(UserError, match=re.escape(f"{tmp_path / 'sid_map.json'}: {problem}")):
        SIDMap.load(tmp_path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(UserError, match=re.escape(f"{tmp_path / 'nope'}: no such file. Fix:")):
        SIDMap.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=re.escape(f"{tmp_path / 'empty' / 'sid_map.json'}: no")):
        SIDMap.load(tmp_path / "empty")


@pytest.mark.parametrize(
    ("ids", "codes", "sizes", "message"),
    [
        (["a", "b"], [[0], [0]], (2,), "not unique"),
        (["a", "a"], [[0], [1]], (2,), "duplicate item ids"),
        (["a", "b"], [[0], [2]], (2,), "item 'b': code 2 at level 0 is outside \\[0, 2\\)"),
        (["a", "b", "c"], [[0], [1]], (2,), "codes must be \\(items, levels\\)"),
        (["a"], [[0, 0]], (2,), "2 code levels but 1 codebook sizes"),
    ],
)
def test_invalid_maps(ids, codes, sizes, message):
    with pytest.raises(ValueError, match=message):
        SIDMap(ids, np.array(codes), sizes)


def test_read_index_json_and_import(tmp_path):
    f = tmp_path / "X.index.json"
    f.write_text(
        json.dumps({"0": ["<a_1>", "<b_2>"], "1": ["<a_1>", "<b_2>"], "2": ["<a_0>", "<b_5>"]})
    )
    ids, codes = read_index_json(f)
    assert ids == ["0", "1", "2"] and codes.tolist() == [[1, 2], [1, 2], [0, 5]]
    with pytest.raises(ValueError, match="not unique"):
        SIDMap.from_index_json(f)
    m = SIDMap.from_index_json(f, resolve="extra-level")
    assert m.codes.tolist() == [[1, 2, 0], [1, 2, 1], [0, 5, 0]] and m.codebook_sizes == (2, 6, 2)


def test_bad_index_token(tmp_path):
    f = tmp_path / "Y.index.json"
    f.write_text(json.dumps({"0": ["<a_1>", "<c_2>"]}))
    with pytest.raises(ValueError, match="token '<c_2>' is not <b_N>"):
        read_index_json(f)


def test_published_index_counts(shared_data):
    for rel, unique in [
        ("amazon_p5/beauty/Beauty.index.json", 12088),
        ("amazon18_scientific/indexes/rqvae_native/Scientific.index.json", 3790),
        ("amazon18_scientific/indexes/letter_native/Scientific.index.json", 4317),
    ]:
        _, codes = read_index_json(shared_data / rel)
        assert len(np.unique(codes, axis=0)) == unique
