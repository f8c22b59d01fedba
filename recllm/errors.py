"""The one error contract of recllm: bad input is answered with ``WHERE: WHAT. Fix: HOW``.

Every layer (data loaders, SID artifacts, model directories, recipe configs, the CLI, the
server) raises :class:`UserError` (or a subclass such as :class:`recllm.data.DataError`) for
input a user can fix. The CLI and the recipes print it as one line, ``recllm: error: ...``,
and exit non-zero (a traceback only with ``-v``); the server answers it with HTTP 400.
Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations

import os


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
