"""scripts/bench_decode.py on the tiny model and a small random catalog: the four decoders timed,
the constrained ones returning the same items, the last line one JSON object."""

from __future__ import annotations

import pytest

from tests.scripts.running import run_script


@pytest.mark.slow  # default-suite budget (15 min on 2 cores): runs in CI's slow step
def test_bench_decode_smoke(tmp_path):
    args = ["--no-smol", "--items", "200", "--levels", "3", "--codebook-size", "8"]
    args += ["--users", "3", "--beams", "4", "--repeats", "1", "--call-repeats", "1"]
    proc, summary = run_script("bench_decode.py", *args, cwd=tmp_path)
    assert summary["sizes"]["items"] == 200 and summary["sizes"]["users_smol"] is None
    (r,) = summary["results"]
    assert (r["model"], r["beams"], r["users"]) == ("tiny-qwen3", 4, 3)
    assert set(r["seconds"]) == {"hf_free", "hf_ours", "hf_dict", "sid_beam"}
    assert all(s > 0 for s in r["seconds"].values())
    # the three constrained decoders agree, the processors mask alike, every beam is an item
    assert r["agree_dict"] and r["agree_sid_beam"] and r["same_masks_dict"]
    assert r["invalid"] == 0 and r["distinct_beams"]
    assert r["free_new_tokens"] == 3 + 3  # L + 3 new tokens
    assert r["constrained_over_free"] > 0 and r["sid_beam_speedup"] > 0
    assert 0 < r["processor_share_of_generate"] < 1
    assert "(a) ours/free" in proc.stdout and "tiny-qwen3 beams   4" in proc.stdout
