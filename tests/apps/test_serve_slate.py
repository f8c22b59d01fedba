"""``POST /v1/recommend`` with ``"mode": "slate"``: one slate of k distinct items, equal to
Recommender.recommend_slate, filters inside it, clear 400 / 422 errors; on a vLLM-engine
recommender a sampled slate gets a 400 saying sampling is HF-only (vLLM slates:
tests/test_vllm_slate.py). The router runs on a real tiny HF recommender."""

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
def served(tmp_path_factory: pytest.TempPathFactory) -> tuple[TestClient, Recommender]:
    path: Path = save_tiny_recommender(tmp_path_factory.mktemp("serve") / "tiny", seed=0)
    rec = Recommender.from_pretrained(path, engine="hf", max_k=60)
    app = FastAPI()
    app.include_router(recommend_router(rec))
    return TestClient(app), rec


def _slate(client: TestClient, **body) -> dict:
    r = client.post("/v1/recommend", json={"mode": "slate", **body})
    assert r.status_code == 200, r.text
    return r.json()


def test_slate_mode_answers_one_slate(served):
    client, rec = served
    history = ["item3", "item7"]
    got = _slate(client, history=history, k=5)
    ids = [i["item_id"] for i in got["items"]]
    assert got["object"] == "slate" and len(set(ids)) == 5
    assert [i["rank"] for i in got["items"]] == [1, 2, 3, 4, 5]
    want = rec.recommend_slate(history, n=5)
    assert ids == [r.item_id for r in want.items]
    assert got["score"] == pytest.approx(want.score)
    assert got["score"] == pytest.approx(sum(i["score"] for i in got["items"]), abs=1e-3)
    greedy = _slate(client, history=history, k=5, decoding="greedy")
    assert len({i["item_id"] for i in greedy["items"]}) == 5
    a = _slate(client, history=history, k=4, decoding="sample", seed=7)
    assert a == _slate(client, history=history, k=4, decoding="sample", seed=7)
    seen = ids[:3]
    control = [i["item_id"] for i in _slate(client, history=seen, k=6)["items"]]
    unseen = [
        i["item_id"] for i in _slate(client, history=seen, k=6, exclude_history=True)["items"]
    ]
    assert set(control) & set(seen) and not set(unseen) & set(seen)
    ranked = client.post("/v1/recommend", json={"history": history, "k": 3}).json()
    assert ranked["object"] == "recommendation"  # the default mode is unchanged
    spread = [i["item_id"] for i in _slate(client, history=history, k=4, spread=True)["items"]]
    assert spread == [r.item_id for r in rec.recommend_slate(history, n=4, spread=True).items]
    assert len({rec.sid_map.code(i)[0] for i in spread}) == 4
    soft = _slate(client, history=history, k=4, diversity_penalty=1e4)
    assert [i["item_id"] for i in soft["items"]] == spread  # a huge penalty: the spread slate
    want = rec.recommend_slate(history, n=4, diversity_penalty=0.5)
    got = _slate(client, history=history, k=4, diversity_penalty=0.5)
    assert [i["item_id"] for i in got["items"]] == [r.item_id for r in want.items]
    assert got["score"] == pytest.approx(want.score)


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"mode": "list"}, 400, 'mode: must be "rank" or "slate"'),
        ({"mode": "slate", "decoding": "topk"}, 400, "decoding: must be one of"),
        ({"mode": "slate", "seed": "x"}, 400, "seed: must be an integer"),
        ({"decoding": "greedy"}, 400, 'decoding: applies to "mode": "slate" only'),
        ({"spread": True}, 400, 'spread: applies to "mode": "slate" only'),
        ({"mode": "slate", "spread": "yes"}, 400, "spread: must be true or false"),
        ({"diversity_penalty": 1}, 400, 'diversity_penalty: applies to "mode": "slate" only'),
        ({"mode": "slate", "diversity_penalty": -1}, 400, "diversity_penalty: must be a number"),
        ({"mode": "slate", "diversity_penalty": "x"}, 400, "diversity_penalty: must be a number"),
        ({"mode": "slate", "exclude": ["ghost"]}, 422, "exclude: unknown item id 'ghost'"),
        (
            {"mode": "slate", "allow": ["item1", "item2"]},
            422,
            "leave 2 items for history 0, fewer than the slate's 3",
        ),
    ],
)
def test_slate_errors(served, body, status, message):
    client, _ = served
    r = client.post("/v1/recommend", json={"history": ["item3"], "k": 3, **body})
    assert r.status_code == status, r.text
    assert message in r.json()["error"]["message"]
    assert "Fix:" in r.json()["error"]["message"]


def test_sampled_slate_on_a_vllm_recommender_is_refused_with_the_fix(served):
    _, rec = served
    on_vllm = Recommender(
        rec.model_dir, rec.tokenizer, rec.sid_map, rec.spec, rec.catalog, engine="vllm"
    )
    app = FastAPI()
    app.include_router(recommend_router(on_vllm))
    body = {"history": ["item3"], "k": 3, "mode": "slate", "decoding": "sample"}
    r = TestClient(app).post("/v1/recommend", json=body)
    assert r.status_code == 400
    assert "decoding: sampled slates run on the transformers engine only" in r.text
