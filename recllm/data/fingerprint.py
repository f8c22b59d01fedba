"""A fingerprint of the data a model was trained on, so evaluation can refuse other data.

Two data sets whose item ids overlap (two MovieLens subsets, a re-filtered catalog, a file that
changed since training) load, split and decode without any error: every item has a SID, and the
figures that come out are silently meaningless (R@10 of 0.0). A model directory therefore records
:func:`data_fingerprint` of its split, and :func:`check_data_fingerprint` compares it with the
split an evaluation builds.

The fingerprint is cheap (one pass over the interactions) and stable across runs and machines: it
hashes the sorted catalog ids and the split's content (training sequences, validation and test
``(user, target)`` pairs) in a canonical JSON form, not the path the data was read from, so the
same data under another path or name (``ml-100k`` vs. its directory) matches.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Collection
from typing import Any

from recllm.data.splits import Split
from recllm.data.types import Catalog
from recllm.errors import UserError

logger = logging.getLogger(__name__)

FINGERPRINT_FORMAT = "recllm.data_fingerprint/1"

#: Keys compared between a recorded and a computed fingerprint, in the order differences are
#: reported (counts first: they are the easiest to read).
_COMPARED = ("split", "users", "items", "interactions", "catalog_sha256", "split_sha256")


def _sha256(obj: object) -> str:
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def data_fingerprint(split: Split, catalog: Catalog) -> dict[str, Any]:
    """The fingerprint of a split and its catalog.

    Args:
        split: The split the model is trained (or evaluated) on.
        catalog: The catalog the model's SIDs cover.

    Returns:
        ``{"format", "split", "users", "items", "interactions", "catalog_sha256",
        "split_sha256"}``: the split kind, the number of users (training sequences), catalog
        items and training interactions, a SHA-256 over the sorted item ids, and a SHA-256 over
        the training sequences and the validation and test ``(user, target)`` pairs (users
        sorted, so the order the data was read in does not matter).
    """
    train = split.train.sequences
    content = {
        "kind": split.kind,
        "train": [[user, list(train[user])] for user in sorted(train)],
        "valid": sorted([ex.user_id, ex.target] for ex in split.valid),
        "test": sorted([ex.user_id, ex.target] for ex in split.test),
    }
    return {
        "format": FINGERPRINT_FORMAT,
        "split": split.kind,
        "users": len(train),
        "items": len(catalog),
        "interactions": sum(len(seq) for seq in train.values()),
        "catalog_sha256": _sha256(sorted(catalog.ids)),
        "split_sha256": _sha256(content),
    }


def fingerprint_differences(recorded: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """Human-readable differences between two fingerprints (empty when they match)."""
    diffs = []
    for key in _COMPARED:
        have, want = actual.get(key), recorded.get(key)
        if have == want:
            continue
        if key.endswith("_sha256"):
            diffs.append(
                "other catalog item ids"
                if key.startswith("catalog")
                else "other users, histories or targets"
            )
        else:
            diffs.append(f"{key} {have} (trained on {want})")
    return diffs


def check_data_fingerprint(
    recorded: dict[str, Any] | None,
    actual: dict[str, Any],
    *,
    model: str,
    data: str,
    allow_other_data: bool = False,
) -> None:
    """Refuse to evaluate a model on data other than the data it records.

    Args:
        recorded: The fingerprint the model directory records (None: saved before recllm
            recorded one; a warning is logged and the check is skipped).
        actual: :func:`data_fingerprint` of the data about to be used.
        model: The model directory, for messages.
        data: The data path or name about to be used, for messages.
        allow_other_data: Log a warning instead of raising when the fingerprints differ.

    Raises:
        UserError: The fingerprints differ and ``allow_other_data`` is False.
    """
    if not isinstance(recorded, dict) or recorded.get("format") != FINGERPRINT_FORMAT:
        logger.warning(
            "%s records no data fingerprint (saved by an older recllm, or by hand): cannot check "
            "that %s is the data it was trained on",
            model,
            data,
        )
        return
    diffs = fingerprint_differences(recorded, actual)
    if not diffs:
        return
    problem = f"not the data {model} was trained on ({'; '.join(diffs)})"
    if allow_other_data:
        logger.warning("--data %s: %s; evaluating anyway (--allow-other-data)", data, problem)
        return
    raise UserError(
        f"--data {data}",
        problem,
        "evaluate on the data the model records (leave out --data), or pass --allow-other-data "
        "to score it on this data anyway",
    )


def check_catalog(
    recorded: dict[str, Any] | None,
    catalog: Catalog,
    *,
    model: str,
    data: str,
    allow_other_data: bool = False,
    added: Collection[str] = (),
) -> None:
    """Refuse to serve a model with another catalog than it was trained on (titles and prompts
    would name other items). Only the catalog part of the fingerprint is compared: serving needs
    no split. ``added``: items added to the model after training (``recllm catalog add``); data
    whose catalog is the training catalog plus (some of) them is accepted too (the cold-start
    case: trained without some items, those added afterwards).

    Raises:
        UserError: The catalogs differ and ``allow_other_data`` is False.
    """
    if not isinstance(recorded, dict) or recorded.get("format") != FINGERPRINT_FORMAT:
        logger.warning(
            "%s records no data fingerprint: cannot check the catalog of %s", model, data
        )
        return
    if recorded.get("catalog_sha256") == _sha256(sorted(catalog.ids)):
        return
    extra = set(added)
    if extra and recorded.get("catalog_sha256") == _sha256(
        sorted(i for i in catalog.ids if i not in extra)
    ):
        return
    problem = (
        f"{data} has another catalog ({len(catalog)} items) than the {recorded.get('items')} "
        "items the model was trained on"
    )
    if allow_other_data:
        logger.warning("%s: %s (allowed by --allow-other-data)", model, problem)
        return
    raise UserError(
        f"--data {data}",
        problem,
        "serve with the data the model was trained on (leave --data out), or pass "
        "--allow-other-data",
    )
