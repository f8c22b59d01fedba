"""Engine processes end with their owner (recllm.decode.vllm_lifetime), on a chain of plain
Python processes shaped like vLLM's (server -> EngineCore -> Worker): no vLLM needed. The real
server is tested in tests/apps/test_serve_vllm_faults.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recllm.decode import vllm_lifetime

# owner: marks itself, starts the "engine core", which starts the "worker", which watches (or
# not: argv[1]) and writes its pid and its parent's into the file argv[2]; all then sleep
_CHAIN = """
import importlib.util, os, subprocess, sys, time
watch, out, role, module = sys.argv[1] == "1", sys.argv[2], sys.argv[3], sys.argv[4]
# the module file itself: importing the recllm.decode package would load torch (seconds)
spec = importlib.util.spec_from_file_location("vllm_lifetime", module)
lifetime = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lifetime)
if role == "owner":
    lifetime.mark_engine_owner()
if role in ("owner", "core"):
    nxt = {"owner": "core", "core": "worker"}[role]
    subprocess.Popen([sys.executable, __file__, sys.argv[1], out, nxt, module])
else:
    started = lifetime.watch_engine_owner() if watch else False
    with open(out + ".tmp", "w") as f:
        f.write(f"{os.getpid()} {os.getppid()} {started}")
    os.replace(out + ".tmp", out)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _chain(tmp_path: Path, watch: bool) -> tuple[subprocess.Popen, int, int, bool]:
    out = tmp_path / f"worker-{watch}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RECLLM_ENGINE_OWNER", None)
    script = tmp_path / "chain.py"
    script.write_text(_CHAIN)
    module = vllm_lifetime.__file__
    argv = [sys.executable, str(script), "1" if watch else "0", str(out), "owner", module]
    owner = subprocess.Popen(argv, env=env)
    deadline = time.monotonic() + 60
    while not out.exists():
        assert owner.poll() is None and time.monotonic() < deadline, "the chain did not start"
        time.sleep(0.1)
    worker, core, started = out.read_text().split()
    return owner, int(worker), int(core), started == "True"


@pytest.mark.parametrize("watch", [True, False])
def test_engine_processes_end_when_their_owner_is_killed(tmp_path: Path, watch: bool):
    owner, worker, core, started = _chain(tmp_path, watch)
    try:
        assert started is watch
        assert _alive(core) and _alive(worker)
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait(timeout=10)
        deadline = time.monotonic() + (10 if watch else 2)
        while (_alive(core) or _alive(worker)) and time.monotonic() < deadline:
            time.sleep(0.1)
        if watch:
            assert not _alive(core) and not _alive(worker)
        else:  # control: without the watch, both outlive the owner (the fault)
            assert _alive(core) and _alive(worker)
    finally:
        for pid in (worker, core):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_no_watch_in_the_owner_itself_or_without_an_owner(monkeypatch):
    monkeypatch.delenv(vllm_lifetime.OWNER_ENV, raising=False)
    assert vllm_lifetime.watch_engine_owner() is False  # no owner named
    vllm_lifetime.mark_engine_owner()  # this process: an engine inside it watches nothing
    assert os.environ[vllm_lifetime.OWNER_ENV].startswith(f"{os.getpid()}:")
    assert vllm_lifetime.watch_engine_owner() is False
    monkeypatch.setenv(
        vllm_lifetime.OWNER_ENV, "1:0"
    )  # init is an ancestor, but pid 1 ends the walk
    assert vllm_lifetime.watch_engine_owner() is False
