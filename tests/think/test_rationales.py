"""Rationale data (recllm.tasks.reasoning): metadata rationales, the leakage filter, the cache."""

from __future__ import annotations

import json

import pytest

from recllm.data import load_rec_dataset, split_dataset
from recllm.data.config import DataConfig
from recllm.data.splits import Example
from recllm.data.types import Catalog
from recllm.tasks.reasoning import (
    RationaleCache,
    catalog_facets,
    generate_rationales,
    leaks,
    load_rationales,
    metadata_rationale,
    reason_examples,
    request_key,
    write_rationales,
)


@pytest.fixture(scope="module")
def ml100k(shared_data_or_none):
    path = str(shared_data_or_none / "ml-100k") if shared_data_or_none else "ml-100k"
    cfg = DataConfig(data_path=path, max_users=60)
    dataset = load_rec_dataset(config=cfg)
    return dataset, split_dataset(dataset, cfg)


def test_examples_come_from_the_training_split_only(ml100k):
    _, split = ml100k
    examples = reason_examples(split, 20, per_user=2)
    assert len(examples) == 2 * len(split.train.sequences)
    held_out = {(e.user_id, e.target) for e in [*split.valid, *split.test]}
    for ex in examples:
        seq = split.train.sequences[ex.user_id]
        t = seq.index(ex.target)
        # the target is a training item and the history the (cut) training items before it
        assert tuple(seq[:t][-20:]) == ex.history
        assert (ex.user_id, ex.target) not in held_out or ex.target in seq
    # the last training item of each user is the target of its last example
    last = {e.user_id: e.target for e in examples}
    assert all(last[u] == s[-1] for u, s in split.train.sequences.items())


def test_metadata_rationales_name_shared_facets_and_are_deterministic(ml100k):
    dataset, split = ml100k
    facets = catalog_facets(dataset.catalog)
    # ml-100k: genres are space-separated tags, years whole values
    assert {(f.name, f.splitter) for f in facets} == {("class", "words"), ("release_year", "whole")}
    examples = reason_examples(split, 20)
    one = generate_rationales(examples, dataset.catalog, source="metadata", progress=False)
    two = generate_rationales(examples, dataset.catalog, source="metadata", progress=False)
    assert one.rows == two.rows and len(one.rows) + one.leaked + one.empty == len(examples)
    ex = examples[0]
    text = metadata_rationale(dataset.catalog, facets, ex.history, ex.target)
    genres = dataset.catalog.items[ex.target]["class"].split()
    history_genres = {g for i in ex.history for g in dataset.catalog.items[i]["class"].split()}
    for g in genres:  # every genre of the target is named, as shared or as new
        assert g in text
        assert (f"class {g} (like" in text) == (g in history_genres)


def test_metadata_rationales_are_the_same_in_every_process(ml100k, shared_data_or_none):
    """Ties among facet counts are broken alphabetically, not by set order: string hashing
    differs between processes (PYTHONHASHSEED), and an earlier version's texts did too."""
    import os
    import subprocess
    import sys

    path = str(shared_data_or_none / "ml-100k") if shared_data_or_none else "ml-100k"
    code = (
        "import json, sys; from recllm.data import load_rec_dataset, split_dataset; "
        "from recllm.data.config import DataConfig; "
        "from recllm.tasks.reasoning import generate_rationales, reason_examples; "
        f"cfg = DataConfig(data_path={path!r}, max_users=60); d = load_rec_dataset(config=cfg); "
        "run = generate_rationales(reason_examples(split_dataset(d, cfg), 20, 3), d.catalog, "
        "source='metadata', progress=False); print(json.dumps([r['rationale'] for r in run.rows]))"
    )
    texts = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
        )
        assert out.returncode == 0, out.stderr[-2000:]
        texts.append(out.stdout.strip().splitlines()[-1])
    assert texts[0] == texts[1] and len(json.loads(texts[0])) > 100


def test_category_paths_split_on_commas_and_root_categories_are_dropped():
    items = {
        str(i): {
            "title": f"thing {i}",
            "categories": "Root,Tapes, Adhesives & Sealants,Duct Tape" if i % 2 else "Root,Tools",
            "brand": "Acme" if i < 3 else "Other",
        }
        for i in range(6)
    }
    catalog = Catalog(items, ("title", "categories", "brand"))
    cats = {f.name: f for f in catalog_facets(catalog)}
    assert cats["categories"].splitter == "commas" and cats["brand"].splitter == "whole"
    assert cats["categories"].tags(items["1"]["categories"]) == [
        "Tapes, Adhesives & Sealants",
        "Duct Tape",
    ]  # "Root" is on every item: dropped


def test_leakage_filter():
    assert leaks("They will love Toy Story next.", "Toy Story (1995)")  # year stripped
    assert leaks("...so TOY-STORY (1995) fits.", "Toy Story (1995)")  # case, punctuation
    assert not leaks("Another toy story about friendship.", "Toy Story 2 (1999)")
    assert leaks(
        "pick <|sid_begin|><a_1><b_2><|sid_end|>", "X", "<|sid_begin|><a_1><b_2><|sid_end|>"
    )
    assert not leaks("History is heating up", "Heat (1995)")  # words, not substrings
    # in a run: an item titled like a genre tag is named by its own rationale -> dropped, counted
    items = {
        "a": {"title": "Comedy", "class": "Comedy"},
        "b": {"title": "Laughs", "class": "Comedy"},
        "c": {"title": "Giggles", "class": "Comedy"},
        **{x: {"title": f"Tears {x}", "class": "Drama"} for x in "def"},
    }
    catalog = Catalog(items, ("title", "class"))
    examples = [Example("u1", ("b", "c"), "a"), Example("u2", ("a", "c"), "b")]
    run = generate_rationales(examples, catalog, source="metadata", progress=False)
    assert run.leaked == 1 and [r["target"] for r in run.rows] == ["b"]  # control: b is kept


def test_written_dataset_round_trips_with_its_record(tmp_path, ml100k):
    dataset, split = ml100k
    run = generate_rationales(
        reason_examples(split, 20), dataset.catalog, source="metadata", progress=False
    )
    write_rationales(run, tmp_path / "r", {"source": "metadata", "data_fingerprint": {"x": 1}})
    rows, record = load_rationales(tmp_path / "r")
    assert record["source"] == "metadata" and len(rows) == len(run.rows)
    assert rows[0] == run.rows[0]
    assert list(rows.features) == [
        "user_id",
        "history",
        "target",
        "rationale",
        "source",
        "teacher",
        "prompt_hash",
    ]
    assert not [p for p in tmp_path.iterdir() if p.name != "r"]  # no temp dir left behind


def test_cache_keeps_whole_lines_and_drops_a_torn_one(tmp_path):
    path = tmp_path / "cache.jsonl"
    cache = RationaleCache(path)
    k1, k2 = request_key({"a": 1}), request_key({"a": 2})
    assert k1 != k2 and k1 == request_key({"a": 1})
    cache.put(k1, rationale="one")
    cache.put(k1, rationale="again")  # a key is written once
    cache.put(k2, rationale="two")
    with open(path, "ab") as f:  # a write killed halfway
        f.write(b'{"key": "torn", "rationa')
    reopened = RationaleCache(path)
    assert len(reopened) == 2 and reopened.get(k1)["rationale"] == "one"
    assert path.read_bytes().endswith(b"\n") and len(path.read_text().splitlines()) == 2
    reopened.put("k3", rationale="three")  # appends after the cut, not onto the torn bytes
    assert [json.loads(line)["key"] for line in path.read_text().splitlines()] == [k1, k2, "k3"]
    path.write_text("not json\n")
    with pytest.raises(ValueError, match=r"cache\.jsonl:1: is not a rationale cache line"):
        RationaleCache(path)
