"""Two or more models compared user by user, from the ranked lists `recllm eval --predictions`
wrote: R@k and N@k of each, and each one's paired difference from the first, with its 95% interval
and p (is the change more than the noise of these users?).

    recllm eval --model outputs/a/model --predictions outputs/a/test.jsonl
    recllm eval --model outputs/b/model --predictions outputs/b/test.jsonl
    python scripts/paired.py --data ../shared/data/ml-100k \\
        outputs/a/test.jsonl outputs/b/test.jsonl --names control teacher

``--sasrec DIR`` adds a saved SASRec (such as the teacher a recipe trained into OUTPUT_DIR/teacher)
as a row, ranking the same users over the full catalog. The targets come from splitting ``--data`` as the models were evaluated (``--split-kind``,
``--split``); every file must rank the same users. The last line of output is one JSON object:
``{"users": N, "rows": {name: {"R@k", "N@k"}}, "paired_vs_base": {name: {...}}}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("files", nargs="+", help="predictions files (.jsonl); the first is the base")
    p.add_argument(
        "--sasrec",
        nargs="+",
        default=[],
        help="SASRec artifacts (e.g. a recipe's OUTPUT_DIR/teacher): each ranks the same users "
        "over the full catalog and joins as a row",
    )
    p.add_argument("--data", required=True, help="the dataset the models were evaluated on")
    p.add_argument("--split", choices=("test", "valid"), default="test")
    p.add_argument("--split-kind", default="loo", help="how the dataset was split (default loo)")
    p.add_argument(
        "--names", nargs="+", default=None, help="names of the files' rows (default: file stems)"
    )
    p.add_argument("--k", type=int, default=10, help="cut-off (default 10)")
    args = p.parse_args(argv)
    if len(args.files) + len(args.sasrec) < 2:
        p.error("give two rows at least: the base file, and a second file or --sasrec DIR")
    if args.names is not None and len(args.names) != len(args.files):
        p.error(f"--names has {len(args.names)} names for {len(args.files)} files")
    names = args.names or [Path(f).stem for f in args.files]
    if len(set(names)) != len(names):
        p.error(f"row names {names} repeat: give each file its own with --names")
    args.names = names
    return args


def read_predictions(path: str | Path) -> dict[str, list[str | None]]:
    """``{user: ranked items}`` of one ``--predictions`` file.

    Raises:
        UserError: No such file, a line that is not ``{"user": ..., "items": [...]}``, or a user
            listed twice.
    """
    from recllm.errors import UserError

    p = Path(path)
    if not p.is_file():
        raise UserError(str(p), "no such file", "write it with `recllm eval --predictions FILE`")
    out: dict[str, list[str | None]] = {}
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            user, items = str(row["user"]), row["items"]
            if not isinstance(items, list):
                raise TypeError("items is not a list")
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(
                f"{p}:{n}",
                f'not a {{"user": ID, "items": [...]}} line ({e})',
                "pass the file `recllm eval --predictions` wrote",
            ) from None
        if user in out:
            raise UserError(f"{p}:{n}", f"user {user} listed twice", "one line per user")
        out[user] = items
    return out


def main(argv: list[str] | None = None) -> dict:
    from recllm.bench.paired import paired_lines, paired_vs
    from recllm.data import DataConfig, load_rec_dataset, split_dataset
    from recllm.errors import UserError
    from recllm.eval.metrics import RankingMetrics
    from recllm.eval.report import target_ranks

    args = parse_args(argv)
    names = args.names
    preds = [read_predictions(f) for f in args.files]
    users = set(preds[0])
    for f, p in zip(args.files[1:], preds[1:], strict=True):
        if set(p) != users:  # the same users, or the differences are not paired
            raise UserError(
                f,
                f"ranks {len(p)} users, {len(set(p) ^ users)} of them not as in {args.files[0]}",
                "evaluate every model on the same users (same --max-users, same data)",
            )
    cfg = DataConfig(data_path=args.data, split=args.split_kind)
    dataset = load_rec_dataset(config=cfg)
    split = split_dataset(dataset, cfg)
    catalog = dataset.catalog.ids
    examples = [ex for ex in getattr(split, args.split) if ex.user_id in users]
    if len(examples) != len(users):
        raise UserError(
            args.files[0],
            f"{len(users) - len(examples)} of its users have no {args.split} target in {args.data}",
            "pass the --data and --split-kind the models were evaluated on",
        )
    all_lists = {
        name: [p[ex.user_id] for ex in examples] for name, p in zip(names, preds, strict=True)
    }
    for directory in args.sasrec:
        from recllm.baselines.sasrec import load_sasrec
        from recllm.bench.distill import sasrec_lists

        model, _ = load_sasrec(directory)
        all_lists[f"SASRec {Path(directory).parent.name}/{Path(directory).name}"] = sasrec_lists(
            model, examples, top=args.k
        )
    ranks, rows = {}, {}
    for name, lists in all_lists.items():
        ranks[name] = target_ranks([ex.target for ex in examples], lists)
        metrics = RankingMetrics(catalog)
        for items, ex in zip(lists, examples, strict=True):
            metrics.add(items, ex.target)
        got = metrics.compute((args.k,))
        rows[name] = {
            f"R@{args.k}": round(got[f"recall@{args.k}"], 5),
            f"N@{args.k}": round(got[f"ndcg@{args.k}"], 5),
        }
    paired = paired_vs(ranks, names[0], k=args.k)
    print(f"{len(examples)} {args.split} users of {args.data}")
    width = max(map(len, rows)) + 2
    for name, r in rows.items():
        print(
            f"  {name:<{width}} R@{args.k} {r[f'R@{args.k}']:.4f}  N@{args.k} {r[f'N@{args.k}']:.4f}"
        )
    print(f"paired differences from {names[0]}:")
    print("\n".join(paired_lines(paired, k=args.k, width=width)))
    summary = {
        "users": len(examples),
        "rows": rows,
        "paired_vs_base": {n: c for n, c in paired.items() if c is not None},
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    from recllm.errors import user_errors

    with user_errors("paired"):
        main()
