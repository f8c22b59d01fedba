"""Conversations reworded by a teacher: a real OpenAI-compatible server (`recllm serve` of a tiny
model on vLLM), the same client, cache and resume as rationales."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from recllm.tasks.dialogue import load_dialogues
from recllm.testing import save_tiny_recommender
from tests.serving import served

pytestmark = [pytest.mark.vllm, pytest.mark.usefixtures("torch_single_thread")]


def test_teacher_rewrites_turns_and_a_rerun_asks_nothing(tmp_path):
    model = save_tiny_recommender(tmp_path / "tiny", seed=1, dialogue=True)
    data = model.parent / "data"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with served(model, tmp_path / "serve.log") as base:
        cmd = [sys.executable, "-m", "recllm.cli", "dialogue", "generate", "--data", str(data)]
        cmd += ["--source", "teacher", "--teacher-url", base + "/v1"]
        cmd += ["--teacher-model", str(model), "--max-tokens", "12", "--max-conversations", "6"]
        cmd += ["--concurrency", "4", "--out", str(tmp_path / "d")]
        first = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        assert first.returncode == 0, first.stderr[-4000:]
        assert "to request; first answer took" in first.stdout  # the estimate, before the bulk
        again = subprocess.run(
            [*cmd, "--overwrite"], capture_output=True, text=True, env=env, timeout=600
        )
        assert again.returncode == 0, again.stderr[-4000:]
    convs, record = load_dialogues(tmp_path / "d")
    turns = [t for c in convs for t in c.turns]
    assert record["conversations"] == 6 and record["teacher"]["model"] == str(model)
    assert record["teacher_parts"] == 2 * len(turns)  # a request and a reason per turn
    # the rerun was served from the cache: nothing asked, the same words
    m = re.search(r"(\d+) requested, (\d+) from the cache", again.stdout)
    assert m and int(m.group(1)) == 0 and int(m.group(2)) > 0, again.stdout[-2000:]
    rewritten = sum(t.text is not None for t in turns) + sum(t.note is not None for t in turns)
    assert rewritten + record["kept_built"] == record["teacher_parts"]
    assert rewritten > 0  # the tiny model answers with some text
    assert all("<|sid" not in (t.text or "") + (t.note or "") for t in turns)
