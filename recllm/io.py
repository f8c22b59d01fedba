"""Atomic file and directory writes: nothing recllm writes is ever left half-written.

Every artifact is first written to a temporary sibling path and then moved into place with
``os.replace`` (atomic on POSIX within one filesystem), so a crash, a Ctrl-C or a full disk leaves
either the old artifact or the new one, never a truncated mix.

Two details make the temporary paths behave like ordinary files:

- They are created with ``os.open(..., 0o666)`` / ``os.mkdir(..., 0o777)``, so the process umask
  decides their mode exactly as for any file the user writes (0644 / 0755 under umask 022).
  ``tempfile.mkstemp`` / ``mkdtemp`` would give 0600 / 0700, which the rename then carried onto
  the artifact: a model or SID map nobody else in the group could read.
- Their names carry the writer's host and process id (``.NAME.<host>-<pid>.<random>.tmp``). A
  process killed with SIGKILL cannot clean up after itself, so the next write to the same
  destination removes the temporaries of writers that are gone (same host, pid no longer alive);
  a concurrent writer that is still running keeps its own.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from recllm.errors import UserError

logger = logging.getLogger(__name__)

#: A short tag of this machine, so a temporary on a shared filesystem is only ever judged by the
#: host whose process table holds its writer.
_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def _temp_name(dest: Path, kind: str) -> str:
    """``.NAME.<host>-<pid>.<random>.<kind>``: a sibling name that says who is writing it."""
    return f".{dest.name}.{_HOST}-{os.getpid()}.{secrets.token_hex(4)}.{kind}"


def _temp_pattern(dest: Path) -> re.Pattern[str]:
    return re.compile(
        rf"\.{re.escape(dest.name)}\.(?P<host>[0-9a-f]{{8}})-(?P<pid>\d+)\.[0-9a-f]+\.(?:tmp|old)"
    )


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (a zombie counts as alive: it may be reaped
    and its temporary cleaned up next time)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)  # signal 0: existence check only
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    except OSError as e:  # pragma: no cover - any other answer: do not risk removing its files
        return e.errno != errno.ESRCH
    return True


def clean_stale_temps(path: str | os.PathLike[str]) -> list[Path]:
    """Remove temporaries left next to ``path`` by recllm writers that no longer run.

    Only names recllm's atomic writers create for this very destination are considered, and only
    those written on this host by a process that is gone (a killed ``recllm sid build``, say).
    Temporaries of live writers, and anything else in the folder, are left alone.

    Args:
        path: The destination whose temporary siblings to clean.

    Returns:
        The paths removed.
    """
    dest = Path(path)
    if not dest.parent.is_dir():
        return []
    pattern = _temp_pattern(dest)
    removed: list[Path] = []
    for entry in dest.parent.iterdir():
        match = pattern.fullmatch(entry.name)
        if match is None or match["host"] != _HOST or _alive(int(match["pid"])):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
        logger.warning(
            "removed %s, left behind by process %s that ended before finishing %s",
            entry,
            match["pid"],
            dest,
        )
        removed.append(entry)
    return removed


def _new_temp_file(dest: Path) -> Path:
    while True:
        tmp = dest.parent / _temp_name(dest, "tmp")
        try:
            # 0o666 & ~umask, like any file the user creates (mkstemp would force 0600)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:  # pragma: no cover - 32 random bits collided
            continue
        os.close(fd)
        return tmp


def _new_temp_dir(dest: Path, kind: str = "tmp") -> Path:
    while True:
        tmp = dest.parent / _temp_name(dest, kind)
        try:
            tmp.mkdir(mode=0o777)  # 0o777 & ~umask (mkdtemp would force 0700)
        except FileExistsError:  # pragma: no cover - 32 random bits collided
            continue
        return tmp


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary file path next to ``path``; move it onto ``path`` if the block succeeds.

    The file exists (empty) when the block starts and gets the umask's normal mode. Stale
    temporaries of killed writers of the same ``path`` are removed first.

    Args:
        path: Final destination of the file.

    Yields:
        A path in the same directory to write to. It is deleted if the block raises.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(dest)
    tmp_path = _new_temp_file(dest)
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

    The directory gets the umask's normal mode. Stale temporaries of killed writers of the same
    ``path`` are removed first (see :func:`clean_stale_temps`).

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
    clean_stale_temps(dest)
    tmp = _new_temp_dir(dest)
    try:
        yield tmp
        if dest.exists():
            # Move the old directory aside first so the swap window holds no half state.
            old = _new_temp_dir(dest, "old")
            old.rmdir()
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def check_out_dir(out_dir: str | Path, overwrite: bool = False, flag: str = "--out") -> None:
    """Fail before any work when ``out_dir`` cannot receive an artifact directory.

    Raises:
        UserError: ``out_dir`` is an existing file, or an existing non-empty directory and
            ``overwrite`` is False.
    """
    p = Path(out_dir)
    if p.exists() and not p.is_dir():
        raise UserError(
            f"{flag} {p}",
            "an existing file, not a directory",
            f"choose a directory path for {flag} (it is created), or remove the file",
        )
    if p.is_dir() and any(p.iterdir()) and not overwrite:
        raise UserError(
            f"{flag} {p}",
            "already exists and is not empty",
            "pass --overwrite to replace it, or choose another directory",
        )
