"""Atomic file and directory writes: nothing recllm writes is ever left half-written.

Every artifact is first written to a temporary sibling path and then moved into place with
``os.replace`` (atomic on POSIX within one filesystem), so a crash, a Ctrl-C or a full disk leaves
either the old artifact or the new one, never a truncated mix.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary file path next to ``path``; move it onto ``path`` if the block succeeds.

    Args:
        path: Final destination of the file.

    Yields:
        A path in the same directory to write to. It is deleted if the block raises.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: str | os.PathLike[str], obj: Any, indent: int | None = 2) -> Path:
    """Serialize ``obj`` as JSON to ``path`` atomically (keys kept in insertion order)."""
    return write_text_atomic(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory; move it onto ``path`` as a whole if the block succeeds.

    Args:
        path: Final directory.
        overwrite: Replace an existing directory at ``path``. Without it an existing non-empty
            directory is an error, so a user never loses an artifact by accident.

    Raises:
        FileExistsError: ``path`` exists, is not empty and ``overwrite`` is False.
    """
    dest = Path(path)
    if dest.exists() and any(dest.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{dest} already exists and is not empty; choose another output directory or pass "
            "--overwrite to replace it"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        yield tmp
        if dest.exists():
            # Move the old directory aside first so the swap window holds no half state.
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".old", dir=dest.parent))
            old.rmdir()
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
