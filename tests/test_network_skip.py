"""``network`` tests skip offline with a reason, instead of failing; RECLLM_NETWORK forces either
way. The offline machine is simulated with a proxy that refuses every connection."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import NETWORK_ENV, network_skip_reason

ROOT = Path(__file__).resolve().parents[1]
DEAD_PROXY = "http://127.0.0.1:9"  # the discard port: nothing listens, connections are refused
# A network test that would fetch a wheel from PyPI if it ran (it must not, here).
NETWORK_TEST = "tests/test_cli.py::test_fetch_ml100k_from_pypi_and_use_by_name"


def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, DEAD_PROXY)
    for var in ("no_proxy", "NO_PROXY", NETWORK_ENV):
        monkeypatch.delenv(var, raising=False)


def test_probe_reports_unreachable_pypi(monkeypatch):
    offline(monkeypatch)
    reason = network_skip_reason()
    assert reason is not None and reason.startswith("PyPI is unreachable (https://pypi.org/")
    assert f"Set {NETWORK_ENV}=1 to run them anyway" in reason


def test_env_forces_either_way(monkeypatch):
    offline(monkeypatch)
    assert network_skip_reason({NETWORK_ENV: "1"}) is None  # no probe: runs (and fails) offline
    assert network_skip_reason({NETWORK_ENV: "0"}) == f"network tests disabled ({NETWORK_ENV}=0)"
    assert "is not 0 or 1" in network_skip_reason({NETWORK_ENV: "yes"})


def test_network_test_is_skipped_offline():
    """The real collection hook, in a child pytest (one run: it imports torch, ~30 s here)."""
    env = {**os.environ, "https_proxy": DEAD_PROXY, "HTTPS_PROXY": DEAD_PROXY}
    env.pop("no_proxy", None)
    env.pop("NO_PROXY", None)
    env.pop(NETWORK_ENV, None)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", NETWORK_TEST, "-q", "-rs", "-p", "no:cacheprovider"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "1 skipped" in proc.stdout and "failed" not in proc.stdout
    assert "PyPI is unreachable" in proc.stdout
