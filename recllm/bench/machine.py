"""What a benchmark report says about the machine it ran on."""

from __future__ import annotations

import os
import platform
from pathlib import Path

__all__ = ["cpu_bf16", "cpu_name", "machine_line"]


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def cpu_bf16(cpuinfo: str | None = None) -> str | None:
    """The CPU's native bf16 support from ``/proc/cpuinfo``'s flags (or the text ``cpuinfo``):
    ``"AMX-BF16"``, ``"AVX512-BF16"``, ``"no bf16 (AVX2)"``; None when there are no flags."""
    text = cpuinfo
    if text is None:
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    flags = next((line for line in text.splitlines() if line.startswith("flags")), "").split()
    if not flags:
        return None
    if "amx_bf16" in flags:
        return "AMX-BF16"
    if "avx512_bf16" in flags:
        return "AVX512-BF16"
    return "no bf16 (AVX2)" if "avx2" in flags else "no bf16"


def machine_line() -> str:
    """``"<CPU model>, <N> cores, <bf16 support>"``: the machine field of a benchmark summary
    (bf16 autocast pays only on CPUs with native bf16; elsewhere the same run is ~2x slower)."""
    bf16 = cpu_bf16()
    return f"{cpu_name()}, {os.cpu_count()} cores" + (f", {bf16}" if bf16 else "")
