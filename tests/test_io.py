"""Atomic writes: artifacts get the umask's normal modes, and the temporaries of a writer killed
with SIGKILL are removed by the next write to the same place, never those of a live writer
(issue 15: artifacts were 0600 / 0700, and `kill -9` during `sid build` left `.*.tmp/` forever)."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from recllm.io import _HOST, atomic_dir, atomic_path, clean_stale_temps, write_json_atomic


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(
    ("mask", "file_mode", "dir_mode"),
    [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)],
    ids=["umask022", "umask027"],
)
def test_artifacts_get_the_modes_the_umask_gives(tmp_path, mask, file_mode, dir_mode):
    with umask(mask):
        write_json_atomic(tmp_path / "a.json", {"x": 1})
        with atomic_path(tmp_path / "b.bin") as tmp:
            tmp.write_bytes(b"\0")
        with atomic_dir(tmp_path / "art") as tmp:
            (tmp / "sid_map.json").write_text("{}")
            (tmp / "sub").mkdir()
    assert mode(tmp_path / "a.json") == file_mode
    assert mode(tmp_path / "b.bin") == file_mode
    assert mode(tmp_path / "art") == dir_mode
    assert mode(tmp_path / "art" / "sub") == dir_mode
    assert mode(tmp_path / "art" / "sid_map.json") == file_mode
    # the same with a directory replaced in place (overwrite=True)
    with umask(mask), atomic_dir(tmp_path / "art", overwrite=True) as tmp:
        (tmp / "sid_map.json").write_text("{}")
    assert mode(tmp_path / "art") == dir_mode


WRITER = textwrap.dedent(
    """
    import sys, time
    from recllm.io import atomic_dir, atomic_path

    dest, kind = sys.argv[1], sys.argv[2]
    with (atomic_dir(dest) if kind == "dir" else atomic_path(dest)) as tmp:
        if kind == "dir":
            (tmp / "sid_map.json").write_text("half")
        else:
            tmp.write_text("half")
        print(tmp, flush=True)
        time.sleep(600)  # killed here, in the middle of the write
    """
)


@contextmanager
def writer(dest: Path, kind: str) -> Iterator[tuple[subprocess.Popen, Path]]:
    """A real process inside ``atomic_dir`` / ``atomic_path`` for ``dest``, and its temp path."""
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(dest), kind], stdout=subprocess.PIPE, text=True
    )
    try:
        line = proc.stdout.readline().strip()
        assert line, "the writer died before it started writing"
        yield proc, Path(line)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
        proc.stdout.close()


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("kind", ["dir", "file"])
def test_temp_of_a_killed_writer_is_removed_by_the_next_write(tmp_path, kind):
    dest = tmp_path / ("sids" if kind == "dir" else "emb.npz")
    with writer(dest, kind) as (proc, tmp):
        assert tmp.exists() and tmp.parent == tmp_path
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    assert tmp.exists() and not dest.exists()  # what `kill -9` leaves behind
    if kind == "dir":
        with atomic_dir(dest) as new:
            (new / "sid_map.json").write_text("whole")
        assert (dest / "sid_map.json").read_text() == "whole"
    else:
        with atomic_path(dest) as new:
            new.write_text("whole")
        assert dest.read_text() == "whole"
    assert not tmp.exists()
    assert hidden(tmp_path) == []


def test_temp_of_a_live_writer_survives(tmp_path):
    dest = tmp_path / "sids"
    with writer(dest, "dir") as (proc, tmp):
        with atomic_dir(tmp_path / "sids", overwrite=True) as new:
            (new / "sid_map.json").write_text("mine")
        assert clean_stale_temps(dest) == []
        assert proc.poll() is None  # still writing, and its work is untouched
        assert (tmp / "sid_map.json").read_text() == "half"
    assert (dest / "sid_map.json").read_text() == "mine"


def test_only_our_own_temp_names_are_touched(tmp_path):
    dest = tmp_path / "sids"
    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    gone = int(ended.stdout)  # a pid that has just ended (not reused within this test, in practice)
    stale = tmp_path / f".sids.{_HOST}-{gone}.0a1b2c3d.tmp"
    stale.mkdir()
    others = [
        ".sids.abcdef12.tmp",  # the mkstemp-style name of older versions: no pid to check
        f".sids.ffffffff-{gone}.0a1b2c3d.tmp",  # another host's writer
        f".other.{_HOST}-{gone}.0a1b2c3d.tmp",  # another destination
        f".sids.{_HOST}-{gone}.0a1b2c3d.bak",  # not a temp suffix of ours
        "sids.tmp",
    ]
    for name in others:
        (tmp_path / name).mkdir()
    assert clean_stale_temps(dest) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(others)
