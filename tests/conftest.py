"""Shared fixtures: tiny in-process tokenizer and models, plus optional real files from ../shared.

Everything here is hermetic: nothing is downloaded. Real Qwen3 tokenizer files and prepared data
sets are used only when a ``shared/`` folder sits next to the checkout (or ``RECLLM_SHARED_DIR``
points to one); tests that need them are skipped otherwise.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator, Mapping

# Before anything imports huggingface_hub: an accidental download must fail loudly, not hang.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path

import pytest
import torch
from transformers import (
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    Qwen3ForCausalLM,
    Qwen3MoeForCausalLM,
)

from recllm import testing

#: ``RECLLM_NETWORK=1`` runs ``network`` tests without probing (they fail if PyPI is down),
#: ``0`` skips them; unset, one probe of the package index decides.
NETWORK_ENV = "RECLLM_NETWORK"
PROBE_URL = "https://pypi.org/simple/pip/"
PROBE_TIMEOUT_S = 3.0


def network_skip_reason(env: Mapping[str, str] | None = None) -> str | None:
    """Why ``network`` tests must be skipped, or None to run them.

    Called once per session (the collection hook). The probe is one HEAD request to PyPI with a
    short timeout, through the same proxy settings pip uses (the ``*_proxy`` variables), so an
    offline machine skips in about a second instead of failing every test after pip's retries.
    """
    env = os.environ if env is None else env
    forced = env.get(NETWORK_ENV, "").strip()
    if forced == "0":
        return f"network tests disabled ({NETWORK_ENV}=0)"
    if forced == "1":
        return None
    if forced:
        return f"{NETWORK_ENV}={forced!r} is not 0 or 1; network tests skipped"
    import urllib.error
    import urllib.request

    request = urllib.request.Request(PROBE_URL, method="HEAD")
    # a fresh opener reads the *_proxy variables now; urlopen's module-level opener keeps the
    # proxies of its first call in this process
    opener = urllib.request.build_opener()
    try:
        with opener.open(request, timeout=PROBE_TIMEOUT_S):
            return None
    except (OSError, urllib.error.URLError) as err:  # refused, DNS, timeout, proxy, TLS
        return (
            f"PyPI is unreachable ({PROBE_URL}: {err}); network tests skipped. "
            f"Set {NETWORK_ENV}=1 to run them anyway"
        )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``vllm`` tests without vLLM, ``gpu`` tests without CUDA and ``network`` tests offline."""
    # find_spec, not import: importing vLLM costs ~10 s and rebinds torch threads. An installed but
    # broken vLLM therefore fails its tests instead of being skipped, which is what we want.
    has_vllm = importlib.util.find_spec("vllm") is not None
    has_cuda = torch.cuda.is_available()
    skip_vllm = pytest.mark.skip(reason="vLLM is not installed (pip install 'recllm[vllm]')")
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    # Probe only when a selected test needs the network: a plain unit-test run stays offline.
    offline = None
    if any("network" in item.keywords for item in items):
        offline = network_skip_reason()
    for item in items:
        if "vllm" in item.keywords and not has_vllm:
            item.add_marker(skip_vllm)
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)
        if "network" in item.keywords and offline is not None:
            item.add_marker(pytest.mark.skip(reason=offline))


@pytest.fixture
def torch_single_thread() -> Iterator[None]:
    """Run the test with one intra-op torch thread, restoring the previous count afterwards.

    Tiny models are all overhead: on 2 cores a 20-step SFT run took 0.7 s with one thread and
    3.5-34 s with two (OpenMP spin-waits, worst when another process competes for the cores).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """The 512-token ChatML BPE of :func:`recllm.testing.build_tiny_tokenizer`.

    Shared by the whole session: tests that add tokens must build their own.
    """
    return testing.build_tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_qwen3(tiny_tokenizer: PreTrainedTokenizerFast) -> Qwen3ForCausalLM:
    """A random two-layer dense Qwen3 sized to ``tiny_tokenizer`` (seed 0).

    Shared by the whole session: tests that train or resize it must build their own with
    :func:`recllm.testing.build_tiny_qwen3`.
    """
    return testing.build_tiny_qwen3(tiny_tokenizer)


@pytest.fixture(scope="session")
def tiny_qwen3_moe(tiny_tokenizer: PreTrainedTokenizerFast) -> Qwen3MoeForCausalLM:
    """A random two-layer Qwen3-MoE (4 experts, 2 per token) sized to ``tiny_tokenizer``.

    Shared by the whole session; do not train it in place.
    """
    return testing.build_tiny_qwen3(tiny_tokenizer, moe=True)


@pytest.fixture(scope="session")
def qwen3_tokenizer() -> PreTrainedTokenizerBase:
    """The real Qwen3 tokenizer from ``<shared>/tokenizers/qwen3``; skips when absent."""
    tokenizer = testing.load_qwen3_tokenizer()
    if tokenizer is None:
        pytest.skip(
            "real Qwen3 tokenizer not found: needs <shared>/tokenizers/qwen3, where <shared> is "
            "$RECLLM_SHARED_DIR or the shared/ folder next to the repository checkout"
        )
    return tokenizer


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``<shared>/data`` with the prepared data sets; skips when absent."""
    path = testing.shared_data_dir()
    if path is None:
        pytest.skip(
            "shared data not found: needs <shared>/data, where <shared> is $RECLLM_SHARED_DIR or "
            "the shared/ folder next to the repository checkout"
        )
    return path


@pytest.fixture(scope="session")
def shared_data_or_none() -> Path | None:
    """``<shared>/data`` when present, else None (for tests that only compare against it)."""
    return testing.shared_data_dir()
