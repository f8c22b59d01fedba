"""Faults of ``recllm serve`` found by probing (issue 29, item 7), on a real vLLM server of a tiny
random recommender: thinking with several rationales, and the lifetime of vLLM's child
processes when the server is killed.

Each test starts its own server (about 30 s on 2 cores), hence ``slow``. The default run covers
the same logic without vLLM in tests/apps/test_serve_errors.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recllm.testing import save_tiny_recommender
from tests.serving import VLLM_ENV, free_port, post, served, wait_for_http

pytestmark = [pytest.mark.vllm, pytest.mark.slow]
pytest.importorskip("vllm", reason="recllm serve runs vLLM (the [vllm] extra)")


def make_thinking(model: Path) -> Path:
    """Record a ``think`` task in the model's recllm_vocab.json, as recipes/onerec_think.py
    does: the random model then takes thinking requests (its rationales are random text)."""
    path = model / "recllm_vocab.json"
    record = json.loads(path.read_text())
    record["recommender"]["think"] = {"task": "reason_rec"}
    path.write_text(json.dumps(record))
    return model


@pytest.fixture(scope="module")
def think_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_thinking(save_tiny_recommender(tmp_path_factory.mktemp("think") / "tiny"))


def test_think_with_several_rationales_answers_every_request(think_model: Path, tmp_path: Path):
    """``{"think": true, "rationales": R}`` used to fail with a 400 ``zip() argument 2 is
    shorter than argument 1`` in most sequential requests: vLLM streams the R samples of a
    request one at a time and only the last message was read."""
    with served(think_model, tmp_path / "serve.log") as base:
        answers = []
        for rationales in (2, 4, 8, 3, 6):
            body = {"history": ["item1", "item2"], "k": 5, "think": True}
            status, got = post(base + "/v1/recommend", {**body, "rationales": rationales})
            answers.append((rationales, status, len(got.get("rationales", [])), got))
    failed = [a for a in answers if a[1] != 200 or a[2] != a[0]]
    assert not failed, failed
    assert all(len(a[3]["items"]) == 5 for a in answers)


def _children(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (from /proc), zombies left out."""
    kids: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z":
            kids.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in kids.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if state[state.rindex(")") + 2] != "Z":
            alive.append(pid)
    return alive


def test_kill_9_of_serve_ends_vllm_children(think_model: Path, tmp_path: Path):
    """kill -9 of ``recllm serve`` used to leave vLLM's EngineCore (and its worker) running,
    holding the model and the KV cache, until killed by hand."""
    port = free_port()
    log = tmp_path / "serve.log"
    cmd = [sys.executable, "-m", "recllm.cli", "serve", "--model", str(think_model)]
    cmd += ["--port", str(port), "--", "--max-model-len", "512"]
    # the default engine layout: EngineCore in a child process (no in-process engine)
    env = {**os.environ, **VLLM_ENV}
    env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    children: list[int] = []
    try:
        wait_for_http(proc, f"http://127.0.0.1:{port}/health", log)
        children = _children(proc.pid)
        # control: while the server lives, the test sees its engine process(es)
        assert children, "the server has no child processes: nothing to check"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 20
        while _alive(children) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = _alive(children)
        names = [
            Path(f"/proc/{p}/comm").read_text().strip() for p in left if Path(f"/proc/{p}").exists()
        ]
        assert not left, f"{len(left)} processes outlived the server: {names}"
    finally:
        for pid in [proc.pid, *_alive(children)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
