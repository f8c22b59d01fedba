"""Two or more models compared user by user, from the ranked lists `recllm eval --predictions`
wrote: R@k and N@k of each, and each one's paired difference from the first, with its 95% interval
and p (is the change more than the noise of these users?).

    recllm eval --model outputs/a/model --predictions outputs/a/test.jsonl
    recllm eval --model outputs/b/model --predictions outputs/b/test.jsonl
    python scripts/paired.py --data ../shared/data/ml-100k \\
        outputs/a/test.jsonl outputs/b/test.jsonl --names control teacher

``--sasrec DIR`` adds a saved SASRec (such as the teacher a recipe trained into OUTPUT_DIR/teacher)
as a row, ranking the same users over the full catalog. The targets come from splitting ``--data``
as the models were evaluated (``--split-kind``, ``--split``); every file must rank the same users.

``--by-popularity`` splits the users by how often their target occurs in the training part (0,
1-4, 5-19, 20-99, 100 or more times) and gives every row's R@k within each group, and each group's
share of the hits: where one model finds targets that another misses, on the head of the catalog
or its tail. The last line of output is one JSON object:
``{"users": N, "rows": {name: {"R@k", "N@k"}}, "paired_vs_base": {name: {...}},
"by_popularity": [{"bucket", "users", "R@k": {name: ...}}]}`` (the last key with the flag only).
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
    p.add_argument(
        "--by-popularity",
        action="store_true",
        help="R@k per group of users by their target's count in the training part",
    )
    p.add_argument(
        "--plot", default=None, help="with --by-popularity: a PNG of R@k per group and row"
    )
    args = p.parse_args(argv)
    if args.plot and not args.by_popularity:
        p.error("--plot draws the groups of --by-popularity: add --by-popularity")
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


#: Lower edges of the groups of ``--by-popularity``: a target's count in the training part.
POPULARITY_EDGES = (0, 1, 5, 20, 100)


def popularity_groups(
    train: dict[str, list[str]], targets: list[str], edges: tuple[int, ...] = POPULARITY_EDGES
) -> list[tuple[str, list[int]]]:
    """The users' indices grouped by their target's count in the training sequences ``train``:
    one ``(label, indices)`` per group of ``edges`` (lower bounds), empty groups included."""
    from collections import Counter

    counts = Counter(item for seq in train.values() for item in seq)
    labels = [
        f"{lo}" if hi == lo + 1 else (f"{lo}-{hi - 1}" if hi is not None else f"{lo}+")
        for lo, hi in zip(edges, (*edges[1:], None), strict=True)
    ]
    groups: list[list[int]] = [[] for _ in edges]
    for i, target in enumerate(targets):
        n = counts.get(target, 0)
        groups[max(g for g, lo in enumerate(edges) if n >= lo)].append(i)
    return list(zip(labels, groups, strict=True))


def by_popularity(
    groups: list[tuple[str, list[int]]], ranks: dict[str, list[int]], k: int
) -> list[dict]:
    """Per group: its users, and every row's R@k on them and share of that row's hits."""
    totals = {name: sum(1 for x in r if 0 < x <= k) for name, r in ranks.items()}
    out = []
    for label, idx in groups:
        row: dict = {"bucket": label, "users": len(idx), f"R@{k}": {}, "hit_share": {}}
        for name, r in ranks.items():
            hits = sum(1 for i in idx if 0 < r[i] <= k)
            total = totals[name]
            row[f"R@{k}"][name] = round(hits / len(idx), 5) if idx else None
            row["hit_share"][name] = round(hits / total, 4) if total else None
        out.append(row)
    return out


def plot_groups(groups: list[dict], k: int, path: str | Path, title: str) -> None:
    """Grouped bars: R@k of every row within each popularity group (empty groups left out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from recllm.io import atomic_path

    shown = [g for g in groups if g["users"]]
    names = list(shown[0][f"R@{k}"])
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(1.6 * len(shown) + 2.5, 3.8))
    for j, name in enumerate(names):
        xs = [i + (j - (len(names) - 1) / 2) * width for i in range(len(shown))]
        ax.bar(xs, [g[f"R@{k}"][name] for g in shown], width, label=name)
    ax.set_xticks(
        range(len(shown)), [f"{g['bucket']}\n({g['users']} users)" for g in shown], fontsize=8
    )
    ax.set_xlabel("the target's interactions in the training part")
    ax.set_ylabel(f"Recall@{k}")
    ax.set_title(title, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


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
    if args.by_popularity:
        groups = popularity_groups(split.train.sequences, [ex.target for ex in examples])
        summary["by_popularity"] = by_popularity(groups, ranks, args.k)
        print(f"R@{args.k} by the target's count in the training part (users; share of hits):")
        for g in summary["by_popularity"]:
            cells = "  ".join(
                f"{name} {'-' if v is None else format(v, '.4f')}"
                for name, v in g[f"R@{args.k}"].items()
            )
            print(f"  {g['bucket']:>7} ({g['users']} users): {cells}")
        if args.plot:
            title = f"{args.data}: {len(examples)} {args.split} users, R@{args.k} by popularity"
            plot_groups(summary["by_popularity"], args.k, args.plot, title)
            print(f"plot: {args.plot}")
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    from recllm.errors import user_errors

    with user_errors("paired"):
        main()
