"""Tables and charts of benchmark reports: markdown tables, grouped-bar PNGs.

Fixed-width tables of evaluation rows and horizontal bar charts live in
:mod:`recllm.eval.report` (``metrics_table``, ``bar_chart``); this module adds what the
benchmark scripts print or draw beside them. Every PNG is written atomically.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["grouped_bars", "markdown_row", "markdown_table", "save_png"]


def _cell(value: Any) -> str:
    return "-" if value is None else str(value).replace("|", "\\|").replace("\n", " ")


def markdown_row(cells: Sequence[Any]) -> str:
    """One line of a markdown table (None -> ``-``; a ``|`` inside a cell escaped)."""
    return "| " + " | ".join(map(_cell, cells)) + " |"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table: the header, the ``---`` rule, one line per row (None -> ``-``;
    a ``|`` inside a cell is escaped).

    Raises:
        ValueError: A row has another number of cells than the header.
    """
    for n, row in enumerate(rows):
        if len(row) != len(header):
            raise ValueError(f"row {n} has {len(row)} cells, the header {len(header)}")
    lines = [markdown_row(header), "|" + "---|" * len(header)]
    lines += [markdown_row(row) for row in rows]
    return "\n".join(lines)


def save_png(fig: Any, path: str | os.PathLike[str], dpi: int = 110) -> Path:
    """Write a matplotlib figure to ``path`` as PNG (atomically) and close it."""
    import matplotlib.pyplot as plt

    from recllm.io import atomic_path

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return out


def grouped_bars(
    series: Mapping[str, Sequence[float]],
    groups: Sequence[str],
    path: str | os.PathLike[str],
    *,
    title: str = "",
    ylabel: str = "",
    ylim: tuple[float, float] | None = None,
) -> Path:
    """One group of bars per entry of ``groups``, one bar per series in each (a PNG).

    Raises:
        ValueError: A series has another number of values than there are groups.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for name, values in series.items():
        if len(values) != len(groups):
            raise ValueError(f"series {name!r} has {len(values)} values for {len(groups)} groups")
    many = len(series) > 6  # the legend goes beside the axes, and each bar its own colour
    fig, ax = plt.subplots(figsize=(11 if many else 7, 4))
    colours = plt.get_cmap("tab20" if len(series) > 10 else "tab10").colors
    width = 0.8 / max(1, len(series))
    for n, (name, values) in enumerate(series.items()):
        xs = [g + n * width for g in range(len(groups))]
        ax.bar(xs, values, width, label=name, color=colours[n % len(colours)])
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))])
    ax.set_xticklabels(groups)
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    if many:
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    else:
        ax.legend(fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    return save_png(fig, path, dpi=120)
