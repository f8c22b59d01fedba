"""Ranking metrics under the published leave-one-out protocol: Recall@K, NDCG@K, invalid rate,
coverage; a per-user accumulator; JSON and PNG outputs.

The protocol (``shared/data/README.md``, the TIGER and P5 tables): each evaluated user has one
held-out target; the model returns a ranked list over the full catalog (for a generative model,
its beam). Recall@K (= HR@K with one target) is 1 if the target is among the first K entries;
NDCG@K is ``1 / log2(rank + 1)`` for a target at 1-based ``rank <= K``, else 0. Both are averaged
over users.

Conventions for what a generative model may return:

- An entry that is ``None`` (an unparsable output) or not a catalog item is *invalid*. It still
  occupies its slot: a target after one invalid entry is at rank 2, not 1.
- A duplicate entry also occupies its slot, and only the first occurrence of a relevant item
  gains. A beam that repeats items therefore never scores higher than one that does not.
- With a set of targets, Recall@K is the share of the targets found in the top K, and NDCG@K is
  DCG over the ideal DCG of ``min(K, len(targets))`` hits at the top. With one target these
  reduce to the single-target definitions above.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = [
    "RankingMetrics",
    "coverage",
    "invalid_rate",
    "ndcg_at_k",
    "plot_recall",
    "recall_at_k",
    "save_metrics",
]

Ranked = Sequence[str | None]
Target = str | Collection[str]


def _check_k(k: object) -> int:
    # bool is an int subclass: True would silently mean K=1.
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"k must be a positive integer, got {k!r} ({type(k).__name__})")
    if k <= 0:
        raise ValueError(f"k must be a positive integer (K >= 1), got {k}")
    return k


def _check_ks(ks: Iterable[int]) -> tuple[int, ...]:
    checked = tuple(sorted({_check_k(k) for k in ks}))
    if not checked:
        raise ValueError("ks is empty: pass at least one cut-off, e.g. ks=(5, 10)")
    return checked


def _targets(target: Target) -> frozenset[str]:
    if target is None:
        raise ValueError("target is None: every evaluated user needs a held-out item id")
    out = frozenset((target,)) if isinstance(target, str) else frozenset(target)
    if not out:
        raise ValueError("the target set is empty: every evaluated user needs >= 1 relevant item")
    return out


def _check_ranked(ranked: Ranked) -> Ranked:
    if isinstance(ranked, str):
        raise TypeError(
            f"a ranked list must be a list of item ids, got the string {ranked!r}; wrap a "
            "single recommendation in a list"
        )
    return ranked


def _relevant_ranks(ranked: Ranked, targets: frozenset[str]) -> tuple[int, ...]:
    """1-based ranks of the first occurrence of each target found in ``ranked``, ascending."""
    seen: set[str] = set()
    ranks = []
    for pos, item in enumerate(_check_ranked(ranked), start=1):
        if item in targets and item not in seen:
            seen.add(item)
            ranks.append(pos)
    return tuple(ranks)


def _recall(ranks: tuple[int, ...], n_relevant: int, k: int) -> float:
    return sum(1 for r in ranks if r <= k) / n_relevant


def _ndcg(ranks: tuple[int, ...], n_relevant: int, k: int) -> float:
    dcg = sum(1.0 / math.log2(r + 1) for r in ranks if r <= k)
    idcg = sum(1.0 / math.log2(r + 1) for r in range(1, min(k, n_relevant) + 1))
    return dcg / idcg


def _pairs(
    ranked_lists: Sequence[Ranked], targets: Sequence[Target]
) -> list[tuple[Ranked, frozenset[str]]]:
    if isinstance(targets, str):
        raise TypeError("targets must be a sequence with one target per user, not one string")
    if len(ranked_lists) != len(targets):
        raise ValueError(
            f"{len(ranked_lists)} ranked lists but {len(targets)} targets: pass one of each per user"
        )
    if not ranked_lists:
        raise ValueError("no users to evaluate: ranked_lists and targets are empty")
    return [(_check_ranked(r), _targets(t)) for r, t in zip(ranked_lists, targets, strict=True)]


def recall_at_k(ranked_lists: Sequence[Ranked], targets: Sequence[Target], k: int) -> float:
    """Mean Recall@K over users (= HR@K when each user has one target).

    Args:
        ranked_lists: One ranked list of item ids per user, best first; ``None`` entries
            (unparsable outputs) occupy their slot and never match.
        targets: One target item id, or a collection of relevant item ids, per user.
        k: The cut-off, >= 1. A list shorter than K is scored on what it has.

    Returns:
        The mean over users of (targets in the top K) / (number of targets).

    Raises:
        ValueError: ``k <= 0``, no users, mismatched lengths, or an empty/None target.
        TypeError: ``k`` is not an int, or a ranked list is a bare string.
    """
    k = _check_k(k)
    pairs = _pairs(ranked_lists, targets)
    return sum(_recall(_relevant_ranks(r, t), len(t), k) for r, t in pairs) / len(pairs)


def ndcg_at_k(ranked_lists: Sequence[Ranked], targets: Sequence[Target], k: int) -> float:
    """Mean NDCG@K over users, binary relevance, gain ``1 / log2(rank + 1)``.

    With one target per user this is ``1 / log2(rank + 1)`` if the target's first occurrence is at
    ``rank <= K``, else 0 (target at rank 1 -> 1.0, rank 3 -> 0.5).

    Args:
        ranked_lists: One ranked list of item ids per user, best first.
        targets: One target item id, or a collection of relevant item ids, per user.
        k: The cut-off, >= 1.

    Returns:
        The mean NDCG@K over users.

    Raises:
        ValueError: ``k <= 0``, no users, mismatched lengths, or an empty/None target.
        TypeError: ``k`` is not an int, or a ranked list is a bare string.
    """
    k = _check_k(k)
    pairs = _pairs(ranked_lists, targets)
    return sum(_ndcg(_relevant_ranks(r, t), len(t), k) for r, t in pairs) / len(pairs)


def invalid_rate(
    ranked_lists: Sequence[Ranked], catalog: Collection[str], k: int | None = None
) -> float:
    """Share of returned entries that are ``None`` (unparsable) or not catalog items.

    Args:
        ranked_lists: The returned lists, one per user.
        catalog: The valid item ids (a :class:`recllm.data.Catalog` works).
        k: Count only the first K entries of each list; None counts all.

    Returns:
        invalid entries / all entries; 0.0 when nothing was returned at all.
    """
    if k is not None:
        k = _check_k(k)
    total = bad = 0
    for ranked in ranked_lists:
        for item in _check_ranked(ranked)[:k]:
            total += 1
            bad += item is None or item not in catalog
    return bad / total if total else 0.0


def coverage(
    ranked_lists: Sequence[Ranked], catalog: Collection[str], k: int | None = None
) -> float:
    """Distinct valid catalog items recommended to anyone, over the catalog size.

    Args:
        ranked_lists: The returned lists, one per user.
        catalog: The valid item ids (a :class:`recllm.data.Catalog` works); must not be empty.
        k: Count only the first K entries of each list; None counts all.

    Returns:
        A share in [0, 1]; invalid entries never count.
    """
    if k is not None:
        k = _check_k(k)
    if len(catalog) == 0:
        raise ValueError("coverage needs a non-empty catalog")
    seen = {i for r in ranked_lists for i in _check_ranked(r)[:k] if i is not None and i in catalog}
    return len(seen) / len(catalog)


class RankingMetrics:
    """Accumulates one ranked list per evaluated user, then computes every metric at once.

    Memory stays small: per user only the ranks of its targets and its invalid count are kept,
    plus, per recommended item, the best position at which anyone got it (for coverage@K).

    Example:
        >>> m = RankingMetrics(["a", "b", "c", "d"])
        >>> m.add(["b", "a", "zz"], "a")
        >>> m.add(["c", None], "d")
        >>> r = m.compute(ks=(1, 2))
        >>> r["recall@2"], r["invalid_rate"], r["users"]
        (0.5, 0.4, 2)

    Args:
        catalog: The valid item ids (a :class:`recllm.data.Catalog`, a list or set of ids).
    """

    def __init__(self, catalog: Iterable[str]) -> None:
        self.catalog: frozenset[str] = frozenset(catalog)
        if not self.catalog:
            raise ValueError("RankingMetrics needs a non-empty catalog of item ids")
        self._ranks: list[tuple[int, ...]] = []
        self._n_relevant: list[int] = []
        self._entries = 0
        self._invalid = 0
        self._best_pos: dict[str, int] = {}  # item -> smallest 1-based position it was shown at

    def __len__(self) -> int:
        return len(self._ranks)

    def add(self, ranked_item_ids: Ranked, target: Target) -> None:
        """Record one user's ranked list (best first) and its held-out target(s).

        Args:
            ranked_item_ids: Item ids, best first; ``None`` for an unparsable output.
            target: The held-out item id, or a collection of relevant ids.
        """
        targets = _targets(target)
        ranked = _check_ranked(ranked_item_ids)
        self._ranks.append(_relevant_ranks(ranked, targets))
        self._n_relevant.append(len(targets))
        best = self._best_pos
        for pos, item in enumerate(ranked, start=1):
            self._entries += 1
            if item is None or item not in self.catalog:
                self._invalid += 1
            elif best.get(item, pos + 1) > pos:
                best[item] = pos

    def compute(self, ks: Iterable[int] = (5, 10)) -> dict[str, float | int]:
        """Every metric over the users added so far.

        Args:
            ks: Cut-offs, each >= 1.

        Returns:
            ``{"recall@K": ..., "ndcg@K": ..., "coverage@K": ...}`` for each K (ascending), then
            ``"invalid_rate"`` (over all returned entries), ``"coverage"`` (over all returned
            entries) and ``"users"``.

        Raises:
            ValueError: No user was added, or a bad cut-off.
        """
        ks = _check_ks(ks)
        if not self._ranks:
            raise ValueError("no users were added: call add() once per evaluated user first")
        n = len(self._ranks)
        out: dict[str, float | int] = {}
        for k in ks:
            pairs = zip(self._ranks, self._n_relevant, strict=True)
            out[f"recall@{k}"] = sum(_recall(r, m, k) for r, m in pairs) / n
            pairs = zip(self._ranks, self._n_relevant, strict=True)
            out[f"ndcg@{k}"] = sum(_ndcg(r, m, k) for r, m in pairs) / n
        for k in ks:
            out[f"coverage@{k}"] = sum(p <= k for p in self._best_pos.values()) / len(self.catalog)
        out["invalid_rate"] = self._invalid / self._entries if self._entries else 0.0
        out["coverage"] = len(self._best_pos) / len(self.catalog)
        out["users"] = n
        return out


def _jsonable(config: Any) -> Any:
    if config is None:
        return None
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    if isinstance(config, Mapping):
        return dict(config)
    if hasattr(config, "__dict__"):  # argparse.Namespace and similar
        return dict(vars(config))
    raise TypeError(
        f"config must be a dataclass, a mapping or a namespace, got {type(config).__name__}"
    )


def save_metrics(
    path: str | os.PathLike[str],
    metrics: Mapping[str, Any],
    config: Any = None,
    **extra: Any,
) -> Path:
    """Write ``metrics`` as JSON, atomically, with the run's config and provenance.

    The file holds ``{"metrics": ..., "config": ..., **extra, "created": ..., "python": ...,
    "platform": ..., "versions": {...}}``.

    Args:
        path: Destination ``.json`` file; parent folders are created.
        metrics: The figures, e.g. :meth:`RankingMetrics.compute`'s output, or
            ``{model_name: figures}``.
        config: What produced them: a dataclass, a mapping or an ``argparse.Namespace``.
        **extra: More top-level keys (``dataset="beauty"``, ``split="test"``, ``beam=20``...).

    Returns:
        The path written.
    """
    from recllm.io import write_json_atomic
    from recllm.provenance import provenance

    doc = {"metrics": dict(metrics), "config": _jsonable(config), **extra, **provenance()}
    out = write_json_atomic(path, doc)
    logger.info("wrote metrics to %s", out)
    return out


def _recall_ks(metrics: Mapping[str, Any]) -> list[int]:
    return sorted(
        int(key.split("@", 1)[1])
        for key in metrics
        if key.startswith("recall@") and key.split("@", 1)[1].isdigit()
    )


def plot_recall(
    path: str | os.PathLike[str],
    metrics: Mapping[str, Any],
    ks: Iterable[int] | None = None,
    title: str = "",
) -> Path:
    """PNG of Recall@K against K: one line per model.

    Args:
        path: Destination ``.png``; written atomically.
        metrics: Either one model's figures (``{"recall@5": ..., ...}``) or
            ``{model_name: figures}`` for a side-by-side comparison.
        ks: Cut-offs to plot; default every ``recall@K`` the figures hold.
        title: Figure title.

    Returns:
        The path written.

    Raises:
        ValueError: No ``recall@K`` to plot, or a model lacks a requested K.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from recllm.io import atomic_path

    # One model's figures map names to numbers; a comparison maps model names to such mappings.
    single = not all(isinstance(v, Mapping) for v in metrics.values())
    by_model: dict[str, Mapping[str, Any]] = (
        {"model": metrics} if single else {str(m): v for m, v in metrics.items()}
    )
    if ks is None:
        chosen = sorted({k for figures in by_model.values() for k in _recall_ks(figures)})
    else:
        chosen = list(_check_ks(ks))
    if not chosen:
        raise ValueError("nothing to plot: the metrics hold no recall@K entries")
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, figures in by_model.items():
        missing = [k for k in chosen if f"recall@{k}" not in figures]
        if missing:
            raise ValueError(f"model {name!r} has no recall@{missing[0]}; pass ks= it has")
        ax.plot(chosen, [figures[f"recall@{k}"] for k in chosen], marker="o", label=name)
    ax.set_xlabel("K")
    ax.set_ylabel("Recall@K")
    ax.set_xticks(chosen)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    if len(by_model) > 1 or not single:
        ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    out = Path(path)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return out


def paired_values(base: Sequence[float], other: Sequence[float]) -> dict:
    """``other`` minus ``base``, user by user: the mean, its 95% interval and the two-sided p
    (normal approximation: thousands of users), of any per-user figure.

    Raises:
        ValueError: The two hold another number of users.
    """
    import numpy as np

    b, o = np.asarray(base, dtype=float), np.asarray(other, dtype=float)
    if b.shape != o.shape:
        raise ValueError(f"figures of {len(b)} and {len(o)} users: not the same users")
    d = o - b
    mean = float(d.mean())
    se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else 0.0
    z = mean / se if se > 0 else 0.0
    return {
        "delta": round(mean, 5),
        "ci95": [round(mean - 1.96 * se, 5), round(mean + 1.96 * se, 5)],
        "p": float(f"{math.erfc(abs(z) / math.sqrt(2)):.3g}"),
    }


def paired_difference(base: list[int], other: list[int], k: int = 10) -> dict:
    """``other`` minus ``base`` on the same users: mean, 95% interval and two-sided p of R@k, N@k.

    ``base`` and ``other`` are every user's rank of the target (1 = first, 0 = not ranked).

    Per-user differences, normal approximation (thousands of users): a stage whose interval
    excludes 0 moved the metric by more than the sampling noise of these users.
    """
    import numpy as np

    b, o = np.asarray(base), np.asarray(other)
    if b.shape != o.shape:
        raise ValueError(f"ranks of {len(b)} and {len(o)} users: not the same users")

    def hit(r):
        return ((r > 0) & (r <= k)).astype(float)

    def gain(r):
        return np.where((r > 0) & (r <= k), 1.0 / np.log2(np.maximum(r, 1) + 1.0), 0.0)

    out = {label: paired_values(f(b), f(o)) for label, f in ((f"R@{k}", hit), (f"N@{k}", gain))}
    out["users_gained"] = int(((hit(o) - hit(b)) > 0).sum())
    out["users_lost"] = int(((hit(o) - hit(b)) < 0).sum())
    return out
