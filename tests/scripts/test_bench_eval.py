"""scripts/bench_eval.py on a tiny chat recommender: three arms timed, the shared prefix found
(the chat template's head), shorter compact prompts, the same rankings, one JSON last line."""

from __future__ import annotations

from recllm.testing import save_tiny_recommender
from tests.scripts.running import run_script


def test_bench_eval_smoke(tmp_path):
    model = save_tiny_recommender(tmp_path / "tiny")
    args = ["--model", str(model), "--users", "12", "--repeats", "1", "--batch-size", "4"]
    proc, summary = run_script("bench_eval.py", *args, cwd=tmp_path)
    assert summary["users"] == 12 and summary["same_rankings"] == 1.0
    whole, shared, compact = (
        summary[k] for k in ("whole prompts", "shared prefix once", "compact history")
    )
    assert whole["vs_whole"] == 1.0 and whole["shared_tokens"] == 0
    assert shared["shared_tokens"] >= 4  # the template's head, run once per batch
    assert shared["prompt_tokens"] == whole["prompt_tokens"]
    assert compact["prompt_tokens"] < whole["prompt_tokens"]  # 3 fewer tokens an item
    assert all(summary[k]["users_per_s"] > 0 for k in ("whole prompts", "compact history"))
    assert "users whose top 10 is the same" in proc.stdout
