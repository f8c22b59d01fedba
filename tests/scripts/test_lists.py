"""scripts/lists.py end to end on a tiny chat model (two 1-step PLUM runs on 30 ml-100k users,
next-session split of 5): every row, the summary, the plot, the last line."""

from __future__ import annotations

import json

import pytest

from recllm.bench.lists import choose_penalty
from recllm.sid.sidmap import SIDMap
from recllm.testing import save_tiny_model, save_tiny_recommender
from recllm.vocab.checkpoint import read_vocab_record
from tests.scripts.running import ROOT, run_script


@pytest.mark.slow  # two PLUM runs under accelerate launch, three decoding passes, SASRec
def test_lists_smoke(tmp_path, shared_data_or_none):
    data = str(shared_data_or_none / "ml-100k") if shared_data_or_none else "ml-100k"
    base = save_tiny_model(tmp_path / "base", tie_word_embeddings=False)
    out = tmp_path / "out"
    args = ["--kind", "chat", "--config", str(ROOT / "recipes" / "plum_sft.yaml")]
    args += ["--data", data, "--max-users", "30", "--out", str(out), "--users", "12"]
    args += ["--sasrec-minutes", "0.05", "--penalties", "1", "100", "--valid-users", "10"]
    args += ["--spread", "--recipe-args", "--model_name_or_path", str(base)]
    args += ["--codebook_size", "16", "--warmup_steps_embed", "0", "--max_steps", "1"]
    _, last = run_script("lists.py", *args, cwd=tmp_path)
    summary = json.loads((out / "summary.json").read_text())
    assert last["n"] == summary["n"] == 5 and last["test_users"] == summary["test_users"] == 12
    assert summary["split_users"] == 30 and summary["skipped_users"] == 0  # ml-100k: >= 20 each
    assert summary["category_field"] == "class"  # ml-100k's genres
    rows = last["rows"]
    assert list(rows) == [
        "slate model (slate beam)",
        "next-item model, top N beams",
        "next-item model, slate beam (exclusion)",
        "slate model (slate beam, spread)",
        "next-item model, slate beam (spread)",
        "slate model (slate beam, diversity penalty)",
        "SASRec top N",
        "popularity",
    ]
    # the penalty row: 0, 1 and 100 tried on 10 validation sessions, chosen by the goal's rule
    penalty = summary["penalty"]
    assert penalty["valid_users"] == 10 and list(penalty["tried"]) == ["0", "1", "100"]
    tried = {float(d): f for d, f in penalty["tried"].items()}
    floor = penalty["next_item_top_sid_diversity"]
    assert penalty["chosen"] == choose_penalty(tried, floor, 5)
    assert tried[100.0]["sid_diversity"] >= tried[0.0]["sid_diversity"]  # 16 codes, 5 items
    for name, f in rows.items():
        assert f["users"] == 12 and f["short_lists"] == 0, name
        assert 0 <= f["ndcg@5"] <= 1 and 0 <= f["recall@5"] <= 1
        assert 0 < f["sid_diversity"] <= 1 and f["category_diversity"] > 0
        assert 0 <= f["repeat_rate"] <= 1
    # spread: each item of a slate under its own first code (16 codes, 5 items)
    assert rows["slate model (slate beam, spread)"]["sid_diversity"] == 1.0
    assert rows["next-item model, slate beam (spread)"]["sid_diversity"] == 1.0
    # popularity: one list for everyone, so its diversity is that list's
    assert rows["popularity"]["sid_diversity"] * 5 == pytest.approx(
        round(rows["popularity"]["sid_diversity"] * 5)
    )
    # the slate arm learned the session task and carries its template; the next-item arm not
    slate = read_vocab_record(out / "slate" / "model")["recommender"]
    plain = read_vocab_record(out / "next_item" / "model")["recommender"]
    assert slate["session"] == {"weight": 1.0, "length": 5} and plain["session"] is None
    assert (out / "slate" / "model" / "prompts" / "rec_session.jinja").is_file()
    assert slate["data"]["split"] == "session" and slate["data"]["split_session_length"] == 5
    # both arms share the SID map (same data and SID settings)
    a = SIDMap.load(out / "slate" / "model" / "sid_map.json")
    b = SIDMap.load(out / "next_item" / "model" / "sid_map.json")
    assert a.item_ids == b.item_ids
    # slates hold 5 distinct items
    scores = json.loads((out / "scores" / "slate.json").read_text())["result"]["lists"]
    assert len(scores) == 12 and all(len(set(x)) == 5 for x in scores)
    assert (out / "lists.png").read_bytes()[:4] == b"\x89PNG"
    assert "| SASRec top N |" in (out / "table.md").read_text()


@pytest.mark.slow  # two from-scratch decoder runs, three decoding passes, SASRec
def test_lists_smoke_sid_sequence(tmp_path):
    """--kind seqlm on the tiny data set (no categorical field): the slate arm's windows are
    max_items + n items, its slates continue the history's SIDs."""
    data = save_tiny_recommender(tmp_path / "tiny").parent / "data"
    out = tmp_path / "out"
    args = ["--kind", "seqlm", "--config", str(ROOT / "recipes" / "seqlm.yaml"), "--n", "2"]
    args += ["--data", str(data), "--out", str(out), "--sasrec-minutes", "0.05"]
    args += ["--recipe-args", "--valid_users", "0", "--num_train_epochs", "2"]
    args += ["--codebook_size", "4", "--hidden_size", "32", "--num_heads", "2"]
    args += ["--intermediate_size", "64", "--per_device_train_batch_size", "8"]
    args += ["--warmup_steps", "0", "--time_budget_minutes", "null"]
    _, last = run_script("lists.py", *args, cwd=tmp_path)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["category_field"] is None and summary["n"] == 2
    # every user the loader keeps (3+ items) is split or counted as skipped (fewer than 5)
    assert summary["test_users"] == summary["split_users"] >= 30
    assert summary["split_users"] + summary["skipped_users"] <= 40
    assert "slate model (slate beam, spread)" not in last["rows"]  # without --spread
    for name, f in last["rows"].items():
        assert f["short_lists"] == 0 and "category_diversity" not in f, name
        assert 0 <= f["ndcg@2"] <= 1 and 0 < f["sid_diversity"] <= 1
    slate = json.loads((out / "slate" / "resolved_config.json").read_text())
    plain = json.loads((out / "next_item" / "resolved_config.json").read_text())
    assert json.dumps(slate).count('"session_length": 2') >= 1
    assert json.dumps(plain).count('"session_length": 1') >= 1
    # one SASRec teacher (seqlm.yaml's distill_weight 1): the next-item arm's, read by both
    assert (out / "next_item" / "teacher").is_dir() and not (out / "slate" / "teacher").exists()
    assert summary["shared_teacher"] == str((out / "next_item" / "teacher").resolve())
    assert summary["shared_teacher"] in json.dumps(slate)  # the slate arm's resolved teacher
    lists = json.loads((out / "scores" / "slate.json").read_text())["result"]["lists"]
    assert len(lists) == summary["test_users"] and all(len(set(x)) == 2 for x in lists)
