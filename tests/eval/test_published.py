"""recllm/eval/published.yaml: every row has a source and valid columns, and data directories
find their table by folder or file names."""

from __future__ import annotations

import json

import pytest

from recllm.errors import UserError
from recllm.eval.published import (
    BEAUTY_PUBLISHED,
    COLUMNS,
    load_published,
    match_dataset,
    published_rows,
)


def test_every_row_has_a_source_and_valid_columns():
    tables = load_published()
    assert {"beauty", "sports", "toys", "scientific"} <= set(tables)
    for table in tables.values():
        assert table.names and table.protocol
        for row in table.rows:
            assert row.name and len(row.source) > 20
            assert set(row.metrics) <= set(COLUMNS) and row.metrics
            assert all(0 < v < 1 for v in row.metrics.values())
    # TIGER (NeurIPS 2023) Table 1, Beauty; kept importable for scripts/sasrec_beauty.py
    assert BEAUTY_PUBLISHED["TIGER (paper)"] == {
        "recall@5": 0.0454,
        "ndcg@5": 0.0321,
        "recall@10": 0.0648,
        "ndcg@10": 0.0384,
    }
    assert BEAUTY_PUBLISHED["SASRec (TIGER paper)"]["recall@10"] == 0.0605


def test_p5_beauty_and_lcrec_scientific_find_their_tables(tmp_path):
    beauty = tmp_path / "amazon_p5" / "beauty"
    beauty.mkdir(parents=True)
    (beauty / "sequential_data.txt").write_text("1 1 2 3\n")
    (beauty / "datamaps.json").write_text("{}")
    scientific = tmp_path / "amazon18_scientific"
    scientific.mkdir()
    (scientific / "Scientific.inter.json").write_text(json.dumps({"0": [0, 1, 2]}))
    (scientific / "Scientific.item.json").write_text("{}")
    renamed = tmp_path / "my_copy"  # the folder says nothing; the LC-Rec file names do
    renamed.mkdir()
    (renamed / "Scientific.inter.json").write_text("{}")
    other = tmp_path / "ml-100k"
    other.mkdir()
    (other / "ml-100k.inter").write_text("")

    assert match_dataset(beauty) == "beauty"
    assert match_dataset(beauty / "sequential_data.txt") == "beauty"
    assert match_dataset(scientific) == "scientific"
    assert match_dataset(renamed) == "scientific"
    assert match_dataset(other) is None
    assert "TIGER (paper)" in published_rows("beauty")
    assert published_rows("scientific") == {}  # no row checked against its source yet


def test_bad_tables_fail_naming_the_row(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("x:\n  match: {names: [x]}\n  rows:\n    - {name: A, recall@10: 0.1}\n")
    with pytest.raises(UserError, match=r"x\.rows\[0\]\]: a row needs a name and a source"):
        load_published(bad)
    bad.write_text("x:\n  match: {names: [x]}\n  rows:\n    - {name: A, source: S, hit@10: 0.1}\n")
    with pytest.raises(UserError, match="unknown columns"):
        load_published(bad)
    with pytest.raises(UserError, match="no published table of that name"):
        published_rows("nope")
