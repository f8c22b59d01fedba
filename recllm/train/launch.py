"""Run a recipe under ``accelerate launch`` from Python, as the README's commands do.

Benchmarks and comparisons train several arms with one recipe and different YAMLs; each arm is
``launch_recipe(recipe, config=cfg, config_path=arm / "arm.yaml")``: the YAML is written
atomically next to the run (so the run can be repeated by hand), the recipe runs in its own
process (a crash or an OOM kill does not take the caller down), and the wall time is returned.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["launch_command", "launch_recipe"]


def launch_command(
    recipe: str | Path,
    *,
    config_path: str | Path | None = None,
    args: Sequence[str] = (),
    num_processes: int = 1,
    threads: int | None = None,
) -> list[str]:
    """The ``accelerate launch`` command line of ``recipe``.

    ``threads``: CPU threads per process (default: ``OMP_NUM_THREADS`` when the caller set it,
    e.g. to 1 beside other work, else the usable cores divided among the processes).
    accelerate gives a process one thread when there is no GPU unless told otherwise, which
    makes a CPU run several times slower.
    """
    if threads is None and os.environ.get("OMP_NUM_THREADS", "").isdigit():
        threads = max(1, int(os.environ["OMP_NUM_THREADS"]))
    if threads is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        threads = max(1, (cores or 1) // num_processes)
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    cmd += ["--num_processes", str(num_processes), "--num_cpu_threads_per_process", str(threads)]
    cmd.append(str(recipe))
    if config_path is not None:
        cmd += ["--config", str(config_path)]
    return [*cmd, *map(str, args)]


def launch_recipe(
    recipe: str | Path,
    *,
    config: Mapping[str, Any] | None = None,
    config_path: str | Path | None = None,
    args: Sequence[str] = (),
    num_processes: int = 1,
    env: Mapping[str, str] | None = None,
) -> float:
    """Run ``recipe`` with ``accelerate launch``; the wall time in seconds.

    Args:
        recipe: The recipe script (``recipes/plum_sft.py``...).
        config: A recipe YAML as a mapping, written to ``config_path`` (atomically) first;
            without it ``config_path`` names an existing YAML, or the recipe runs on flags only.
        args: More flags for the recipe (they override the YAML's keys).
        num_processes: accelerate processes.
        env: Environment variables added to this process's.

    Raises:
        subprocess.CalledProcessError: The recipe failed (its output went to this process's).
    """
    if config is not None:
        import yaml

        from recllm.io import atomic_path

        if config_path is None:
            raise ValueError("launch_recipe(config=...) needs config_path= to write it to")
        path = Path(config_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            Path(tmp).write_text(yaml.safe_dump(dict(config), sort_keys=False), encoding="utf-8")
    cmd = launch_command(recipe, config_path=config_path, args=args, num_processes=num_processes)
    logger.info("launching %s", shlex.join(cmd))
    print("+", shlex.join(cmd), flush=True)
    t0 = time.monotonic()
    subprocess.run(cmd, check=True, env={**os.environ, **(env or {})})
    return time.monotonic() - t0
