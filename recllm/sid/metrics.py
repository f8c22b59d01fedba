"""How good a set of codes is: codebook usage, entropy, collisions, prefix sizes, error."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recllm.sid.collisions import count_collisions


def level_usage(codes: np.ndarray, codebook_sizes: tuple[int, ...]) -> list[np.ndarray]:
    """Per level, how many items hold each code: ``(K_l,)`` counts."""
    return [np.bincount(codes[:, lv], minlength=k) for lv, k in enumerate(codebook_sizes)]


def _entropy_bits(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def code_metrics(
    codes: np.ndarray,
    codebook_sizes: tuple[int, ...],
    *,
    codes_before: np.ndarray | None = None,
    recon_error: list[float] | None = None,
) -> dict[str, object]:
    """Metrics of a code matrix, before and after collision handling.

    Args:
        codes: Final ``(N, L)`` codes.
        codebook_sizes: Codes per level of ``codes``.
        codes_before: The quantizer's codes before collision handling (default: ``codes``).
        recon_error: Reconstruction error after each quantizer level.

    Returns:
        JSON-ready dict with ``items``, ``unique_codes``, ``collisions_before``,
        ``collisions_after``, ``largest_group_before``, ``utilization`` (per level, share of
        codes used), ``entropy_bits`` and ``entropy_norm`` (per level, / log2 K), ``items_per_prefix``
        (for each prefix depth: prefixes used, mean and max items) and ``recon_error``.
    """
    before = count_collisions(codes if codes_before is None else codes_before)
    after = count_collisions(codes)
    usage = level_usage(codes, codebook_sizes)
    prefixes = []
    for depth in range(1, codes.shape[1]):
        _, counts = np.unique(codes[:, :depth], axis=0, return_counts=True)
        prefixes.append(
            {
                "depth": depth,
                "prefixes": len(counts),
                "mean": round(float(counts.mean()), 3),
                "max": int(counts.max()),
            }
        )
    return {
        "items": after.items,
        "levels": len(codebook_sizes),
        "codebook_sizes": list(codebook_sizes),
        "unique_codes": after.unique_codes,
        "collisions_before": before.collisions,
        "colliding_items_before": before.colliding_items,
        "largest_group_before": before.largest_group,
        "unique_codes_before": before.unique_codes,
        "collisions_after": after.collisions,
        "utilization": [round(float((u > 0).mean()), 4) for u in usage],
        "entropy_bits": [round(_entropy_bits(u), 4) for u in usage],
        "entropy_norm": [
            round(_entropy_bits(u) / np.log2(k), 4) if k > 1 else 1.0
            for u, k in zip(usage, codebook_sizes, strict=True)
        ],
        "items_per_prefix": prefixes,
        "recon_error": [round(float(e), 6) for e in recon_error] if recon_error else None,
    }


def plot_code_usage(
    codes: np.ndarray, codebook_sizes: tuple[int, ...], path: str | Path, title: str = ""
) -> Path:
    """PNG: for each level, items per code sorted from most to least used (a flat line is an
    evenly used codebook; a long tail of zeros is dead codes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from recllm.io import atomic_path

    usage = level_usage(codes, codebook_sizes)
    fig, axes = plt.subplots(1, len(usage), figsize=(4 * len(usage), 3.2), squeeze=False)
    for level, (ax, u) in enumerate(zip(axes[0], usage, strict=True)):
        counts = np.sort(u)[::-1]
        ax.bar(np.arange(len(counts)), counts, width=1.0, color="#3b6ea8")
        ax.axhline(len(codes) / len(counts), color="#c44", lw=1, ls="--", label="uniform")
        used = (u > 0).mean()
        ax.set_title(f"level {level}: {used:.0%} of {len(counts)} codes used")
        ax.set_xlabel("code (sorted by use)")
        ax.set_ylabel("items")
        ax.legend(loc="upper right", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(path)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return out
