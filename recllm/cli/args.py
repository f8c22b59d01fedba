"""Shared argparse pieces of the ``recllm`` command: value types, ``--flag`` with ``--flag_name``
aliases, the data flags, and the decoding options every decoding command shares
(:func:`add_decoding_args`, :func:`decode_options`).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from recllm.errors import UserError

if TYPE_CHECKING:
    from recllm.decode import DecodeOptions


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


# -- the decoding options ---------------------------------------------------------------------

#: What each ``--engine`` choice decodes with, for the flag's help.
ENGINE_HELP = {
    "sid_beam": "recllm's SID beam search",
    "generate": "transformers generate + SID processor",
    "hf": "transformers",
    "vllm": "the same beam search on vLLM (the [vllm] extra)",
}
#: ``--k`` of a command: the cut-offs an evaluation reports, the picks of one answer, or the
#: largest k a server accepts (``--max-k``).
KKind = Literal["cutoffs", "picks", "max"]


def add_decoding_args(
    parser: argparse.ArgumentParser,
    *,
    engines: Sequence[str] = (),
    engine: str | None = None,
    k: KKind | None = None,
    k_default: int | str | None = None,
    beams: int | None = None,
    batch_size: int | None = None,
    constraint: bool = False,
) -> argparse._ArgumentGroup:
    """The group of decoding options (``decoding:`` in ``--help``), defined once for eval, chat,
    playground and serve. Each command passes the options it has and its own defaults (an
    evaluation beams 20 over K 5,10; a chat answers 5 picks); an option left out is not added.
    The per-request item filters of issue 32 (``--exclude-history``) join this group.

    Args:
        parser: The command's parser.
        engines: ``--engine`` choices (keys of :data:`ENGINE_HELP`); empty: no ``--engine``.
        engine: The default engine (one of ``engines``).
        k: Kind of ``--k`` (see :data:`KKind`; ``"max"`` adds ``--max-k``); None: no k flag.
        k_default: Its default ("5,10" for cut-offs, an integer otherwise).
        beams: Default ``--beams``; None: no ``--beams``.
        batch_size: Default ``--batch-size`` (users per decoding batch); None: no flag.
        constraint: Add ``--no-constraint`` (decode without the SID trie).

    Returns:
        The argument group, for a command's own decoding flags (``--think``).
    """
    group = parser.add_argument_group("decoding")
    if engines:
        names = [ENGINE_HELP[e] + (" (default)" if e == engine else "") for e in engines]
        help_ = ", ".join(names[:-1]) + ("," if len(names) > 2 else "") + " or " + names[-1]
        group.add_argument("--engine", choices=tuple(engines), default=engine, help=help_)
    if beams is not None:
        group.add_argument(
            "--beams",
            type=_positive,
            default=beams,
            help="beam width (>= the largest K)" if k == "cutoffs" else "beam width",
        )
    if k == "cutoffs":
        help_ = f"comma-separated cut-offs (default {k_default})"
        group.add_argument("--k", type=_ks, default=k_default, help=help_)
    elif k == "picks":
        group.add_argument("--k", type=_positive, default=k_default, help="picks per answer")
    elif k == "max":
        _flag(group, "max_k", type=_positive, default=k_default, help="largest k /v1/recommend accepts")  # fmt: skip
    if batch_size is not None:
        _flag(group, "batch_size", type=_positive, default=batch_size, help="users per decoding batch")  # fmt: skip
    if constraint:
        group.add_argument(
            "--no-constraint",
            action="store_true",
            help="decode without the SID trie (plain beam search over the whole vocabulary): "
            "the invalid rate then counts answers that are malformed or name no catalog item, "
            "the control for the constrained run's 0 (output: MODEL/eval_SPLIT_unconstrained)",
        )
    return group


def decode_options(args: argparse.Namespace, **changes) -> DecodeOptions:
    """The :class:`recllm.decode.DecodeOptions` of a command's parsed decoding options.

    ``--k`` gives ``k`` (the largest cut-off of an evaluation), ``--beams`` the beam width,
    ``--batch-size`` the batch, ``--no-constraint`` an unconstrained decode (transformers
    ``generate``). ``--engine`` names a backend: ``hf`` and ``vllm`` run recllm's SID beam search
    (``engine="sid_beam"``), on transformers or vLLM. ``changes`` override fields.

    Raises:
        UserError: The combination cannot decode (``DecodeOptions`` names the field and the fix).
    """
    from recllm.decode import DecodeOptions

    fields: dict[str, object] = {}
    k = getattr(args, "k", None)
    if k is not None:
        fields["k"] = max(k) if isinstance(k, list) else k
    if getattr(args, "beams", None) is not None:
        fields["num_beams"] = args.beams
    if getattr(args, "batch_size", None) is not None:
        fields["batch_size"] = args.batch_size
    engine = getattr(args, "engine", None)
    if engine is not None:
        fields["engine"] = "generate" if engine == "generate" else "sid_beam"
    if getattr(args, "no_constraint", False):
        fields.update(constrained=False, engine="generate")
    return DecodeOptions(**{**fields, **changes})
