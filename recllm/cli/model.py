"""``recllm model convert``: a GGUF checkpoint -> a verified plain Hugging Face directory."""

from __future__ import annotations

import argparse
from typing import Any


def cmd_model_convert(args: argparse.Namespace) -> int:
    from recllm.models.gguf import main

    argv = ["--gguf", args.gguf, "--out", args.out, "--dtype", args.dtype]
    return main(argv + ["--overwrite"] * args.overwrite, prog="recllm model convert")


def add_parsers(sub: Any) -> None:
    """``recllm model convert``."""
    mdl = sub.add_parser("model", help="base models: convert a GGUF checkpoint")
    msub = mdl.add_subparsers(dest="model_command", required=True)
    conv = msub.add_parser(
        "convert", help="GGUF -> verified plain Hugging Face directory (recllm.models.gguf)"
    )
    conv.add_argument(
        "--gguf",
        default="SmolLM2-135M-Instruct-gguf",
        help="known GGUF model name, .gguf file, or a directory holding one",
    )
    conv.add_argument("--out", required=True, help="output directory")
    conv.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    conv.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    conv.set_defaults(func=cmd_model_convert)
