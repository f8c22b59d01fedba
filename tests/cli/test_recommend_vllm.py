"""``recllm recommend --engine vllm --slate N`` (slow, vLLM): the real CLI in a child process
answers the slate the transformers engine decodes (items in order, joint and per-item scores
within 5e-4), the history excluded inside the constraint, and its stdout is the JSON answer
alone (vLLM logs to stdout unless told otherwise; without the fix this test failed there)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recllm.apps.recommender import Recommender
from recllm.testing import save_tiny_recommender
from tests.serving import VLLM_INPROCESS_ENV

pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.usefixtures("torch_single_thread")]


def test_cli_slate_on_vllm_equals_hf(tmp_path: Path):
    model = save_tiny_recommender(tmp_path / "tiny", seed=0)
    history = ["item3", "item7"]
    cmd = [sys.executable, "-m", "recllm.cli", "recommend", "--model", str(model)]
    cmd += ["--engine", "vllm", "--history", ",".join(history), "--slate", "4"]
    cmd += ["--exclude-history", "--json"]
    done = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env={**os.environ, **VLLM_INPROCESS_ENV},
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("\n") == 1, done.stdout[:2000]  # the answer alone: vLLM logs to stderr
    got = json.loads(done.stdout)
    want = Recommender.from_pretrained(model, engine="hf").recommend_slate(
        history, 4, exclude_history=True
    )
    assert [r["item_id"] for r in got["items"]] == [r.item_id for r in want.items]
    assert abs(got["score"] - want.score) < 5e-4
    parts = [r["score"] for r in got["items"]]
    assert max(abs(p - r.score) for p, r in zip(parts, want.items, strict=True)) < 5e-4
    assert not {r["item_id"] for r in got["items"]} & set(history)
