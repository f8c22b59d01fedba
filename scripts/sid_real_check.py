"""Real check: build SIDs for Amazon Beauty and Scientific with every method and compare them
with the published SID files shipped beside the data.

    python scripts/sid_real_check.py --shared ../shared/data --out outputs/sid_real_check

Prints a Markdown table (items, unique codes before collision handling, collisions, largest
group, per-level utilization, seconds of the build: embeddings, served from the content-hash
cache after the first run, plus quantization) with the published rows first; writes each artifact and
``table.md`` under ``--out``. The last line is one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from recllm.bench.report import markdown_row, markdown_table
from recllm.data import DataConfig, load_rec_dataset
from recllm.sid.build import build_sid_map, write_sid_artifact
from recllm.sid.config import SIDConfig
from recllm.sid.metrics import code_metrics
from recllm.sid.sidmap import read_index_json

DATASETS = {
    "beauty": (
        "amazon_p5/beauty",
        [("LETTER (published, 4 levels)", "amazon_p5/beauty/Beauty.index.json")],
    ),
    "scientific": (
        "amazon18_scientific",
        [
            (
                "RQ-VAE (published, rqvae_native)",
                "amazon18_scientific/indexes/rqvae_native/Scientific.index.json",
            ),
            (
                "LETTER (published, letter_native)",
                "amazon18_scientific/indexes/letter_native/Scientific.index.json",
            ),
        ],
    ),
}

METHODS = [
    ("rq-kmeans", SIDConfig(method="rq-kmeans")),
    ("rq-kmeans + collab 0.3", SIDConfig(method="rq-kmeans", collab_weight=0.3)),
    ("balanced", SIDConfig(method="balanced")),
    ("balanced + collab 0.3", SIDConfig(method="balanced", collab_weight=0.3)),
    ("rq-vae", SIDConfig(method="rq-vae")),
    ("rq-vae + contrastive (PLUM)", SIDConfig(method="rq-vae", contrastive_weight=0.1)),
    ("rq-vae + collab 0.3", SIDConfig(method="rq-vae", collab_weight=0.3)),
    (
        "rq-kmeans 4 levels + collab 0.3",
        SIDConfig(method="rq-kmeans", collab_weight=0.3, levels=4),
    ),
]


HEADER = [
    "SIDs",
    "items",
    "levels",
    "unique codes (before de-dup)",
    "collisions",
    "largest group",
    "utilization per level",
    "seconds",
]


def row(name: str, m: dict, seconds: float | None) -> list:
    util = "/".join(f"{u:.2f}" for u in m["utilization"])
    sec = f"{seconds:.1f}" if seconds is not None else None
    return [
        name,
        f"{m['items']:,}",
        m["levels"],
        f"{m['unique_codes_before']:,}",
        f"{m['collisions_before']:,}",
        m["largest_group_before"],
        util,
        sec,
    ]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--shared", default="../shared/data", help="the shared data folder")
    p.add_argument("--out", default="outputs/sid_real_check")
    p.add_argument("--datasets", default="beauty,scientific")
    p.add_argument("--methods", default=",".join(n for n, _ in METHODS))
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    shared, out = Path(args.shared), Path(args.out)
    wanted = set(args.methods.split(","))
    rows: list[list] = []
    figures: dict[str, dict] = {}
    for key in args.datasets.split(","):
        rel, published = DATASETS[key]
        rows.append([f"**{key}**", "", "", "", "", "", "", ""])
        for name, index in published:
            _, codes = read_index_json(shared / index)
            m = code_metrics(codes, tuple(int(c) + 1 for c in codes.max(0)))
            rows.append(row(name, m, None))
            figures[f"{key}/{name}"] = {
                "unique": m["unique_codes_before"],
                "collisions": m["collisions_before"],
            }
        ds = load_rec_dataset(shared / rel)
        for name, cfg in METHODS:
            if name not in wanted:
                continue
            t = time.perf_counter()
            build = build_sid_map(ds, cfg, DataConfig())
            seconds = time.perf_counter() - t
            write_sid_artifact(build, out / key / name.replace(" ", "_"), overwrite=True)
            label = f"recllm {name} ({cfg.levels} x {cfg.codebook_size}, {cfg.embedding})"
            rows.append(row(label, build.metrics, seconds))
            figures[f"{key}/{name}"] = {
                "unique": build.metrics["unique_codes_before"],
                "collisions": build.metrics["collisions_before"],
                "utilization": build.metrics["utilization"],
                "seconds": round(seconds, 1),
            }
            print(markdown_row(rows[-1]), flush=True)
    table = markdown_table(HEADER, rows)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(table + "\n")
    print(table)
    print(json.dumps(figures))


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
