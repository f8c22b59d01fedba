"""Request limits of ``recllm serve`` (issue 15) on a plain FastAPI app: no vLLM needed.

tests/test_vllm_serve.py checks the same answers on the live server.
"""

from __future__ import annotations

import json
import socket

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from recllm.apps.serve import RequestLimits, check_serve_target, json_too_deep
from recllm.errors import UserError
from recllm.testing import save_tiny_recommender


@pytest.mark.parametrize(
    ("body", "deep"),
    [
        (b"[" * 100_000, True),
        (b"[" * 65 + b"]" * 65, True),
        (b"[" * 64 + b"]" * 64, False),
        (b'{"a": [' + b"[]," * 10_000 + b"[]]}", False),  # many brackets, depth 3
        (json.dumps({"text": "[" * 10_000}).encode(), False),  # brackets inside a string
        (json.dumps({"t": '\\"' + "{" * 100}).encode(), False),  # escaped quote in the string
        (b"", False),
    ],
)
def test_json_too_deep(body: bytes, deep: bool):
    assert json_too_deep(body, 64) is deep


@pytest.fixture
def client() -> TestClient:
    app = FastAPI()

    @app.post("/echo")
    async def echo(request: Request) -> dict:
        return {"bytes": len(await request.body())}

    app.add_middleware(RequestLimits, max_bytes=1000)
    return TestClient(app)


def test_request_limits(client: TestClient):
    ok = client.post("/echo", content=b"x" * 1000)
    assert ok.status_code == 200 and ok.json() == {"bytes": 1000}
    big = client.post("/echo", content=b"x" * 1001)
    assert big.status_code == 413
    assert big.json()["error"] == {
        "message": "request body: 1001 bytes, over this server's limit of 1000 bytes. Fix: send "
        "a smaller request (fewer or shorter history items, a shorter prompt), or start the "
        "server with a larger --max-request-bytes N",
        "type": "RequestEntityTooLargeError",
        "code": 413,
    }
    chunked = client.post("/echo", content=iter([b"x" * 600, b"x" * 600]))  # no Content-Length
    assert chunked.status_code == 413
    assert chunked.json()["error"]["message"].startswith("request body: larger, over this")
    deep = client.post("/echo", content=b"[" * 900)
    assert deep.status_code == 400
    assert deep.json()["error"]["message"].startswith(
        "request body: JSON nested more than 64 levels deep. Fix: "
    )


def test_class_defaults_serve_the_middleware_hook():
    """vLLM's --middleware hook builds the class with the app only: limits from the class."""
    app = FastAPI()
    previous = RequestLimits.default_max_bytes
    RequestLimits.default_max_bytes = 10
    try:
        assert RequestLimits(app).max_bytes == 10
        assert RequestLimits(app, max_bytes=20).max_bytes == 20
    finally:
        RequestLimits.default_max_bytes = previous


def test_check_serve_target(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UserError) as err:
            check_serve_target(tmp_path, port=port)
    assert str(err.value).startswith(
        f"--port {port}: cannot listen on 127.0.0.1:{port} (Address already in use). Fix: "
    )
    with pytest.raises(UserError, match="--port 70000: cannot listen"):
        check_serve_target(tmp_path, port=70000)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    with pytest.raises(UserError, match="no such directory"):
        check_serve_target(tmp_path / "nope", port=free)
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match="is a file, not a model directory"):
        check_serve_target(tmp_path / "f", port=free)
    model = save_tiny_recommender(tmp_path / "tiny")
    check_serve_target(model, port=free)


def test_serve_target_without_weights_is_one_message_naming_the_file(tmp_path):
    """``recllm serve`` of a model directory without weights used to print 3 vLLM tracebacks
    after about 30 s: the check runs before vLLM and names the missing file and the fix."""
    model = save_tiny_recommender(tmp_path / "tiny")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    check_serve_target(model, port=free)  # control: the complete directory passes
    (model / "model.safetensors").unlink()
    with pytest.raises(UserError) as err:
        check_serve_target(model, port=free)
    assert str(err.value) == (
        f"{model}: incomplete model directory: the model weights model.safetensors missing. "
        "Fix: restore the files saved together by save_model_with_sids (copy the whole "
        "directory), or train and save the model again"
    )
    (model / "sid_map.json").unlink()
    with pytest.raises(UserError, match=r"model.safetensors; sid_map.json missing\. Fix: "):
        check_serve_target(model, port=free)
