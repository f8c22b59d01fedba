"""Rows compared user by user with a base row: the paired differences of R@k and N@k.

Each scored row keeps every user's rank of the target (:class:`recllm.bench.scoring.Scored`);
two rows scored on the same users differ per user, and the mean of those differences with its
95% interval (normal approximation) and two-sided p says whether a change is more than the
noise of these users (:func:`recllm.eval.metrics.paired_difference`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["paired_lines", "paired_vs"]


def paired_vs(
    ranks: Mapping[str, Sequence[int]], base: str, *, k: int = 10
) -> dict[str, dict | None]:
    """Every row of ``ranks`` against the row ``base``, user by user (the base row: None).

    Raises:
        KeyError: ``base`` is not a row.
        ValueError: A row ranks another number of users than the base (not the same users).
    """
    from recllm.eval.metrics import paired_difference

    if base not in ranks:
        raise KeyError(f"no row {base!r} to compare with (rows: {', '.join(ranks)})")
    return {
        name: None if name == base else paired_difference(list(ranks[base]), list(r), k=k)
        for name, r in ranks.items()
    }


def paired_lines(
    comparisons: Mapping[str, dict | None], *, k: int = 10, width: int = 30
) -> list[str]:
    """One line per compared row: ``R@k +d [lo, hi] p=..  N@k ...  users +gained/-lost``."""
    lines = []
    for name, c in comparisons.items():
        if c is None:
            continue
        cells = "  ".join(
            f"{m} {c[m]['delta']:+.4f} [{c[m]['ci95'][0]:+.4f}, {c[m]['ci95'][1]:+.4f}] "
            f"p={c[m]['p']:.2g}"
            for m in (f"R@{k}", f"N@{k}")
        )
        lines.append(f"  {name:<{width}} {cells}  users +{c['users_gained']}/-{c['users_lost']}")
    return lines
