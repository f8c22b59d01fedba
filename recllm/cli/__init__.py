"""The ``recllm`` console script.

recllm quickstart                      # the main job on the embedded default (ml-100k)
recllm model convert --out DIR         # SmolLM2-135M-Instruct GGUF -> plain HF directory
recllm data fetch ml-100k              # download the embedded default into the cache
recllm data stats PATH_OR_NAME         # users, items, interactions, history lengths
recllm data split PATH_OR_NAME --out DIR
recllm recommend --model DIR --history 50,172 --slate 5   # a slate of 5 distinct items

Bad input (a missing file, a bad flag value, a corrupt artifact) is answered with one line,
``recllm: error: WHERE: WHAT. Fix: HOW``, and exit code 2; ``-v`` shows the traceback instead.

One module per command group adds its subcommands (``add_parsers``) and holds their functions:
:mod:`~recllm.cli.quickstart`, :mod:`~recllm.cli.eval`, :mod:`~recllm.cli.serve`,
:mod:`~recllm.cli.model`, :mod:`~recllm.cli.data`, :mod:`~recllm.cli.sid`,
:mod:`~recllm.cli.reason` (``reason generate``, ``dialogue generate``, and ``think-ahead`` from
:mod:`~recllm.cli.think`), :mod:`~recllm.cli.recommend` (``recommend``: the top k or a
slate) and :mod:`~recllm.cli.apps` (``chat``, ``playground``); the argparse pieces
they share, the decoding options among them, are in :mod:`~recllm.cli.args`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from recllm import __version__
from recllm.errors import UserError

__all__ = ["build_parser", "main"]

logger = logging.getLogger("recllm")


class _Parser(argparse.ArgumentParser):
    """argparse that keeps the error contract: a bad flag or value is one line and exit 2.

    argparse would print the whole usage block first; the line names the flag, what is wrong
    and where the flags are listed, which is all a typo needs.
    """

    def error(self, message: str) -> NoReturn:
        if message.startswith("argument "):
            # "argument --batch-size/--batch_size: expected ..." -> "--batch-size", "expected ..."
            names, _, what = message[len("argument ") :].partition(": ")
            where = names.split("/")[0]
        else:
            where, what = self.prog, message
        self.exit(2, f"recllm: error: {where}: {what}. Fix: see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``recllm`` parser: each command group adds its own subcommands, in the help's order."""
    from recllm.cli import apps, catalog, data, model, quickstart, reason, recommend, serve, sid
    from recllm.cli import eval as evaluation

    parser = _Parser(
        prog="recllm", description="Turn a pretrained LLM into a generative recommender."
    )
    parser.add_argument("--version", action="version", version=f"recllm {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="debug logging; errors with their traceback"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    groups = (quickstart, evaluation, serve, model, data, sid, catalog, reason, recommend, apps)
    for group in groups:
        group.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``recllm`` console script; returns the exit code.

    Bad input ends as one line on stderr, ``recllm: error: WHERE: WHAT. Fix: HOW``, and exit
    code 2; with ``-v`` (or ``RECLLM_TRACEBACK=1``) the exception is raised with its traceback.
    Exceptions that are not about input (bugs) always keep their traceback.
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # third-party chatter at INFO (faiss reports which CPU build it loaded) is not ours to show
    for name in ("faiss", "faiss.loader", "httpx", "sentence_transformers"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        return args.func(args)
    except (UserError, OSError, KeyError, ValueError, RuntimeError) as e:
        if args.verbose or os.environ.get("RECLLM_TRACEBACK", "") not in ("", "0"):
            raise
        line = _one_line(e)
        if "Fix:" not in line:  # a library message without one: the contract still holds
            line = (
                f"{line.rstrip('.')}. Fix: check the flags and files it names (`recllm "
                f"{args.command} --help`); -v shows where it failed"
            )
        print(f"recllm: error: {line}", file=sys.stderr)
        return 2


def _one_line(e: BaseException) -> str:
    """The message of an input error as one line.

    :class:`UserError` carries ``WHERE: WHAT. Fix: HOW``; older messages raised as ValueError,
    KeyError or RuntimeError carry their own ``Fix:``; an OSError from a path the user gave
    names the path and the system's reason.
    """
    if isinstance(e, UserError):
        text = str(e)
    elif isinstance(e, OSError) and e.filename is not None:
        reason = (e.strerror or type(e).__name__).lower()
        text = f"{e.filename}: {reason}. Fix: check the path (and its permissions)"
    elif isinstance(e, KeyError) and e.args:
        text = str(e.args[0])
    else:
        text = str(e) or type(e).__name__
    return " ".join(text.split())
