"""Shared argparse pieces of the ``recllm`` command: value types, the data flags, ``--flag`` with
``--flag_name`` aliases. Kept apart so :mod:`recllm.cli` and :mod:`recllm.cli_reason` share them
without importing each other.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

from recllm.errors import UserError


def _int_at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``low`` (counts: beams, users, steps, batch sizes)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected an integer >= {low}, got {text!r}"
            ) from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


_positive = _int_at_least(1)
_non_negative = _int_at_least(0)


def _fraction(low: float, high: float, *, high_open: bool = True) -> Callable[[str], float]:
    """An argparse type: a float in ``[low, high)`` (or ``[low, high]``)."""

    def parse(text: str) -> float:
        bound = ")" if high_open else "]"
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        inside = low <= value < high if high_open else low <= value <= high
        if not inside:  # nan is never inside
            raise argparse.ArgumentTypeError(
                f"expected a number in [{low:g}, {high:g}{bound}, got {text!r}"
            )
        return value

    parse.__name__ = "number"
    return parse


def _ks(text: str) -> list[int]:
    """An argparse type: comma-separated cut-offs, each >= 1, sorted and deduplicated."""
    try:
        ks = sorted({int(k) for k in text.split(",") if k.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 5,10, got {text!r}"
        ) from None
    if not ks or ks[0] < 1:
        raise argparse.ArgumentTypeError(
            f"cut-offs must be integers >= 1 (e.g. 5,10), got {text!r}"
        )
    return ks


def _check_out_file(path: str | os.PathLike[str], flag: str = "--out") -> None:
    """Before any work: ``path`` can be written as a file (not a directory, parent not a file)."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{flag} {p}", "an existing directory", "give a file path, e.g. x.npz")
    parent = next((q for q in p.parents if q.exists()), None)
    if parent is not None and not parent.is_dir():
        raise UserError(
            f"{flag} {p}",
            f"{parent} is a file, so nothing can be written below it",
            "choose a path under a directory",
        )


def _flag(parser: argparse.ArgumentParser, name: str, **kwargs) -> None:
    """Add ``--some-flag`` with ``--some_flag`` as an alias (recipes use underscores)."""
    dashed = "--" + name.replace("_", "-")
    names = [dashed] if "-" not in name and "_" not in name else [dashed, "--" + name]
    parser.add_argument(*names, dest=name, **kwargs)


def _add_data_args(p: argparse.ArgumentParser, positional: bool = True) -> None:
    from recllm.data.config import FORMATS, SPLITS

    help_ = "dataset directory or file, or a dataset name (ml-100k)"
    if positional:
        p.add_argument("data", help=help_)
    else:
        p.add_argument("--data", default="ml-100k", help=help_ + " (default: ml-100k)")
    _flag(p, "format", choices=FORMATS, default=None, help="force a loader (default: auto-detect)")
    _flag(p, "items_file", default=None, help="item-text file (P5) or items table (generic)")
    _flag(p, "user_col", default="user_id", help="user id column (generic, RecBole)")
    _flag(p, "item_col", default="item_id", help="item id column (generic, RecBole)")
    _flag(p, "time_col", default="timestamp", help="timestamp column; 'none' to ignore")
    _flag(p, "text_fields", default=None, help="comma-separated item text fields, title first")
    _flag(
        p,
        "min_interactions",
        type=_non_negative,
        default=3,
        help="drop users with fewer interactions",
    )
    _flag(p, "split", choices=SPLITS, default="loo", help="leave-one-out or global temporal")
    _flag(
        p,
        "max_history",
        type=_non_negative,
        default=20,
        help="keep the last N history items (0 = all)",
    )


def _data_config(args: argparse.Namespace):
    from recllm.data.config import DataConfig

    time_col = None if str(args.time_col).lower() in ("none", "null", "") else args.time_col
    return DataConfig(
        data_path=args.data,
        data_format=args.format,
        items_file=args.items_file,
        user_col=args.user_col,
        item_col=args.item_col,
        time_col=time_col,
        text_fields=args.text_fields.split(",") if args.text_fields else None,
        min_interactions=args.min_interactions,
        split=args.split,
        max_history=args.max_history or None,
    )
