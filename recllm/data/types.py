"""The in-memory data model every stage shares: a Catalog of items and their Interactions."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import datasets


@dataclass
class Catalog:
    """Item id -> text fields, in a fixed item order.

    Attributes:
        items: ``{item_id: {field: text}}``; every item has every field in ``text_fields``
            (an empty string where the source had no text).
        text_fields: The text fields, in display order; the first one is the item's title.
    """

    items: dict[str, dict[str, str]]
    text_fields: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self.items

    def __iter__(self) -> Iterator[str]:
        return iter(self.items)

    @property
    def ids(self) -> list[str]:
        """Item ids in catalog order."""
        return list(self.items)

    @property
    def title_field(self) -> str | None:
        """The field used as the item's title (the first text field), if any."""
        return self.text_fields[0] if self.text_fields else None

    def title(self, item_id: str) -> str:
        """The item's title, or its id when the catalog has no text."""
        fields = self.items[item_id]
        if self.title_field is None or not fields.get(self.title_field):
            return item_id
        return fields[self.title_field]

    def text(self, item_id: str, fields: Iterable[str] | None = None, sep: str = "; ") -> str:
        """The item's non-empty text fields joined as ``field: value`` pairs."""
        chosen = self.text_fields if fields is None else tuple(fields)
        record = self.items[item_id]
        return sep.join(f"{f}: {record[f]}" for f in chosen if record.get(f))

    def subset(self, item_ids: Iterable[str]) -> Catalog:
        """A catalog with only ``item_ids``, keeping catalog order."""
        keep = set(item_ids)
        return Catalog({i: t for i, t in self.items.items() if i in keep}, self.text_fields)

    def to_dataset(self) -> datasets.Dataset:
        """One row per item: ``item_id`` plus one column per text field."""
        import datasets

        columns: dict[str, list[str]] = {"item_id": list(self.items)}
        for f in self.text_fields:
            columns[f] = [t.get(f, "") for t in self.items.values()]
        return datasets.Dataset.from_dict(columns)


@dataclass
class Interactions:
    """User -> chronologically ordered item ids, with optional timestamps.

    Attributes:
        sequences: ``{user_id: [item_id, ...]}``, oldest first.
        timestamps: ``{user_id: [seconds, ...]}`` aligned with ``sequences``, or None when the
            source has no time information (then file order is the chronology).
    """

    sequences: dict[str, list[str]]
    timestamps: dict[str, list[float]] | None = None

    def __post_init__(self) -> None:
        if self.timestamps is not None:
            for user, seq in self.sequences.items():
                if len(self.timestamps.get(user, ())) != len(seq):
                    raise ValueError(f"user {user!r}: timestamps and items differ in length")

    def __len__(self) -> int:
        return len(self.sequences)

    @property
    def num_users(self) -> int:
        return len(self.sequences)

    @property
    def num_interactions(self) -> int:
        return sum(len(s) for s in self.sequences.values())

    def item_ids(self) -> set[str]:
        """Every item that occurs in some history."""
        return {i for seq in self.sequences.values() for i in seq}

    def lengths(self) -> list[int]:
        return [len(s) for s in self.sequences.values()]

    def subset(self, users: Iterable[str]) -> Interactions:
        """Only the given users, keeping order."""
        keep = set(users)
        seqs = {u: s for u, s in self.sequences.items() if u in keep}
        ts = None
        if self.timestamps is not None:
            ts = {u: self.timestamps[u] for u in seqs}
        return Interactions(seqs, ts)

    def first_duplicate_event(self) -> tuple[str, str, float, int] | None:
        """The first user event (same item and timestamp) recorded more than once, if any.

        Returns:
            ``(user, item, timestamp, times recorded)``, or None when every event is distinct or
            there are no timestamps (then an event has no identity beyond its position).
        """
        if self.timestamps is None:
            return None
        for user, seq in self.sequences.items():
            events = list(zip(seq, self.timestamps[user], strict=True))
            if len(set(events)) != len(events):
                counts = Counter(events)
                item, t = next(e for e in events if counts[e] > 1)
                return user, item, t, counts[(item, t)]
        return None

    def drop_duplicate_events(self) -> tuple[Interactions, int]:
        """Keep the first of events with the same user, item and timestamp.

        A logged event repeated (a retried write, a join that fanned out) is one event, not a
        re-consumption: kept, it puts a copy of the target in its own history. Without
        timestamps nothing tells a repeat from a re-purchase, so nothing is dropped.

        Returns:
            The interactions without duplicate events, and how many events were dropped.
        """
        if self.timestamps is None:
            return self, 0
        seqs: dict[str, list[str]] = {}
        times: dict[str, list[float]] = {}
        dropped = 0
        for user, seq in self.sequences.items():
            ts = self.timestamps[user]
            seen: set[tuple[str, float]] = set()
            keep = []
            for k, event in enumerate(zip(seq, ts, strict=True)):
                if event not in seen:
                    seen.add(event)
                    keep.append(k)
            dropped += len(seq) - len(keep)
            seqs[user] = [seq[k] for k in keep] if len(keep) < len(seq) else seq
            times[user] = [ts[k] for k in keep] if len(keep) < len(seq) else ts
        return (Interactions(seqs, times) if dropped else self), dropped

    def consecutive_repeats(self) -> int:
        """How many events repeat the item just before them in the same history."""
        return sum(sum(1 for a, b in pairwise(seq) if a == b) for seq in self.sequences.values())

    def to_dataset(self) -> datasets.Dataset:
        """One row per user: ``user_id``, ``item_ids`` and, if known, ``timestamps``."""
        import datasets

        columns: dict[str, list] = {
            "user_id": list(self.sequences),
            "item_ids": list(self.sequences.values()),
        }
        if self.timestamps is not None:
            columns["timestamps"] = [self.timestamps[u] for u in self.sequences]
        return datasets.Dataset.from_dict(columns)


@dataclass
class RecDataset:
    """A loaded, validated recommendation dataset.

    Attributes:
        name: Short name (the dataset name or the source folder's name).
        catalog: The items and their texts.
        interactions: The users' chronological histories.
        source: Where it was read from.
        format: The detected or requested loader format.
        dropped: What cleaning removed, e.g. ``{"users_short": 3, "items_unused": 10}``.
    """

    name: str
    catalog: Catalog
    interactions: Interactions
    source: str = ""
    format: str = ""
    dropped: dict[str, int] = field(default_factory=dict)

    def to_datasets(self) -> datasets.DatasetDict:
        """``{"items": catalog rows, "interactions": one row per user}``."""
        import datasets

        return datasets.DatasetDict(
            {"items": self.catalog.to_dataset(), "interactions": self.interactions.to_dataset()}
        )
