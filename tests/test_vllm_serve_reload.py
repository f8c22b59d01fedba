"""`recllm serve --admin-token` on vLLM: a catalog-only reload under concurrent requests (issue 31
item 3). The engine runs in its own process, so the new SID map reaches its logits processor
through the worker extension; requests that started on the old map keep it (recllm_catalog).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from recllm.apps.serve_reload import weight_hashes
from recllm.testing import save_tiny_recommender
from tests.apps.test_serve_reload import NEW, add_items
from tests.serving import served

pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.usefixtures("torch_single_thread")]

TOKEN = "vllm-admin-token"


def _post(url: str, body: dict, token: str | None = None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=300) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def test_vllm_catalog_reload_under_load(tmp_path: Path):
    old = save_tiny_recommender(tmp_path / "tiny", seed=0)
    added = add_items(old, tmp_path / "added", NEW)
    assert weight_hashes(added) == weight_hashes(old)  # catalog add copied them byte for byte
    other = save_tiny_recommender(tmp_path / "other", seed=1)
    log = tmp_path / "serve.log"
    with served(old, log, 512, args=["--max-k", "70", "--admin-token", TOKEN]) as base:
        url = base + "/v1/recommend"
        status, answer = _post(url, {"history": ["item3"], "k": 60})
        assert status == 200, answer
        assert {i["item_id"] for i in answer["items"]} == {f"item{i}" for i in range(60)}
        # 401 without / with a wrong token; weights of another model refused, old one serving
        reload = base + "/v1/admin/reload"
        assert _post(reload, {"model_dir": str(added)})[0] == 401
        assert _post(reload, {"model_dir": str(added)}, "wrong")[0] == 401
        status, answer = _post(reload, {"model_dir": str(other)}, TOKEN)
        assert status == 400 and "weights differ" in answer["error"]["message"], answer
        assert _post(url, {"history": ["item3"], "k": 60})[0] == 200

        results: list[tuple[float, float, int, int, set[str]]] = []
        lock, stop, swapped = threading.Lock(), threading.Event(), threading.Event()

        def hit(n: int) -> None:
            while not stop.is_set():
                k = 70 if swapped.is_set() else 60
                sent = time.perf_counter()
                status, answer = _post(url, {"history": [f"item{n}"], "k": k})
                ids = {i["item_id"] for i in answer.get("items", [])}
                with lock:
                    results.append((sent, time.perf_counter(), k, status, ids))

        threads = [threading.Thread(target=hit, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        while len(results) < 4:
            time.sleep(0.05)
        reload_sent = time.perf_counter()
        status, answer = _post(reload, {"model_dir": str(added)}, TOKEN)
        assert status == 200, answer
        assert answer["items"] == 70 and answer["previous_items"] == 60
        swapped.set()
        while sum(1 for row in results if row[2] == 70) < 4:
            time.sleep(0.05)
        stop.set()
        for t in threads:
            t.join()

    assert all(row[3] == 200 for row in results), [r for r in results if r[3] != 200][:3]
    before = [ids for _, done, _, _, ids in results if done < reload_sent]
    after = [ids for _, _, k, _, ids in results if k == 70]
    assert len(before) >= 4 and len(after) >= 4
    assert all(ids == {f"item{i}" for i in range(60)} for ids in before)
    assert all(set(NEW) <= ids and len(ids) == 70 for ids in after)
    # requests in flight during the swap finished on a whole catalog (old or new)
    during = [ids for sent, done, k, _, ids in results if k == 60 and done >= reload_sent]
    assert all(len(ids) == 60 for ids in during)
