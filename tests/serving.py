"""`recllm serve` in a child process (a real vLLM OpenAI-compatible server), for the serving,
think and teacher tests."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

VLLM_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",
    "OMP_NUM_THREADS": "1",
    "HF_HUB_OFFLINE": "1",
}
#: A vLLM engine inside the test's child process itself (no engine-core subprocess).
VLLM_INPROCESS_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", **VLLM_ENV}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def served(
    model: Path,
    log: Path,
    max_model_len: int = 1024,
    *,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> Iterator[str]:
    """``recllm serve --model MODEL [ARGS]`` on a free port until the block ends; yields the
    base URL. ``env`` adds to :data:`VLLM_ENV`; the server's output goes to ``log``."""
    port = free_port()
    cmd = [sys.executable, "-m", "recllm.cli", "serve", "--model", str(model), "--port", str(port)]
    cmd += [*args, "--", "--max-model-len", str(max_model_len)]
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **VLLM_ENV, **(env or {})}
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(proc, base + "/health", log)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def post(url: str, body: bytes | dict, timeout: float = 300) -> tuple[int, dict]:
    """POST JSON (a dict, or raw bytes as sent); the status and the parsed answer."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def run_vllm_child(code: str, job: dict, tmp_path: Path, env: Mapping[str, str]) -> dict:
    """Run ``code`` (a script reading the JSON job file named by ``sys.argv[1]`` and printing
    ``RESULT <json>``) in a child Python with ``env``; its result. vLLM runs in children: see
    tests/test_vllm_smoke.py."""
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job))
    proc = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=900,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"vLLM child failed:\n{proc.stderr[-5000:]}"
    return json.loads(lines[-1].removeprefix("RESULT "))


def wait_for_http(proc: subprocess.Popen, url: str, log: Path, seconds: float = 300) -> None:
    """Wait until ``url`` answers 200; fail with the log's tail if ``proc`` exits or time runs
    out."""
    deadline = time.monotonic() + seconds
    while True:
        assert proc.poll() is None, f"server exited:\n{log.read_text()[-5000:]}"
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"server not up:\n{log.read_text()[-5000:]}"
        time.sleep(0.5)
