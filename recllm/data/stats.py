"""Dataset statistics: the numbers a user checks before training anything."""

from __future__ import annotations

import numpy as np

from recllm.data.types import RecDataset

PERCENTILES = (5, 25, 50, 75, 95)


def dataset_stats(dataset: RecDataset) -> dict[str, object]:
    """Users, items, interactions, density and history-length percentiles.

    Percentiles use numpy's default (linear) interpolation.
    """
    lengths = np.asarray(dataset.interactions.lengths(), dtype=np.float64)
    users, items = dataset.interactions.num_users, len(dataset.catalog)
    interactions = int(lengths.sum())
    history = {"min": int(lengths.min()), "mean": round(float(lengths.mean()), 2)}
    for p in PERCENTILES:
        history[f"p{p}"] = round(float(np.percentile(lengths, p)), 2)
    history["max"] = int(lengths.max())
    return {
        "name": dataset.name,
        "format": dataset.format,
        "source": dataset.source,
        "users": users,
        "items": items,
        "interactions": interactions,
        "density": round(interactions / (users * items), 6),
        "has_timestamps": dataset.interactions.timestamps is not None,
        "text_fields": list(dataset.catalog.text_fields),
        "history_length": history,
        "dropped": dict(dataset.dropped),
    }


def format_stats(stats: dict[str, object]) -> str:
    """A short human-readable table of :func:`dataset_stats`."""
    h = stats["history_length"]
    assert isinstance(h, dict)
    pct = "  ".join(f"{k}={v:g}" for k, v in h.items())
    lines = [
        f"dataset       {stats['name']}  ({stats['format']}: {stats['source']})",
        f"users         {stats['users']:,}",
        f"items         {stats['items']:,}",
        f"interactions  {stats['interactions']:,}",
        f"density       {stats['density']:.4%}",
        f"history len   {pct}",
        f"timestamps    {'yes' if stats['has_timestamps'] else 'no (file order)'}",
        f"text fields   {', '.join(stats['text_fields']) or '(none)'}",  # type: ignore[arg-type]
    ]
    return "\n".join(lines)
