"""New items in beam search: a second beam group kept for them, and a score bonus.

Items added to a trained model (``recllm catalog add``) get codes from the frozen SID quantizer,
but the model never saw those codes as answers, so their log-probs sit well below the trained
items' and a plain beam search almost never returns one (docs/cold_start.md). Two things fix
that without training:

- **A beam group of their own.** :func:`recllm.decode.beam.sid_beam_search` with ``fresh=``
  runs two beam groups off one prompt prefill: one over the trained items only, a second that
  may only walk into subtrees holding a new item. It costs one more set of beam steps (not
  another prefill), and equals two separate searches (the trained items' alone and the new
  items' alone) exactly. Keeping the new items out of the first group keeps the trained items'
  ranking exactly the stale model's: a new item only enters a list by outscoring a trained one,
  never by taking a beam from it half-way down the trie (a plain search over the whole catalog
  lost 5.5% of warm R@10 on ml-100k that way, docs/cold_start.md).
- **A bonus.** Every new item's length-normalised log-prob gets ``bonus`` added (nats per token
  of the answer); the two groups' answers are merged, each item once, and the best ``k`` kept.
  The bonus stands in for the popularity prior a trained item carries and a new one lacks.
  Choose it on validation users (``scripts/cold_start.py`` does; ``recllm catalog add
  --new-item-bonus`` records it in the model directory, where the Recommender, ``recllm eval``
  and ``recllm serve`` read it). ``bonus=0`` still searches the new items' group, so they
  compete on their model scores alone.

Example:
    >>> fresh = FreshItems.from_ids(trie, ["new-1", "new-2"], bonus=0.3)  # doctest: +SKIP
    >>> sid_beam_search(model, ids, mask, trie, num_beams=20, fresh=fresh)  # doctest: +SKIP
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from recllm.decode.trie import SIDTrie
from recllm.errors import UserError, clip

__all__ = ["FreshItems", "TextNewItems", "merge_groups"]


@dataclass(frozen=True)
class FreshItems:
    """The new items of a catalog and their score bonus, compiled against one trie.

    Attributes:
        items: ``(num_items,)`` bool over SID-map rows: True for a new item.
        nodes: ``(num_nodes,)`` bool over trie nodes: True where a new item lies below (or is).
        old_nodes: ``(num_nodes,)`` bool over trie nodes: True where a trained (not new) item
            lies below (or is): the first group's walk.
        bonus: Added to a new item's length-normalised log-prob.
        count: Number of new items.
    """

    items: torch.Tensor
    nodes: torch.Tensor
    old_nodes: torch.Tensor
    bonus: float
    count: int

    @classmethod
    def from_rows(cls, trie: SIDTrie, rows: Iterable[int], bonus: float = 0.0) -> FreshItems:
        """The new items given as SID-map rows of ``trie``'s catalog.

        Raises:
            ValueError: No rows, a row outside the catalog, or a bonus that is not finite.
        """
        from recllm.decode.filters import trie_index

        rows_t = torch.as_tensor(sorted({int(r) for r in rows}), dtype=torch.long)
        if rows_t.numel() == 0:
            raise ValueError("FreshItems needs at least one new item")
        if int(rows_t.min()) < 0 or int(rows_t.max()) >= trie.num_items:
            raise ValueError(f"new-item rows must lie in [0, {trie.num_items})")
        if not torch.isfinite(torch.tensor(float(bonus))):
            raise UserError(
                "--new-item-bonus",
                f"must be a finite number, got {bonus}",
                "pass a number of nats such as 0.3 (choose it on validation users)",
            )
        index = trie_index(trie)
        device = trie.device
        items = torch.zeros(trie.num_items, dtype=torch.bool, device=device)
        items[rows_t.to(device)] = True
        nodes = _above(trie, index, items)
        old_nodes = _above(trie, index, ~items)
        return cls(items, nodes, old_nodes, float(bonus), int(rows_t.numel()))

    @classmethod
    def from_ids(cls, trie: SIDTrie, ids: Sequence[str], bonus: float = 0.0) -> FreshItems:
        """The new items by id (the trie must know its item ids).

        Raises:
            UserError: An id that is not in the catalog.
        """
        from recllm.decode.filters import trie_index

        by_id = trie_index(trie).rows_by_id
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise UserError(
                "new items",
                f"{len(missing)} are not in the model's catalog ({clip(missing)})",
                "add them first with `recllm catalog add`",
            )
        return cls.from_rows(trie, [by_id[i] for i in ids], bonus)

    def to(self, device: torch.device | str) -> FreshItems:
        return FreshItems(
            self.items.to(device),
            self.nodes.to(device),
            self.old_nodes.to(device),
            self.bonus,
            self.count,
        )

    def walkable(self, below: torch.Tensor, fresh_group: torch.Tensor) -> torch.Tensor:
        """Which child nodes ``below`` (-1: none) each group may walk into: the new items'
        subtrees in the fresh group's rows (``fresh_group`` True), the trained items' elsewhere."""
        below = below.clamp(min=0)
        return torch.where(fresh_group, self.nodes[below], self.old_nodes[below])

    def check_trie(self, trie: SIDTrie) -> None:
        """Raise ValueError when built for a trie of another size."""
        if self.items.numel() != trie.num_items or self.nodes.numel() != trie.num_nodes:
            raise ValueError("these FreshItems were built for another trie; rebuild them")


def _above(trie: SIDTrie, index, rows: torch.Tensor) -> torch.Tensor:
    """``(num_nodes,)`` bool: the leaves of the items ``rows`` marks, their ancestors, the root
    (all False when no row is marked)."""
    nodes = torch.zeros(trie.num_nodes, dtype=torch.bool, device=rows.device)
    node = index.item_leaf[rows.nonzero().flatten()]
    if node.numel() == 0:
        return nodes
    for _ in range(trie.levels + 1):  # leaf, its ancestors, the root
        nodes[node] = True
        node = index.parent[node]
    return nodes


def merge_groups(
    items: torch.Tensor, codes: torch.Tensor, scores: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The best ``k`` distinct items per row of ``(batch, n)`` candidates (dead ones: item -1).

    Candidates are sorted by score (stable: ties keep their order); a repeat of an item already
    taken is dropped; rows with fewer than ``k`` distinct live items are padded with -1 / -inf.

    Returns:
        ``(items, codes, scores)`` of shapes ``(batch, k)``, ``(batch, k, L)``, ``(batch, k)``.
    """
    scores, order = scores.sort(dim=1, descending=True, stable=True)
    rows = torch.arange(items.shape[0], device=items.device)[:, None]
    items, codes = items[rows, order], codes[rows, order]
    n = items.shape[1]
    earlier = torch.ones(n, n, dtype=torch.bool, device=items.device).tril(-1)
    repeat = ((items[:, :, None] == items[:, None, :]) & earlier).any(-1)
    scores = scores.masked_fill(repeat | (items < 0), float("-inf"))
    scores, order = scores.sort(dim=1, descending=True, stable=True)
    scores, order = scores[:, :k], order[:, :k]
    items = torch.where(torch.isfinite(scores), items[rows, order], -1)
    return items, codes[rows, order], scores


def check_text_shape(
    norm_top: int | None,
    guide: float | None,
    items: int | None = None,
    max_new: int | None = None,
) -> None:
    """Refuse a hybrid shape out of range: ``norm_top`` < 0 (or above ``items``), ``guide``
    outside [0, 1], ``max_new`` < 0; None: not given."""
    bad_norm = norm_top is not None and not 0 <= norm_top <= (
        items if items is not None else norm_top
    )
    bad_cap = max_new is not None and max_new < 0
    if bad_norm or bad_cap or (guide is not None and not 0 <= guide <= 1):
        most = f" <= {items} items" if items is not None else ""
        raise UserError(
            "--new-item-text-norm-top / --new-item-text-guide / --new-item-text-max-new",
            f"need 0 <= norm-top{most}, 0 <= guide <= 1 and max-new >= 0, got {norm_top}, "
            f"{guide} and {max_new}",
            "choose them on validation users (scripts/cold_start.py prints them)",
        )


def _check_alpha_bonus(alpha: float, bonus: float) -> None:
    import math

    if not (math.isfinite(alpha) and alpha > 0 and math.isfinite(bonus)):
        raise UserError(
            "--new-item-text-alpha / --new-item-bonus",
            f"need a positive alpha and a finite bonus, got {alpha} and {bonus}",
            "choose both on validation users (scripts/cold_start.py prints them)",
        )


@dataclass(frozen=True)
class TextNewItems:
    """New items scored by text similarity, beside a search over the trained items (the hybrid).

    A new item scores ``alpha * (cos(user, item) - base) + bonus``:

    - ``user`` is the recency-weighted mean text vector of the history's last items
      (:class:`recllm.baselines.text_knn.TextKNN`'s user), every vector from the SID quantizer's
      frozen featurizer. With ``guide`` g > 0 it is blended with the vector of what the model
      predicts: ``(1 - g) * user + g * predicted``, where ``predicted`` is the rank-weighted
      (``decay ** rank``) mean of the search's best ``guide_top`` trained items, so a new item
      like the trained items the model would recommend scores higher.
    - ``base`` is 0, or with ``norm_top`` m > 0 the mean cosine of the user's ``m`` nearest
      catalog items: a user whose vector is close to much of the catalog needs a higher cosine
      before a new item says anything.
    - ``max_new`` S > 0 caps the new items of one list at the user's S best (a freshness
      quota): the first new item of a list is the likeliest hit, and every further one costs a
      trained item as much while finding fewer targets.

    The search itself leaves the new items out, so the trained items' list is exactly the stale
    model's; :meth:`merge` puts a new item in it only where it outscores a trained one (scores
    on the beam's length-normalised log-prob scale; choose every setting on validation users,
    as ``scripts/cold_start.py`` does). On Amazon Beauty this found 16x more cold targets than
    the new items' beam group at equal warm cost (docs/cold_start.md).

    Attributes:
        new_items: The new items' ids.
        item_ids: Every catalog item with a vector (history items are looked up here).
        vectors: ``(len(item_ids), d)`` unit text vectors.
        alpha: Scale of the cosine.
        bonus: Added to every new item's score.
        norm_top: ``m`` of the per-user base (0: none).
        guide: Share of the predicted items' vector in the user vector (0: the history only).
        max_new: Most new items per list (0: no cap).
    """

    new_items: tuple[str, ...]
    item_ids: tuple[str, ...]
    vectors: torch.Tensor
    alpha: float
    bonus: float
    last: int = 5
    decay: float = 0.7
    norm_top: int = 0
    guide: float = 0.0
    guide_top: int = 10
    max_new: int = 0

    def __post_init__(self) -> None:
        _check_alpha_bonus(self.alpha, self.bonus)
        check_text_shape(self.norm_top, self.guide, len(self.item_ids), self.max_new)

    @classmethod
    def build(
        cls,
        quantizer: object,
        catalog: object,
        new_items: Sequence[str],
        alpha: float,
        bonus: float,
        *,
        norm_top: int = 0,
        guide: float = 0.0,
        max_new: int = 0,
    ) -> TextNewItems:
        """Embed ``catalog`` with the quantizer's featurizer.

        Raises:
            UserError: ``alpha`` or ``bonus`` is not finite, ``alpha`` is not positive, or
                ``norm_top`` / ``guide`` / ``max_new`` are out of range.
        """
        _check_alpha_bonus(alpha, bonus)  # before the featurizer's work
        x = torch.as_tensor(quantizer.embed_texts(quantizer.texts_of(catalog)))  # type: ignore[attr-defined]
        x = torch.nn.functional.normalize(x.float(), dim=-1)
        ids = tuple(catalog.ids)  # type: ignore[attr-defined]
        return cls(
            tuple(new_items), ids, x, float(alpha), float(bonus), norm_top=int(norm_top),
            guide=float(guide), max_new=int(max_new),
        )  # fmt: skip

    def user_vectors(
        self,
        histories: Sequence[Sequence[str]],
        found: Sequence[Sequence[tuple[str, float]]] | None = None,
    ) -> torch.Tensor:
        """``(B, d)`` unit user vectors (zeros: nothing known): the histories', blended with
        ``found``'s (the search's trained items, best first) by ``guide``."""
        from recllm.decode.text_head import history_vectors

        users = history_vectors(self.vectors, self.item_ids, histories, self.last, self.decay)
        if not self.guide or found is None:
            return users
        if len(found) != len(histories):
            raise ValueError(f"{len(found)} found lists for {len(histories)} histories")
        predicted = history_vectors(
            self.vectors,
            self.item_ids,
            [[i for i, _ in reversed(list(f)[: self.guide_top])] for f in found],
            self.guide_top,
            self.decay,
        )  # reversed: the best item is the "newest", weight 1
        blend = (1 - self.guide) * users + self.guide * predicted
        return torch.nn.functional.normalize(blend, dim=-1)

    @functools.cached_property
    def _new_rows(self) -> torch.Tensor:
        """The new items' rows of ``vectors`` (built once, not per request)."""
        index = {item: n for n, item in enumerate(self.item_ids)}
        return torch.tensor([index[i] for i in self.new_items], dtype=torch.long)

    def scores(self, users: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
        """``(B, len(new_items))``: every new item's score for each user vector."""
        rows = self._new_rows
        out = []
        for s in range(0, len(users), chunk):
            sims = users[s : s + chunk] @ self.vectors.T
            new = sims[:, rows]
            if self.norm_top:
                new = new - sims.topk(self.norm_top, dim=1).values.mean(1, keepdim=True)
            out.append(self.alpha * new + self.bonus)
        return torch.cat(out) if out else torch.zeros(0, len(rows))

    def candidates(
        self,
        histories: Sequence[Sequence[str]],
        k: int,
        exclude: Sequence[Sequence[str] | None] | None = None,
        allow: Sequence[Sequence[str] | None] | None = None,
        found: Sequence[Sequence[tuple[str, float]]] | None = None,
    ) -> list[list[tuple[str, float]]]:
        """Per history, its best ``k`` new items (at most ``max_new``) with their scores; never
        a history item, an excluded one, or one outside ``allow``. ``found``: the search's
        trained items per history, best first (what ``guide`` reads)."""
        if self.max_new:
            k = min(k, self.max_new)
        users = self.user_vectors(histories, found)
        scores = self.scores(users)
        out = []
        for b, history in enumerate(histories):
            if not bool(users[b].any()) or not self.new_items:
                out.append([])
                continue
            banned = {str(i) for i in history}
            if exclude is not None and exclude[b] is not None:
                banned |= {str(i) for i in exclude[b]}
            allowed = None if allow is None or allow[b] is None else {str(i) for i in allow[b]}
            ranked = []
            for n in torch.argsort(scores[b], descending=True, stable=True).tolist():
                item = self.new_items[n]
                if item in banned or (allowed is not None and item not in allowed):
                    continue
                ranked.append((item, float(scores[b, n])))
                if len(ranked) == k:
                    break
            out.append(ranked)
        return out

    @staticmethod
    def merge(
        found: Sequence[tuple[str, float]], extra: Sequence[tuple[str, float]], k: int
    ) -> list[tuple[str, float]]:
        """The best ``k`` of both lists by score (stable: the search's items first on ties)."""
        both = sorted(
            ((s, n, i) for n, (i, s) in enumerate([*found, *extra])), key=lambda t: (-t[0], t[1])
        )
        return [(i, s) for s, _, i in both[:k]]
