"""How ``POST /v1/recommend`` answers (issue 29, item 7), without vLLM: a bad request gets 400
with the house message (``... Fix: ...``), a fault of the server on a valid request gets 500 and
a log line, never a 400; and the R samples of a thinking request are all read from vLLM's
stream, however it splits them.

The router runs on a real tiny recommender whose async methods run the transformers decoders
in this process (the API server hands them vLLM's engine client instead). The live server is
tested in tests/apps/test_serve_vllm_faults.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from recllm.apps.recommender import Recommender
from recllm.apps.serve import recommend_router
from recllm.testing import save_tiny_recommender

pytestmark = pytest.mark.usefixtures("torch_single_thread")


class LocalRecommender(Recommender):
    """The async API of the server on the transformers engine (same answers, no vLLM)."""

    fault: Exception | None = None

    async def arecommend_batch(self, histories, k=10, *, num_beams=None):
        if self.fault is not None:
            raise self.fault
        return self.recommend_batch(histories, k, num_beams=num_beams)

    async def arecommend_thinking(self, histories, k=10, *, num_beams=None, options=None):
        if self.fault is not None:
            raise self.fault
        return self.recommend_thinking(histories, k, num_beams=num_beams, options=options)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_recommender(tmp_path_factory.mktemp("serve") / "tiny")


def _client(model_dir: Path) -> tuple[TestClient, LocalRecommender]:
    rec = LocalRecommender.from_pretrained(model_dir, engine="hf", max_k=20)
    app = FastAPI()
    app.include_router(recommend_router(rec))
    return TestClient(app), rec


@pytest.fixture(scope="module")
def served(model_dir: Path) -> tuple[TestClient, LocalRecommender]:
    return _client(model_dir)


def test_valid_request_is_answered(served):
    client, rec = served
    got = client.post("/v1/recommend", json={"history": ["item1", "item2"], "k": 4})
    assert got.status_code == 200, got.json()
    want = rec.recommend(["item1", "item2"], 4)
    assert [i["item_id"] for i in got.json()["items"]] == [r.item_id for r in want]


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", 'must be a JSON object with a "history" list'),
        ({"k": 3}, 'must be a JSON object with a "history" list'),
        ({"history": ["item1"], "beams": 3}, "unknown fields ['beams']"),
        ({"history": ["item1"], "think": "yes"}, "think: must be true or false"),
        ({"history": ["item1"], "rationales": 0}, "rationales: must be an integer from 1 to 8"),
        ({"history": ["item1"], "rationales": 9}, "rationales: must be an integer from 1 to 8"),
        ({"history": ["item1"], "rationales": True}, "rationales: must be an integer"),
        ({"history": ["item1"], "k": 0}, "k=0 is out of range"),
        ({"history": ["item1"], "k": 21}, "k=21 is out of range"),
        ({"history": ["item1"], "k": "5"}, "k must be an integer between 1 and 20"),
        ({"history": "item1"}, "history must be a list of item ids"),
        ({"history": [["item1"]]}, "item ids are strings"),
        ({"history": []}, "history is empty"),
        ({"history": ["item1", "nope"]}, "unknown item ids ['nope']"),
        ({"history": ["item1"], "think": True}, "this model was not trained to think"),
        (b'{"history": ' + b"[" * 80 + b"]" * 80 + b"}", "JSON nested more than 64"),
    ],
)
def test_every_bad_request_is_400_with_the_fix(served, body, where):
    client, _ = served
    if isinstance(body, bytes):
        got = client.post("/v1/recommend", content=body)
    else:
        got = client.post("/v1/recommend", json=body)
    assert got.status_code == 400, got.json()
    message = got.json()["error"]["message"]
    assert where in message
    assert "Fix: " in message, message


def test_a_server_fault_on_a_valid_request_is_500_never_400(model_dir: Path, caplog):
    """The fault of issue 29: an internal ValueError (``zip() argument 2 is shorter than
    argument 1``) in the thinking path was answered 400, as if the request were wrong."""
    client, rec = _client(model_dir)
    rec.fault = ValueError("zip() argument 2 is shorter than argument 1")
    body = {"history": ["item1", "item2"], "k": 4}
    with caplog.at_level(logging.ERROR, logger="recllm.apps.serve"):
        got = client.post("/v1/recommend", json=body)
    assert got.status_code == 500, got.json()
    error = got.json()["error"]
    assert error["type"] == "InternalServerError" and error["code"] == 500
    assert "ValueError: 'zip() argument 2 is shorter" in error["message"]
    assert "the request was valid" in error["message"]
    # the server log has the traceback
    [record] = [r for r in caplog.records if r.name == "recllm.apps.serve"]
    assert record.exc_info is not None and record.exc_info[0] is ValueError
    # control: the same server answers a bad request 400, and a fixed fault goes away
    assert client.post("/v1/recommend", json={**body, "k": 0}).status_code == 400
    rec.fault = None
    assert client.post("/v1/recommend", json=body).status_code == 200


def test_thinking_request_returns_its_rationales(model_dir: Path, tmp_path: Path):
    thinker = tmp_path / "think"
    import shutil

    shutil.copytree(model_dir, thinker)
    record = json.loads((thinker / "recllm_vocab.json").read_text())
    record["recommender"]["think"] = {"task": "reason_rec"}
    (thinker / "recllm_vocab.json").write_text(json.dumps(record))
    client, _ = _client(thinker)
    body = {"history": ["item1"], "k": 3, "think": True, "rationales": 3}
    got = client.post("/v1/recommend", json=body)
    assert got.status_code == 200, got.json()
    assert len(got.json()["rationales"]) == 3 and len(got.json()["items"]) == 3


def test_collect_completions_reads_every_sample_of_a_streamed_request():
    """vLLM streams a request for n samples as messages holding only the samples that moved
    (``ParentRequest.get_outputs``): reading only the last message, as the server did, gave
    fewer rationales than asked and the zip() error."""
    vllm_outputs = pytest.importorskip("vllm.outputs", reason="vLLM's output types")
    from recllm.decode.vllm_beam import collect_completions

    def completion(index: int, text: str, done: bool):
        return vllm_outputs.CompletionOutput(
            index=index,
            text=text,
            token_ids=[0] * len(text),
            cumulative_logprob=None,
            logprobs=None,
            finish_reason="stop" if done else None,
        )

    def message(*completions):
        return vllm_outputs.RequestOutput("r", None, [1], None, list(completions), False)

    # four samples: 0 and 2 finish early, 1 and 3 grow and finish last, in separate messages
    stream = [
        message(completion(0, "a", False), completion(1, "b", False)),
        message(completion(0, "a0", True), completion(2, "c", False)),
        message(completion(2, "c2", True), completion(3, "d", False)),
        message(completion(1, "b1", True)),
        message(completion(3, "d3", True)),
    ]

    async def aiter(messages):
        for m in messages:
            yield m

    # control: the last message alone holds one of the four samples (the old reading)
    assert [c.index for c in stream[-1].outputs] == [3]
    got = asyncio.run(collect_completions(aiter(stream), 4))
    assert [c.text for c in got] == ["a0", "b1", "c2", "d3"]
    with pytest.raises(RuntimeError, match=r"samples \[0, 1, 2\] of a request for 4"):
        asyncio.run(collect_completions(aiter(stream[:2]), 4))
