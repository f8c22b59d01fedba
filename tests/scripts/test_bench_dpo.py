"""scripts/bench_dpo.py on a tiny recommender: every method runs the real DPO recipe on the same
mined pairs, and the figures come from the trainers' own logs."""

from __future__ import annotations

import json

from recllm.align.mining import load_preferences
from recllm.testing import save_tiny_recommender
from tests.scripts.running import run_script


def test_bench_dpo_times_every_method_on_the_same_pairs(tmp_path):
    sft = save_tiny_recommender(tmp_path / "tiny")
    out = tmp_path / "bench"
    _, s = run_script(
        "bench_dpo.py",
        *("--model", str(sft), "--out", str(out), "--top-layers", "1", "--steps", "2"),
        *("--batch", "4", "--mining-users", "16", "--beams", "6"),
        *("--recipe-args", "--bf16", "false", "--reward", "exact_hit=1,prefix_credit=0.5"),
        cwd=tmp_path,
    )
    rows = s["methods"]
    assert list(rows) == ["full", "top", "lora"]
    assert rows["full"]["vs_full"] == 1.0
    for method, r in rows.items():
        log = json.loads((out / method / "dpo_log.json").read_text())
        assert r["steps"] == 2 == max(e.get("step", 0) for e in log["rounds"][0]["dpo"])
        assert r["seconds_per_step"] > 0
    pairs = {m: load_preferences(out / m / "round1" / "preferences")[0] for m in rows}
    assert len(pairs["full"]) > 0
    for m in ("top", "lora"):  # only what trains differs: the same pairs, row for row
        assert pairs[m].to_list() == pairs["full"].to_list()
