"""Rationales from a teacher: a real OpenAI-compatible server (`recllm serve` of a tiny model on
vLLM), concurrent requests, and a run killed mid-way that resumes from its cache."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recllm.tasks.reasoning import load_rationales
from recllm.testing import save_tiny_recommender
from tests.serving import served

pytestmark = [pytest.mark.vllm, pytest.mark.usefixtures("torch_single_thread")]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """`recllm serve` of a tiny recommender: (base URL, served model name, its data folder)."""
    tmp = tmp_path_factory.mktemp("teacher")
    model = save_tiny_recommender(tmp / "tiny", seed=1)
    with served(model, tmp / "serve.log") as base:
        yield base + "/v1", str(model), model.parent / "data"


def _generate(teacher, out: Path, *extra: str) -> list[str]:
    url, name, data = teacher
    cmd = [sys.executable, "-m", "recllm.cli", "reason", "generate", "--data", str(data)]
    cmd += ["--source", "teacher", "--teacher-url", url, "--teacher-model", name]
    cmd += ["--max-tokens", "16", "--out", str(out), *extra]
    return cmd


def _counts(stdout: str) -> tuple[int, int]:
    m = re.search(r"(\d+) requested, (\d+) from the cache", stdout)
    assert m, stdout[-2000:]
    return int(m.group(1)), int(m.group(2))


def test_teacher_rationales_and_a_rerun_served_from_the_cache(teacher, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        _generate(teacher, tmp_path / "r", "--concurrency", "4"),
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "to request; first answer took" in proc.stdout  # the estimate, before the bulk
    rows, record = load_rationales(tmp_path / "r")
    assert record["teacher"]["saw_target"] is True and record["teacher"]["model"] == teacher[1]
    assert record["examples"] == 40 and _counts(proc.stdout) == (40, 0)
    assert len(rows) + record["dropped_leaking"] + record["dropped_empty"] == 40
    assert all(r["source"] == "teacher" and r["rationale"] for r in rows)
    first = {(r["user_id"], r["target"]): r["rationale"] for r in rows}
    # a rerun asks nothing: every answer comes from the cache, the same texts
    again = subprocess.run(
        _generate(teacher, tmp_path / "r", "--overwrite"),
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert again.returncode == 0, again.stderr[-4000:]
    assert _counts(again.stdout) == (0, 40)
    rows2, _ = load_rationales(tmp_path / "r")
    assert {(r["user_id"], r["target"]): r["rationale"] for r in rows2} == first


def test_a_killed_run_resumes_without_duplicates_or_losses(teacher, tmp_path):
    out, cache = tmp_path / "r", tmp_path / "r.cache.jsonl"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = _generate(teacher, out, "--per-user", "3", "--concurrency", "2")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 300
    while not (cache.exists() and len(cache.read_bytes().splitlines()) >= 6):
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert not out.exists()  # nothing half written
    done = len({json.loads(line)["key"] for line in cache.read_text().splitlines()})

    rerun = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    rows, record = load_rationales(out)
    total = record["examples"]
    assert 6 <= done < total, (done, total)  # killed mid-run
    requested, cached = _counts(rerun.stdout)
    assert cached == done and requested == total - done  # asked only what the kill lost
    keys = [json.loads(line)["key"] for line in cache.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == total  # every request once
    pairs = [(r["user_id"], r["target"]) for r in rows]
    assert len(pairs) == len(set(pairs))  # no duplicate row
    assert len(rows) + record["dropped_leaking"] + record["dropped_empty"] == total  # none lost
