"""vLLM's engine processes end when the process that started them dies, even by ``kill -9``.

vLLM's API server starts its engine in a child process (``EngineCore``), which starts the model
in another (``Worker``, that holds the weights and the KV cache). vLLM stops them when the
server exits normally, but after a ``kill -9`` of the server they run on, orphaned, until
killed by hand (seen: the Worker holding 7.4 GB).

The process that starts the engine names itself in the environment (:func:`mark_engine_owner`),
which the engine processes inherit (vLLM spawns them). The SID logits processor, which vLLM
builds in the process that runs the model, calls :func:`watch_engine_owner`: a daemon thread
waits on a pidfd of the owner (no polling; a pid reused later cannot be mistaken for it) and,
when the owner is gone, kills the processes between the owner and itself (the EngineCore),
then itself. An engine inside the owner's own process watches nothing.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import threading
import time
from pathlib import Path

__all__ = ["OWNER_ENV", "mark_engine_owner", "watch_engine_owner"]

logger = logging.getLogger(__name__)

#: Environment variable: ``PID:START`` of the process that owns the vLLM engine (start time in
#: clock ticks since boot, from ``/proc/PID/stat``, so a reused pid is not taken for it).
OWNER_ENV = "RECLLM_ENGINE_OWNER"
_watching = threading.Event()


def _stat(pid: int) -> tuple[int, int] | None:
    """``(parent pid, start time)`` of a live process, None when it is gone or a zombie."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return int(fields[1]), int(fields[19])


def mark_engine_owner() -> None:
    """Name this process as the owner of the vLLM engine it is about to start."""
    stat = _stat(os.getpid())
    if stat is not None:
        os.environ[OWNER_ENV] = f"{os.getpid()}:{stat[1]}"


def _between(owner: int) -> list[tuple[int, int]] | None:
    """The ``(pid, start)`` of this process's ancestors below ``owner``; None when ``owner``
    is not an ancestor (then this process is not the owner's engine)."""
    chain, pid = [], os.getppid()
    while pid > 1:
        if pid == owner:
            return chain
        stat = _stat(pid)
        if stat is None:
            return None
        chain.append((pid, stat[1]))
        pid = stat[0]
    return None


def _end(chain: list[tuple[int, int]]) -> None:
    for pid, start in chain:
        stat = _stat(pid)
        if stat is not None and stat[1] == start:  # the same process, not a reused pid
            os.kill(pid, signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def _wait_for_exit(pid: int, start: int) -> None:
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # no pidfd (old kernel): look once a second
        while (stat := _stat(pid)) is not None and stat[1] == start:
            time.sleep(1.0)
        return
    try:
        if (stat := _stat(pid)) is None or stat[1] != start:
            return  # gone (and maybe reused) before the pidfd was taken
        select.select([fd], [], [])  # readable once the process has exited
    finally:
        os.close(fd)


def watch_engine_owner() -> bool:
    """In a vLLM engine process: end this process (and the engine processes above it) when the
    owner named by :data:`OWNER_ENV` dies. Returns whether a watch was started (once per
    process; not in the owner itself, nor without an owner)."""
    value = os.environ.get(OWNER_ENV, "")
    try:
        owner, start = (int(x) for x in value.split(":"))
    except ValueError:
        return False
    if owner == os.getpid() or _watching.is_set():
        return False
    chain = _between(owner)
    if chain is None:
        return False
    _watching.set()

    def watch() -> None:
        _wait_for_exit(owner, start)
        logger.warning("the process that started this vLLM engine (pid %d) is gone: exiting", owner)
        _end(chain)

    threading.Thread(target=watch, name="recllm-engine-owner", daemon=True).start()
    return True
