"""``recllm serve``: vLLM's OpenAI-compatible server with SID spans constrained, plus ``/v1/recommend``.

The server is vLLM's own (its argument parser, engine client, FastAPI app and uvicorn launcher,
:mod:`vllm.entrypoints.launchers`) started with:

- ``--logits-processors recllm.decode.vllm_processor:SIDVLLMLogitsProcessor`` and
  ``--additional-config {"recllm": {"model_dir": DIR}}``: every SID span a chat or completion
  request generates is a catalog SID (per request: ``"vllm_xargs": {"recllm_sid": false}`` turns
  it off, ``{"recllm_sid_only": true}`` makes the answer exactly one SID);
- ``--logprobs-mode processed_logits``: reported logprobs are full-vocabulary log-probs of the
  allowed tokens;
- prefix caching on with 32-token blocks, so the beam rounds of ``/v1/recommend`` reuse the
  prompt's KV blocks (vLLM's CPU default of 128-token blocks recomputes far more per beam).

``POST /v1/recommend`` with ``{"history": [item ids, oldest first], "k": 10}`` answers
``{"items": [{"rank", "item_id", "title", "score"}, ...]}`` (constrained SID beam search with
``k`` beams, :func:`recllm.decode.vllm_beam.async_vllm_sid_beam_search`, the prompt built as in
training and evaluation by :class:`recllm.apps.recommender.Recommender`). Bad requests get HTTP
400 with ``{"error": {"message": ...}}`` saying what to fix.
"""

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["SERVE_DEFAULTS", "recommend_router", "serve", "vllm_serve_args"]

logger = logging.getLogger(__name__)

#: vLLM server flags recllm sets; flags the caller passes after ``--`` override them.
SERVE_DEFAULTS = (
    "--enforce-eager",
    "--enable-prefix-caching",
    "--block-size",
    "32",
    # a /v1/recommend call is num_beams requests per beam round: room for many callers per step
    "--max-num-seqs",
    "1024",
    "--max-num-batched-tokens",
    "16384",
)


def vllm_serve_args(
    model_dir: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    dtype: str = "float32",
    max_k: int = 50,
    extra: Sequence[str] = (),
):
    """vLLM's parsed server arguments for ``model_dir`` with the SID processor installed.

    Args:
        extra: More ``vllm serve`` flags (``--max-model-len 2048``, ``--api-key ...``).
    """
    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    from recllm.decode.vllm_processor import CONFIG_KEY, SIDVLLMLogitsProcessor

    processor = f"{SIDVLLMLogitsProcessor.__module__}:{SIDVLLMLogitsProcessor.__qualname__}"
    argv = [
        "--model",
        str(model_dir),
        "--host",
        host,
        "--port",
        str(port),
        "--dtype",
        dtype,
        "--max-logprobs",
        str(max(max_k, 20)),
        "--logprobs-mode",
        "processed_logits",
        "--logits-processors",
        processor,
        "--additional-config",
        json.dumps({CONFIG_KEY: {"model_dir": str(model_dir)}}),
        "--seed",
        "0",
    ]
    # Defaults first: vLLM's parser keeps the last value of a flag given twice.
    argv += [*SERVE_DEFAULTS, *extra]
    parser = make_arg_parser(FlexibleArgumentParser(prog="recllm serve (vLLM arguments)"))
    args = parser.parse_args(argv)
    validate_parsed_serve_args(args)
    return args


# No ``from __future__ import annotations`` here: FastAPI reads the endpoint's annotations
# (``request: Request``) at definition time, and Request is imported lazily.


def recommend_router(recommender: Any):
    """A FastAPI router with ``POST /v1/recommend`` answering from ``recommender``.

    Args:
        recommender: A :class:`recllm.apps.recommender.Recommender` whose backend is the
            server's async engine client.
    """
    from fastapi import APIRouter, Request
    from fastapi.responses import JSONResponse

    router = APIRouter()

    def error(message: str, status: int = 400) -> JSONResponse:
        body = {"error": {"message": message, "type": "BadRequestError", "code": status}}
        return JSONResponse(body, status_code=status)

    @router.post("/v1/recommend")
    async def recommend(request: Request) -> JSONResponse:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            return error(
                f"the request body is not valid JSON ({e}); Fix: send "
                '{"history": ["item id", ...], "k": 10} with Content-Type: application/json'
            )
        if not isinstance(body, dict) or "history" not in body:
            return error(
                'the body must be a JSON object with a "history" list; Fix: send '
                '{"history": ["item id", ...], "k": 10}'
            )
        unknown = set(body) - {"history", "k"}
        if unknown:
            return error(f"unknown fields {sorted(unknown)}; Fix: send only history and k")
        k = body.get("k", 10)
        try:
            recs = await recommender.arecommend_batch([body["history"]], k)
        except ValueError as e:
            return error(str(e))
        items = [
            {"rank": n + 1, "item_id": r.item_id, "title": r.title, "score": r.score}
            for n, r in enumerate(recs[0])
        ]
        return JSONResponse({"object": "recommendation", "k": k, "items": items})

    return router


async def serve(args, *, data: str | None = None, max_k: int = 50) -> None:
    """Run vLLM's OpenAI-compatible server (``args`` from :func:`vllm_serve_args`) with
    ``/v1/recommend`` mounted on its app; returns when the server shuts down.

    Mirrors ``vllm.entrypoints.launchers.api_server.entry.run_server``, adding one router to
    the app vLLM builds.
    """
    import vllm.envs as envs
    from vllm.entrypoints.launchers.api_server.app_state import init_app_state
    from vllm.entrypoints.launchers.api_server.entry import build_async_engine_client
    from vllm.entrypoints.launchers.app import build_app
    from vllm.entrypoints.launchers.launcher import serve_http, setup_server
    from vllm.entrypoints.launchers.utils.server_utils import get_uvicorn_log_config

    from recllm.apps.recommender import Recommender

    listen_address, sock = setup_server(args, reuse_port=False)
    uvicorn_kwargs: dict[str, Any] = {}
    log_config = get_uvicorn_log_config(args)
    if log_config is not None:
        uvicorn_kwargs["log_config"] = log_config
    async with build_async_engine_client(args) as engine_client:
        supported_tasks = await engine_client.get_supported_tasks()
        app = build_app(args, supported_tasks, engine_client.model_config)
        await init_app_state(engine_client, app.state, args, supported_tasks)
        recommender = Recommender.from_pretrained(
            args.model, engine="vllm", data=data, max_k=max_k, backend=engine_client
        )
        app.include_router(recommend_router(recommender))
        logger.info("recllm serve: %s (POST %s/v1/recommend)", args.model, listen_address)
        shutdown_task = await serve_http(
            app,
            sock=sock,
            enable_ssl_refresh=args.enable_ssl_refresh,
            host=args.host,
            port=args.port,
            log_level=args.uvicorn_log_level,
            access_log=not args.disable_uvicorn_access_log,
            timeout_keep_alive=envs.VLLM_HTTP_TIMEOUT_KEEP_ALIVE,
            ssl_keyfile=args.ssl_keyfile,
            ssl_certfile=args.ssl_certfile,
            ssl_ca_certs=args.ssl_ca_certs,
            ssl_cert_reqs=args.ssl_cert_reqs,
            ssl_ciphers=args.ssl_ciphers,
            h11_max_incomplete_event_size=args.h11_max_incomplete_event_size,
            h11_max_header_count=args.h11_max_header_count,
            **uvicorn_kwargs,
        )
    try:
        await shutdown_task
    finally:
        sock.close()
