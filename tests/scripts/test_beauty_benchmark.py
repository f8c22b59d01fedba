"""scripts/beauty_benchmark.py: its older flag names reach scripts/benchmark.py as the recipe's
keys (a unit test of the translation), and one run on a tiny data set (slow)."""

from __future__ import annotations

import importlib.util

import pytest

from recllm.testing import save_tiny_recommender
from tests.scripts.running import ROOT, run_script


def _module():
    spec = importlib.util.spec_from_file_location(
        "beauty_benchmark", ROOT / "scripts" / "beauty_benchmark.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_old_flag_names_become_the_recipe_keys():
    translate = _module().translate
    argv = ["--hidden", "64", "--lr=1e-3", "--item-tokens", "--bf16", "off", "--data", "D"]
    assert translate(argv) == [
        *("--hidden_size", "64", "--learning_rate=1e-3", "--item_tokens", "true"),
        *("--bf16", "false", "--data", "D"),
    ]
    assert translate(["--bf16=on", "--codebook", "8"]) == ["--bf16", "true", "--codebook_size", "8"]
    with pytest.raises(SystemExit, match="--collab-source is no longer available"):
        translate(["--collab-source", "sasrec"])


@pytest.mark.slow  # a seqlm decoder and SASRec trained and scored (~40 s)
def test_beauty_benchmark_smoke(tmp_path):
    data = save_tiny_recommender(tmp_path / "tiny").parent / "data"
    out = tmp_path / "bench"
    _, summary = run_script(
        "beauty_benchmark.py",
        *("--data", str(data), "--out", str(out), "--sasrec-minutes", "0.05"),
        *("--ensemble", "1", "--valid-users", "20", "--epochs", "2", "--codebook", "4"),
        *("--hidden", "32", "--heads", "2", "--mlp", "64", "--batch", "8"),
        *("--warmup_steps", "0", "--logging_steps", "5"),
        cwd=tmp_path,
    )
    assert summary["dataset"] == "beauty" and "TIGER (paper)" in summary["published"]
    assert summary["users"] == 40
    decoder = summary["rows"]["recllm SID decoder (beam 20)"]
    assert 0 <= decoder["ndcg@10"] <= decoder["recall@10"] <= 1
    assert decoder["invalid_rate"] == 0.0
    assert (out / "metrics.json").is_file()
