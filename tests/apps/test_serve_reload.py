"""A served recommender takes a new catalog without a restart (issue 31 item 3): the admin
route's token, the swap under concurrent requests (none fails; requests after it can return the
new items; before it, none ever does), and a failed reload that leaves the old catalog serving.
The transformers engine here; the vLLM engine (catalog-only reload) in the slow test at the end.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from recllm.testing import save_tiny_recommender

pytestmark = pytest.mark.usefixtures("torch_single_thread")

TOKEN = "s3cret-token"
NEW = [f"new{i}" for i in range(10)]


def add_items(model_dir: Path, out: Path, new_ids: list[str]) -> Path:
    """``model_dir`` with ``new_ids`` (titles ``fresh ID``) added on unused codes by
    :func:`recllm.vocab.catalog_add.add_items_to_model` (what ``recllm catalog add`` writes)."""
    from recllm.data.types import Catalog
    from recllm.sid.sidmap import SIDMap
    from recllm.vocab.catalog_add import CatalogAddition, add_items_to_model

    sid_map = SIDMap.load(model_dir / "sid_map.json")
    used = {tuple(c) for c in sid_map.codes.tolist()}
    free = [c for c in np.ndindex(*sid_map.codebook_sizes) if c not in used][: len(new_ids)]
    codes = np.concatenate([sid_map.codes, np.array(free, dtype=np.int64)])
    bigger = SIDMap([*sid_map.item_ids, *new_ids], codes, sid_map.codebook_sizes)
    catalog = Catalog({i: {"title": f"fresh {i}"} for i in new_ids}, ("title",))
    return add_items_to_model(model_dir, CatalogAddition(bigger, new_ids), catalog, out)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("reload")
    old = save_tiny_recommender(root / "tiny", seed=0)
    return old, add_items(old, root / "added", NEW)


def make_app(model_dir: Path, token: str | None):
    from fastapi import FastAPI

    from recllm.apps.recommender import Recommender
    from recllm.apps.serve import recommend_router
    from recllm.apps.serve_reload import CatalogReloader, ServedRecommender, admin_router

    served = ServedRecommender(Recommender.from_pretrained(model_dir, engine="hf", max_k=80))
    reloader = CatalogReloader(served, model_dir, engine="hf", max_k=80)
    app = FastAPI()
    app.include_router(recommend_router(served))
    if token:
        app.include_router(admin_router(reloader, token))
    return app, served


def test_admin_route_needs_the_token_and_is_absent_without_one(dirs):
    from fastapi.testclient import TestClient

    old, added = dirs
    app, served = make_app(old, TOKEN)
    with TestClient(app) as client:
        body = {"model_dir": str(added)}
        assert client.post("/v1/admin/reload", json=body).status_code == 401
        wrong = {"Authorization": "Bearer s3cret-tokem"}
        r = client.post("/v1/admin/reload", json=body, headers=wrong)
        assert r.status_code == 401 and "admin token" in r.json()["error"]["message"]
        assert len(served.current.sid_map) == 60  # nothing swapped
    app, served = make_app(old, None)
    with TestClient(app) as client:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert client.post("/v1/admin/reload", json=body, headers=auth).status_code == 404
    assert len(served.current.sid_map) == 60


def test_failed_reload_keeps_the_old_catalog(dirs, tmp_path):
    from fastapi.testclient import TestClient

    old, _ = dirs
    app, served = make_app(old, TOKEN)
    before = served.current
    auth = {"Authorization": f"Bearer {TOKEN}"}
    broken = tmp_path / "broken"
    broken.mkdir()
    with TestClient(app) as client:
        r = client.post("/v1/admin/reload", json={"model_dir": str(broken)}, headers=auth)
        assert r.status_code == 400, r.text
        assert "Fix" in r.json()["error"]["message"]
        r = client.post("/v1/admin/reload", json={"model_dir": 3}, headers=auth)
        assert r.status_code == 400
        assert served.current is before
        ok = client.post("/v1/recommend", json={"history": ["item1"], "k": 5})
        assert ok.status_code == 200 and len(ok.json()["items"]) == 5


def test_reload_under_concurrent_requests(dirs):
    """Clients hit /v1/recommend with k = catalog size while the catalog is swapped: every
    request answers 200; answers that started before the swap hold only old items (60 of them),
    and after the swap the new items come back (k = 70)."""
    from fastapi.testclient import TestClient

    old, added = dirs
    app, served = make_app(old, TOKEN)
    # (generation when sent, sent, answered, status, item ids)
    results: list[tuple[int, float, float, int, set[str]]] = []
    lock = threading.Lock()
    stop = threading.Event()

    with TestClient(app) as client:
        # control: the stale catalog never returns a new item, even with k = all items
        r = client.post("/v1/recommend", json={"history": ["item3", "item7"], "k": 60})
        assert r.status_code == 200
        assert {i["item_id"] for i in r.json()["items"]} == {f"item{i}" for i in range(60)}

        def hit(n: int) -> None:
            while not stop.is_set():
                gen, sent = served.generation, time.perf_counter()
                k = 60 if gen == 0 else 70  # 70 only once the swap is done
                r = client.post("/v1/recommend", json={"history": [f"item{n}"], "k": k})
                ids = {i["item_id"] for i in r.json().get("items", [])}
                with lock:
                    results.append((gen, sent, time.perf_counter(), r.status_code, ids))

        threads = [threading.Thread(target=hit, args=(n,)) for n in range(3)]
        for t in threads:
            t.start()
        while len(results) < 3:  # requests answered before the reload starts
            time.sleep(0.01)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        reload_sent = time.perf_counter()
        r = client.post("/v1/admin/reload", json={"model_dir": str(added)}, headers=auth)
        assert r.status_code == 200, r.text
        assert r.json()["items"] == 70 and r.json()["previous_items"] == 60
        # let every client finish at least one request on the new catalog
        while sum(1 for row in results if row[0] == 1) < 3:
            time.sleep(0.01)
        stop.set()
        for t in threads:
            t.join()

    assert results and all(row[3] == 200 for row in results)  # none failed during the swap
    before = [ids for _, _, done, _, ids in results if done < reload_sent]
    after = [ids for g, _, _, _, ids in results if g == 1]
    assert len(before) >= 3 and len(after) >= 3
    assert all(ids == {f"item{i}" for i in range(60)} for ids in before)  # the stale catalog
    assert all(set(NEW) <= ids and len(ids) == 70 for ids in after)
    assert served.current.model_dir == added
    r = TestClient(app).post("/v1/recommend", json={"history": ["new0", "item1"], "k": 70})
    titles = {i["item_id"]: i["title"] for i in r.json()["items"]}  # the added items' titles
    assert r.status_code == 200 and all(titles[i] == f"fresh {i}" for i in NEW)


def test_vllm_reload_refuses_other_weights(dirs, tmp_path):
    """The vLLM engine reloads catalogs only: another model's weights are refused with the fix
    (checked before any engine call, so no engine runs here)."""
    from recllm.apps.recommender import Recommender
    from recllm.apps.serve_reload import CatalogReloader, ServedRecommender
    from recllm.errors import UserError

    old, _ = dirs
    other = save_tiny_recommender(tmp_path / "other", seed=1)
    rec = Recommender.from_pretrained(old, engine="hf")
    served = ServedRecommender(rec)
    reloader = CatalogReloader(served, old, engine="vllm")
    with pytest.raises(UserError, match="weights differ") as e:
        asyncio.run(reloader.reload(other))
    assert "restart the server" in str(e.value) and "model.safetensors" in str(e.value)
    assert served.current is rec  # the old catalog keeps serving
    # control: the same weight files pass the check (it then loads the catalog)
    reloader._check_same_weights(old)


def test_sighup_reloads_the_start_directory(dirs):
    from recllm.apps.recommender import Recommender
    from recllm.apps.serve_reload import CatalogReloader, ServedRecommender, install_sighup

    old, _ = dirs
    first = Recommender.from_pretrained(old, engine="hf")
    served = ServedRecommender(first)

    async def run() -> None:
        install_sighup(CatalogReloader(served, old, engine="hf"), asyncio.get_running_loop())
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(500):
            if served.generation:
                return
            await asyncio.sleep(0.01)

    asyncio.run(run())
    assert served.generation == 1 and served.current is not first
    assert served.current.sid_map.content_hash == first.sid_map.content_hash
