"""Run a benchmark script as its users do (a subprocess, single-threaded, offline) and read the
JSON object its last line must be."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def run_script(name: str, *args: str, cwd: Path) -> tuple[subprocess.CompletedProcess, Any]:
    """``python scripts/NAME ARGS`` in ``cwd``; fails the test on a non-zero exit (with the end of
    stderr); returns the process and its last line parsed as JSON."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / name), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc, json.loads(proc.stdout.strip().splitlines()[-1])
