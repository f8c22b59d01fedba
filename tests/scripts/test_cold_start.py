"""scripts/cold_start.py end to end on a tiny chat model (a 1-step PLUM run on 30 ml-100k users
with 10% of the items held out): every row, the summary, the plot, the last line."""

from __future__ import annotations

import json

import pytest

from recllm.sid.sidmap import SIDMap
from recllm.testing import save_tiny_model
from tests.scripts.running import ROOT, run_script


@pytest.mark.slow  # a PLUM run under accelerate launch, two beam-search passes, SASRec
def test_cold_start_smoke(tmp_path, shared_data_or_none):
    data = str(shared_data_or_none / "ml-100k") if shared_data_or_none else "ml-100k"
    base = save_tiny_model(tmp_path / "base", tie_word_embeddings=False)
    out = tmp_path / "out"
    args = ["--kind", "chat", "--config", str(ROOT / "recipes" / "plum_sft.yaml")]
    args += ["--data", data, "--max-users", "30", "--out", str(out), "--beams", "10"]
    args += ["--sasrec-minutes", "0.05", "--recipe-args", "--model_name_or_path", str(base)]
    args += ["--codebook_size", "16", "--warmup_steps_embed", "0", "--max_steps", "1"]
    _, last = run_script("cold_start.py", *args, cwd=tmp_path)
    summary = json.loads((out / "summary.json").read_text())
    held = (out / "holdout_items.txt").read_text().split()
    assert summary["held_out_items"] == len(held) == round(0.1 * summary["items"])
    assert summary["test_users"] == 30 and last["cold_users"] == summary["cold_users"] > 0
    rows = last["rows"]
    # the trained model, popularity and SASRec cannot name a held-out item
    for name in ("recllm, trained catalog", "popularity", "SASRec"):
        assert rows[name]["cold_R@10"] == 0.0 and rows[name]["cold_share_top10"] == 0.0
    for name in ("recllm + new items (catalog add)", "text-KNN (TF-IDF, last 5 items)"):
        f = rows[name]
        assert f["cold_users"] + f["warm_users"] == 30
        assert 0 <= f["cold_N@10"] <= f["cold_R@10"] <= 1
        assert 0 <= f["warm_N@10"] <= f["warm_R@10"] <= 1
    assert rows["text-KNN (TF-IDF, last 5 items)"]["cold_share_top10"] > 0
    # the hybrid's five settings, chosen on validation users over the whole grid
    hybrid = summary["hybrid"]
    assert {"alpha", "bonus", "norm_top", "guide", "max_new"} <= set(hybrid)
    tried = {(t["norm_top"], t["max_new"]) for t in hybrid["tried"]}
    assert tried >= {(0, 0), (50, 0), (0, 1), (50, 3)}
    # the model the added row ranked with knows every held-out item; the trained one none
    added = SIDMap.load(out / "model_added" / "sid_map.json")
    trained = SIDMap.load(out / "model_run" / "model" / "sid_map.json")
    assert set(held) <= set(added.item_ids) and not set(held) & set(trained.item_ids)
    assert (out / "cold_start.png").read_bytes()[:4] == b"\x89PNG"
    assert "| SASRec |" in (out / "table.md").read_text()
