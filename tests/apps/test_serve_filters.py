"""``POST /v1/recommend`` with item filters (issue 32): ``exclude``, ``allow`` and
``exclude_history`` act inside the constraint; unknown ids get 422 naming the field and the id.
The router runs on a real tiny recommender on transformers (the vLLM engine is tested in
tests/test_vllm_filters.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from recllm.apps.recommender import Recommender
from recllm.apps.serve import recommend_router
from recllm.testing import save_tiny_recommender

pytestmark = pytest.mark.usefixtures("torch_single_thread")


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    path: Path = save_tiny_recommender(tmp_path_factory.mktemp("serve") / "tiny", seed=0)
    app = FastAPI()
    app.include_router(recommend_router(Recommender.from_pretrained(path, engine="hf", max_k=60)))
    return TestClient(app)


def _items(client: TestClient, **body) -> list[str]:
    r = client.post("/v1/recommend", json=body)
    assert r.status_code == 200, r.text
    return [i["item_id"] for i in r.json()["items"]]


def test_filters_exclude_allow_and_history(client: TestClient):
    history = ["item3", "item7"]
    everything = _items(client, history=history, k=60)
    top = _items(client, history=history, k=5)[:3]  # the control: without the filter
    got = _items(client, history=history, k=5, exclude=top)
    assert len(got) == 5 and not set(got) & set(top)
    seen = everything[:4]
    control = _items(client, history=seen, k=12)
    assert set(control) & set(seen)
    unseen = _items(client, history=seen, k=12, exclude_history=True)
    assert len(unseen) == 12 and not set(unseen) & set(seen)
    allow = ["item1", "item9", "item40"]
    assert sorted(_items(client, history=history, k=3, allow=allow)) == sorted(allow)


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"exclude": ["item1", "ghost"]}, 422, "exclude: unknown item id 'ghost'"),
        ({"allow": ["zz"]}, 422, "allow: unknown item id 'zz'"),
        ({"allow": ["item2"], "exclude": ["item2"]}, 422, "leave no catalog item"),
        ({"exclude": "item1"}, 400, "exclude: must be a list of item ids"),
        ({"exclude_history": "yes"}, 400, "exclude_history: must be true or false"),
        ({"excluded": ["item1"]}, 400, "unknown fields ['excluded']"),
    ],
)
def test_bad_filters(client: TestClient, body, status, message):
    r = client.post("/v1/recommend", json={"history": ["item3"], "k": 3, **body})
    assert r.status_code == status, r.text
    assert message in r.json()["error"]["message"]
    assert "Fix:" in r.json()["error"]["message"]
