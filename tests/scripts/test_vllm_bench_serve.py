"""scripts/bench_serve.py on the tiny recommender: transformers' two engines and vLLM's two (in
a child process) on the same 4 users, the last line one JSON object. The script has no engine
option without vLLM, so this test starts vLLM (marked vllm and slow)."""

from __future__ import annotations

import pytest

from tests.scripts.running import run_script

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def test_bench_serve_smoke(tmp_path):
    pytest.importorskip("vllm")
    args = ["--model", "tiny", "--users", "4", "--latency-users", "2", "--repeats", "1"]
    args += ["--batch-size", "4", "--kv-cache-gib", "1", "--max-model-len", "512"]
    _, report = run_script("bench_serve.py", *args, cwd=tmp_path)
    assert (report["k"], report["users"]) == (10, 4)
    row = report["models"]["tiny"]
    assert row["items"] == 60
    for key in ("hf_generate", "hf_sid_beam", "vllm", "vllm_beam_search"):
        assert row[key]["recs_per_s"] > 0 and row[key]["p50_ms"] > 0
    # recllm's two transformers engines return the same lists (the reference is one of them)
    assert row["hf_sid_beam"]["identical_top10"] == "4/4"
    assert row["hf_generate"]["identical_top10"] == "4/4"
    assert row["ratio_vllm_over_hf_sid_beam"] > 0
