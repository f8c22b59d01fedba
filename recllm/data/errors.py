"""The one error type the data layer raises for bad input."""

from __future__ import annotations

import os

from recllm.errors import UserError


class DataError(UserError):
    """Bad input data: says where (file plus line, or file plus key) and how to fix it.

    The message reads ``FILE:LINE: problem. Fix: what to do`` (or ``FILE [key K]: ...``), so a
    user can jump to the place with an editor and knows the next step without reading code.

    Attributes:
        path: The file (or directory) at fault.
        line: 1-based line number, when the format has lines.
        key: JSON key, column name or record id, when the format has no useful line.
        problem: What is wrong.
        fix: What the user should do about it.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        problem: str,
        fix: str,
        *,
        line: int | None = None,
        key: str | None = None,
    ) -> None:
        self.path = str(path)
        self.problem = problem
        self.fix = fix
        self.line = line
        self.key = key
        where = self.path
        if line is not None:
            where += f":{line}"
        if key is not None:
            where += f" [key {key!r}]"
        super().__init__(where, problem, fix)
