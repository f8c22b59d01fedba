"""scripts/dialogue_benchmark.py on a tiny recommender with genres: the dialogue arm and its
control trained from it, every arm asked the same dialogue prompts, the last line one JSON
object; a rerun trains and asks nothing again."""

from __future__ import annotations

import json

import pytest

from recllm.testing import save_tiny_recommender
from tests.scripts.running import run_script


@pytest.mark.slow  # two plum_sft arms under accelerate launch
def test_dialogue_benchmark_smoke(tmp_path):
    start = save_tiny_recommender(tmp_path / "tiny", dialogue=True)
    out = tmp_path / "out"
    args = ["--start", str(start), "--out", str(out), "--steps", "2", "--batch", "2"]
    args += ["--users", "6", "--k", "10", "--categories", "2", "--control"]
    _, last = run_script("dialogue_benchmark.py", *args, cwd=tmp_path)
    assert list(last) == [
        "start (never saw a conversation)",
        "control: same steps, no dialogue rows",
        "dialogue SFT",
    ]
    for row in last.values():
        assert 0 <= row["hit_plain"] <= 1 and 0 <= row["hit_described"] <= 1
        assert 0 <= row["rec_recall"] <= 1
        shares = row["category_share_asked"]
        assert len(shares) == 2 and all(0 <= v <= 1 for v in shares.values())
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["train_minutes"]) == {"dialogue", "control"}
    assert all(r["users"] == 6 for r in summary["rows"].values())
    assert (out / "dialogue_benchmark.png").read_bytes()[:4] == b"\x89PNG"
    stamps = {p: p.stat().st_mtime_ns for p in (out / "eval").rglob("*.json")}
    assert len(stamps) == 3
    _, again = run_script("dialogue_benchmark.py", *args, cwd=tmp_path)
    assert again == last
    assert {p: p.stat().st_mtime_ns for p in (out / "eval").rglob("*.json")} == stamps
