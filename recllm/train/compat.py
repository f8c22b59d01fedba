"""Version guards of the patches recllm applies to private TRL and PEFT code.

recllm patches two private spots (:mod:`recllm.train.fast_head`, :mod:`recllm.train.lora`).
Each patch checks the attribute it needs before applying itself and falls back loudly without
it; in addition, :func:`warn_if_untested` logs one warning per library when the installed
version lies outside the versions the patch was tested with, so a user on a newer release
knows where to look first when something breaks.
"""

from __future__ import annotations

import importlib.metadata
import logging

logger = logging.getLogger(__name__)

#: Versions each patch was run with (library -> specifier the tests passed on).
TESTED_VERSIONS: dict[str, str] = {
    "trl": ">=1.16,<1.17",  # 1.16.0
    "peft": ">=0.21,<0.22",  # 0.21.2
}

_warned: set[str] = set()


def installed_version(package: str) -> str | None:
    """The installed distribution version of ``package``, or None when it is not installed."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def warn_if_untested(package: str, patch: str) -> bool:
    """Log once (per library) a warning when ``package`` is outside :data:`TESTED_VERSIONS`.

    Args:
        package: ``"trl"`` or ``"peft"``.
        patch: What recllm patches there, named in the warning.

    Returns:
        Whether the installed version is a tested one.
    """
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    tested = TESTED_VERSIONS[package]
    version = installed_version(package)
    try:
        ok = version is not None and Version(version) in SpecifierSet(tested)
    except InvalidVersion:
        ok = False
    if not ok and package not in _warned:
        _warned.add(package)
        logger.warning(
            "%s %s is not a version recllm's %s was tested with (%s %s); the patch checks the "
            "attributes it needs and falls back when they are missing, but if training fails "
            "or looks wrong, install a tested version (README, 'Tested versions')",
            package,
            version,
            patch,
            package,
            tested,
        )
    return ok
