"""Held-out items: a seeded share of the catalog kept out of training (the cold-start split).

A cold-start benchmark asks how a model ranks items it never trained on. The split is the data's
usual one (``split_dataset``); then a set of *held-out* items is removed from everything training
reads, and nothing else changes:

- the held-out items' interactions leave the training sequences (and their timestamps);
- the validation and test examples of the split lose them from their histories, and an example
  whose target is held out is dropped (a held-out item is never a training signal, and the
  recipes render every example of the split with the model's SIDs, which these items lack);
- the catalog the SIDs and the model are built from loses them (``load_rec_dataset``).

The benchmark scores the usual split's test examples, unchanged (the same data loaded without
``holdout_items``): test users whose target is held out form the cold set
(:func:`recllm.bench.cold_start.make_cold_split`).

Training is told through ``DataConfig.holdout_items``: a file of item ids, one per line
(:func:`write_holdout_items`). The model's data fingerprint covers the reduced catalog and
training sequences, so a model trained with held-out items is told apart from one without.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable
from pathlib import Path

from recllm.data.errors import DataError
from recllm.data.splits import Example, Split
from recllm.data.types import Catalog, Interactions

logger = logging.getLogger(__name__)

__all__ = [
    "choose_holdout_items",
    "holdout_split",
    "read_holdout_items",
    "remove_from_catalog",
    "write_holdout_items",
]


def choose_holdout_items(item_ids: Iterable[str], share: float = 0.1, seed: int = 0) -> list[str]:
    """A seeded share of ``item_ids`` (sorted first, so the file order does not matter).

    Raises:
        ValueError: ``share`` is not strictly between 0 and 1.
    """
    if not 0 < share < 1:
        raise ValueError(f"share must lie strictly between 0 and 1, got {share}")
    ids = sorted(set(item_ids))
    n = max(1, round(share * len(ids)))
    return sorted(random.Random(seed).sample(ids, n))


def write_holdout_items(path: str | Path, item_ids: Iterable[str]) -> Path:
    """Write item ids one per line (atomically)."""
    from recllm.io import atomic_path

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        Path(tmp).write_text("".join(f"{i}\n" for i in item_ids), encoding="utf-8")
    return out


def read_holdout_items(path: str | Path) -> frozenset[str]:
    """The item ids of a held-out items file (one per line; blank lines ignored).

    Raises:
        DataError: The file is missing or names no item.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(
            p,
            "no such held-out items file (--holdout_items)",
            "pass a file of item ids, one a line",
        )
    ids = frozenset(line.strip() for line in p.read_text(encoding="utf-8").splitlines())
    ids -= {""}
    if not ids:
        raise DataError(p, "the held-out items file names no item", "write one item id a line")
    return ids


def remove_from_catalog(catalog: Catalog, held_out: frozenset[str], source: str) -> Catalog:
    """``catalog`` without the held-out items.

    Raises:
        DataError: A held-out id is not in the catalog (another data set's file).
    """
    missing = sorted(held_out - set(catalog.items))
    if missing:
        raise DataError(
            source,
            f"{len(missing)} held-out item(s) are not in the catalog, e.g. {missing[0]!r}",
            "write the held-out items file from this data set's catalog",
        )
    kept = [i for i in catalog.ids if i not in held_out]
    logger.info("holding %d of %d items out of training", len(held_out), len(catalog))
    return catalog.subset(kept)


def holdout_split(split: Split, held_out: frozenset[str]) -> Split:
    """``split`` with the held-out items removed from what training reads (see the module).

    Training users left with no item are dropped; validation and test examples lose the
    held-out items from their histories, and those with a held-out target or an emptied
    history are dropped.
    """
    from dataclasses import replace

    train: dict[str, list[str]] = {}
    train_ts: dict[str, list[float]] | None = {} if split.train.timestamps is not None else None
    for user, seq in split.train.sequences.items():
        keep = [k for k, item in enumerate(seq) if item not in held_out]
        if not keep:
            continue
        train[user] = [seq[k] for k in keep]
        if train_ts is not None:
            ts = split.train.timestamps[user]
            train_ts[user] = [ts[k] for k in keep]

    def examples(given: list[Example]) -> list[Example]:
        out = []
        for ex in given:
            history = tuple(i for i in ex.history if i not in held_out)
            if ex.target not in held_out and history:
                out.append(Example(ex.user_id, history, ex.target))
        return out

    valid, test = examples(split.valid), examples(split.test)
    removed = sum(map(len, split.train.sequences.values())) - sum(map(len, train.values()))
    logger.info(
        "held-out items: %d training interactions, %d validation and %d test examples removed",
        removed,
        len(split.valid) - len(valid),
        len(split.test) - len(test),
    )
    return replace(split, train=Interactions(train, train_ts), valid=valid, test=test)
