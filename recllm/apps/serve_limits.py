"""Request limits of ``recllm serve`` on every route: bounded bodies (413) and JSON nesting (400),
both answered with recllm's ``{"error": {"message": "WHERE: WHAT. Fix: HOW"}}`` before any
endpoint runs (:class:`RequestLimits`, an ASGI middleware; :func:`json_too_deep`)."""

import json
import logging
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from recllm.errors import UserError

__all__ = [
    "DEFAULT_MAX_REQUEST_BYTES",
    "MAX_JSON_DEPTH",
    "RequestLimits",
    "content_length",
    "error_body",
    "json_too_deep",
    "too_deep",
    "too_large",
]

logger = logging.getLogger(__name__)

#: Largest request body ``recllm serve`` reads by default (``--max-request-bytes``): a long chat
#: prompt is a few hundred kB; more is a mistake or an attack.
DEFAULT_MAX_REQUEST_BYTES = 1 << 20
#: Deepest JSON nesting accepted. OpenAI-style requests nest under 10 levels; Python's JSON
#: parser raises RecursionError (a 500) near 1,000.
MAX_JSON_DEPTH = 64
# A body over the limit is still read (and dropped) up to this size, so that a client that
# sends it all before reading the response gets the 413 instead of a reset connection.
_DRAIN_BYTES = 64 << 20


# JSON strings (escapes included), so brackets inside them are not counted as nesting.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")
_BRACKET_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


def json_too_deep(body: bytes, max_depth: int = MAX_JSON_DEPTH) -> bool:
    """Whether the JSON text ``body`` nests arrays/objects deeper than ``max_depth``.

    Runs in C-speed passes (byte counts, two regexes, a numpy cumulative sum), so a 1 MiB body
    costs milliseconds; most bodies stop at the first count. Invalid JSON may be misjudged,
    which only changes which 400 it gets.
    """
    if body.count(b"[") + body.count(b"{") <= max_depth:
        return False
    import numpy as np

    brackets = _NOT_BRACKET.sub(b"", _JSON_STRING.sub(b"", body))
    steps = np.frombuffer(brackets.translate(_BRACKET_STEPS), dtype=np.int8)
    return bool(steps.size) and int(np.cumsum(steps, dtype=np.int64).max()) > max_depth


def error_body(error: UserError | str, status: int) -> dict[str, Any]:
    kind = {413: "RequestEntityTooLargeError", 500: "InternalServerError"}.get(
        status, "BadRequestError"
    )
    return {"error": {"message": str(error), "type": kind, "code": status}}


def too_large(limit: int, declared: int | None) -> UserError:
    size = f"{declared} bytes" if declared is not None else "larger"
    return UserError(
        "request body",
        f"{size}, over this server's limit of {limit} bytes",
        "send a smaller request (fewer or shorter history items, a shorter prompt), or start "
        "the server with a larger --max-request-bytes N",
    )


def too_deep(max_depth: int) -> UserError:
    return UserError(
        "request body",
        f"JSON nested more than {max_depth} levels deep",
        'send a flat JSON object such as {"history": ["item id", ...], "k": 10}',
    )


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class RequestLimits:
    """ASGI middleware: bounded request bodies and JSON nesting on every route of the app.

    A body over ``max_bytes`` gets 413, JSON nested deeper than ``max_depth`` gets 400, both
    with recllm's ``{"error": {"message": "WHERE: WHAT. Fix: HOW"}}``, before any endpoint runs.
    Other bodies are read once (at most ``max_bytes``) and handed on unchanged.

    :func:`recllm.apps.serve.serve` installs it through vLLM's public ``--middleware`` hook,
    which builds the class with the app alone, so the limits it leaves out come from the class
    attributes :attr:`default_max_bytes` / :attr:`default_max_depth` (one server per process).
    Elsewhere: ``app.add_middleware(RequestLimits, max_bytes=N)``.
    """

    #: Limits used when the constructor is not given them (set by recllm.apps.serve.serve).
    default_max_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    default_max_depth: int = MAX_JSON_DEPTH

    def __init__(
        self,
        app: Callable[[Scope, Receive, Send], Awaitable[None]],
        *,
        max_bytes: int | None = None,
        max_depth: int | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = self.default_max_bytes if max_bytes is None else max_bytes
        self.max_depth = self.default_max_depth if max_depth is None else max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = content_length(scope)
        over = declared is not None and declared > self.max_bytes
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            over = over or size > self.max_bytes
            if not over:
                chunks.append(chunk)
            if not message.get("more_body", False) or size > _DRAIN_BYTES:
                break
        if over:
            logger.info("413 for a request body of %s bytes", declared or f">{self.max_bytes}")
            await _send_json(send, 413, error_body(too_large(self.max_bytes, declared), 413))
            return
        body = b"".join(chunks)
        if json_too_deep(body, self.max_depth):
            await _send_json(send, 400, error_body(too_deep(self.max_depth), 400))
            return
        replayed = False

        async def replay() -> MutableMapping[str, Any]:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: wait for the disconnect
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the HTTP server rejects a malformed length itself
    return None


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})
