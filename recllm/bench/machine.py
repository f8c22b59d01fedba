"""What a benchmark report says about the machine it ran on."""

from __future__ import annotations

import os
import platform
from pathlib import Path

__all__ = ["cpu_name", "machine_line"]


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_line() -> str:
    """``"<processor>, <N> cores"``: the machine field of a benchmark summary."""
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
