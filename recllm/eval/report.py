"""Tables and bar charts of evaluation rows, for benchmark scripts and reports.

A *row* is a name and a dict of figures (``recall@10``, ``ndcg@10``, ``invalid_rate``...), as
:func:`recllm.eval.run.evaluate_recommender` returns them. :func:`metrics_table` prints rows as a
fixed-width table, :func:`bar_chart` draws chosen figures as horizontal bars (PNG, written
atomically) and :func:`target_ranks` keeps each user's rank of the target, the input of
:func:`recllm.eval.metrics.paired_difference`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Column", "Panel", "bar_chart", "metrics_table", "target_ranks"]

#: The ranking figures every table starts with.
RANKING = ("recall@5", "ndcg@5", "recall@10", "ndcg@10")


@dataclass(frozen=True)
class Column:
    """One extra table column: its header, and how a row's figures make its cell."""

    header: str
    cell: Callable[[Mapping[str, Any]], Any]
    fmt: str = ".3f"


@dataclass(frozen=True)
class Panel:
    """One chart panel: the figure it draws, its title, a log axis or not."""

    key: str
    title: str
    log: bool = False


def target_ranks(targets: Sequence[str], ranked: Sequence[Sequence[str]]) -> list[int]:
    """Per user, the 1-based rank of the target in the ranked items, 0 when absent."""
    return [
        items.index(t) + 1 if t in items else 0 for t, items in zip(targets, ranked, strict=True)
    ]


def metrics_table(
    rows: Mapping[str, Mapping[str, Any]],
    columns: Sequence[str] = RANKING,
    extra: Sequence[Column] = (),
) -> str:
    """Rows as a fixed-width table: ``columns`` (4 decimals) then the ``extra`` columns; a
    missing figure is ``-``."""
    width = max(30, *(len(n) + 2 for n in rows))
    head = f"{'':<{width}}" + "".join(
        f"{c.replace('recall', 'R').replace('ndcg', 'N'):>8}" for c in columns
    )
    lines = [head + "".join(f"{c.header:>9}" for c in extra)]
    for name, fig in rows.items():
        cells = "".join(
            f"{'-' if fig.get(c) is None else format(fig[c], '.4f'):>8}" for c in columns
        )
        for c in extra:
            value = c.cell(fig)
            cells += f"{'-' if value is None else format(value, c.fmt):>9}"
        lines.append(f"{name:<{width}}" + cells)
    return "\n".join(lines)


def bar_chart(
    rows: Mapping[str, Mapping[str, Any]],
    panels: Sequence[Panel],
    path: str | Path,
    title: str,
    *,
    grey: Callable[[str], bool] = lambda name: False,
    references: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """One horizontal bar per row in each panel, values annotated, written to ``path`` (PNG).

    Args:
        grey: Rows drawn grey (a start model, a baseline) rather than blue.
        references: Named rows drawn as dashed vertical lines instead of bars (a reference
            model of another kind, e.g. SASRec).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from recllm.io import atomic_path

    names = list(rows)
    fig, axes = plt.subplots(
        1, len(panels), figsize=(4.7 * len(panels), 0.45 * len(names) + 2.2), sharey=True
    )
    axes = [axes] if len(panels) == 1 else list(axes)
    for ax, panel in zip(axes, panels, strict=True):
        values = [rows[n][panel.key] for n in names]
        ax.barh(range(len(names)), values, color=["0.55" if grey(n) else "C0" for n in names])
        for i, v in enumerate(values):
            ax.annotate(f"{v:.4g}", (v, i), fontsize=7, xytext=(2, -3), textcoords="offset points")
        for label, ref in (references or {}).items():
            ax.axvline(ref[panel.key], color="C3", ls="--", label=label)
        ax.set_title(panel.title)
        ax.grid(axis="x", alpha=0.3)
        if panel.log:
            from matplotlib.ticker import NullFormatter

            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # 2x10^-1, 3x10^-1... overlapped
    axes[0].set_yticks(range(len(names)), names, fontsize=8)
    axes[0].invert_yaxis()
    if references:
        axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
