"""The one error contract of recllm: bad input is answered with ``WHERE: WHAT. Fix: HOW``.

Every layer (data loaders, SID artifacts, model directories, recipe configs, the CLI, the
server) raises :class:`UserError` (or a subclass such as :class:`recllm.data.DataError`) for
input a user can fix. The CLI and the recipes print it as one line, ``recllm: error: ...``,
and exit non-zero (a traceback only with ``-v``); the server answers it with HTTP 400.
Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


class UserError(ValueError):
    """Input a user can fix: says where, what is wrong and how to fix it.

    Args:
        where: The file, directory, flag, config key or request field at fault (a file may
            carry ``:LINE``).
        problem: What is wrong, without a trailing period.
        fix: What the user should do about it.
    """

    def __init__(self, where: str | os.PathLike[str], problem: str, fix: str) -> None:
        self.where = str(where)
        self.problem = problem
        self.fix = fix
        super().__init__(f"{self.where}: {problem}. Fix: {fix}")


@contextlib.contextmanager
def user_errors(prog: str) -> Iterator[None]:
    """Turn a :class:`UserError` escaping the block into one line on stderr and exit code 2.

    For scripts and recipes (``with user_errors("plum_sft"): main()``). Under a multi-process
    launcher only rank 0 prints, so a bad flag reads as one line, not one per process. Set
    ``RECLLM_TRACEBACK=1`` to get the traceback instead.
    """
    try:
        yield
    except UserError as e:
        if os.environ.get("RECLLM_TRACEBACK", "") not in ("", "0"):
            raise
        if os.environ.get("RANK", "0") == "0":
            print(f"{prog}: error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def clip(value: object, limit: int = 60) -> str:
    """``repr(value)`` cut to about ``limit`` characters, for echoing user input in a message.

    An error that quotes what the user sent (an unknown item id, a request field) must stay
    short whatever was sent: a 5 MB id is shown as its start, its length and its end.
    """
    text = repr(value)
    if len(text) <= limit:
        return text
    keep = max(limit // 2 - 8, 4)
    return f"{text[:keep]}...({len(text)} chars)...{text[-8:]}"
