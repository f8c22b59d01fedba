"""scripts/bench_sft.py --config recipes/quickstart.yaml on a tiny model and data set: the four
runs (top layers / full fine-tuning x bf16 off / on) measured, the last line one JSON object."""

from __future__ import annotations

import math

import pytest

from recllm.testing import save_tiny_recommender
from tests.scripts.running import ROOT, run_script


def test_quickstart_config_speed_options(tmp_path):
    data = save_tiny_recommender(tmp_path / "tiny").parent / "data"
    proc, summary = run_script(
        "bench_sft.py",
        *("--config", str(ROOT / "recipes" / "quickstart.yaml")),
        *("--steps", "3", "--batch", "4", "--examples", "10", "--repeats", "1"),
        # recipe flags: the tiny data set (60 items: 8^3 codes), one of the tiny model's
        # two layers on top
        *("--data_path", str(data), "--codebook_size", "8", "--train_top_layers", "1"),
        *("--bf16", "false"),  # the run "as is" then has bf16 off, whatever the YAML says
        cwd=tmp_path,
    )
    assert summary["mode"] == "config" and summary["as_is"] == "top1_bf16_off"
    assert (summary["steps"], summary["batch"], summary["examples"]) == (3, 4, 10)
    runs = summary["runs"]
    assert list(runs) == ["top1_bf16_off", "top1_bf16_on", "full_bf16_off", "full_bf16_on"]
    assert [runs[k]["label"] for k in runs] == [
        "top 1 layers, bf16 off",
        "top 1 layers, bf16 on",
        "full fine-tuning, bf16 off",
        "full fine-tuning, bf16 on",
    ]
    for run in runs.values():
        for rate in ("s_per_step", "examples_per_s", "tokens_per_s", "supervised_per_s"):
            assert run[rate] > 0
        assert run["wall_s"] > 0 and run["cpu_s"] > 0
        assert math.isfinite(run["final_loss"]) and math.isfinite(run["mean_loss"])
        # counted from the batches: 3 steps of 4 over 10 examples are 4 + 4 + 2 (the epoch's
        # last batch is short); every run sees the same batches
        assert run["examples"] == 10
        assert run["tokens"] == runs["top1_bf16_off"]["tokens"]
        assert run["supervised"] == runs["top1_bf16_off"]["supervised"]
        # rec_sequence: the history SIDs are supervised too, not only the completion (a SID,
        # its markers and the end of turn: about 6 tokens)
        assert run["supervised"] > 10 * 10
    assert runs["top1_bf16_off"]["ratio_vs_as_is"]["tokens_per_s"] == 1.0
    assert runs["top1_bf16_on"]["trainable_params"] == runs["top1_bf16_off"]["trainable_params"]
    assert runs["top1_bf16_off"]["trainable_params"] < runs["full_bf16_off"]["trainable_params"]
    assert runs["full_bf16_on"]["trainable_params"] == summary["model_params"]
    # bf16 autocast changes the arithmetic, not the method: close losses on the same batches
    for method in ("top1", "full"):
        off, on = runs[f"{method}_bf16_off"]["final_loss"], runs[f"{method}_bf16_on"]["final_loss"]
        assert abs(off - on) < 0.05
    assert "native bf16 (AVX512-BF16/AMX): " in proc.stdout
    # FLOP/s as a share of a bare matmul on the same cores: full fine-tuning counts more FLOPs
    # for the same batches than the top layer alone (its backward runs through every layer)
    assert all(v > 0 for v in summary["matmul_gflops_per_s"].values())
    for run in runs.values():
        assert 0 < run["matmul_share"] < 2 and run["gflops_per_s"] > 0
    top, full = runs["top1_bf16_off"], runs["full_bf16_off"]
    assert full["gflops_per_s"] * full["wall_s"] > top["gflops_per_s"] * top["wall_s"]
    assert "of the bare float32 matmul" in proc.stdout
    assert "different methods" in proc.stdout


@pytest.mark.slow  # five SFT runs (~50 s on a loaded 2-core machine)
def test_recipe_against_bare_trl(tmp_path):
    """The default mode on the tiny Qwen3: five one-epoch runs over the same 8 ml-100k
    examples, every one timed, the ratios against bare TRL positive."""
    _, summary = run_script(
        "bench_sft.py", *("--examples", "8", "--batch", "4", "--repeats", "1"), cwd=tmp_path
    )
    keys = ["bare", "recipe", "recipe_dense_head", "recipe_random_batches", "recipe_packed"]
    assert summary["mode"] == "trl" and summary["examples"] == 8 and summary["tokens"] > 8
    assert list(summary["seconds"]) == keys and all(s > 0 for s in summary["seconds"].values())
    assert summary["ratio_vs_bare"]["bare"] == 1.0
    assert all(r > 0 for r in summary["ratio_vs_bare"].values())
    assert summary["ratio"] == summary["ratio_vs_bare"]["recipe"]
    assert summary["recipe_settings"]["packing"] is False
