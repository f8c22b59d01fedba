"""The list benchmark: N-item lists against each user's next session (issue 32 item 4).

    python scripts/lists.py --kind chat --config recipes/quickstart.yaml --out outputs/lists_ml
    python scripts/lists.py --kind seqlm --config recipes/seqlm.yaml \
        --data ../shared/data/amazon_p5/beauty --out outputs/lists_beauty \
        --recipe-args --time_budget_minutes 25

The data is split by next session (``--split session``: each user's last N items, ``--n``, are
the test session, the N before the validation session, the rest trains; users with fewer than
2N + 1 items are skipped and counted). The recipe (``--kind chat``: recipes/plum_sft.py;
``seqlm``: recipes/seqlm.py, one decoder) trains twice on the training part: the next-item
model (the YAML as it is) into ``OUT/next_item`` and the slate model (plus the session task:
``mixture.rec_session`` / seqlm windows of max_items + N items) into ``OUT/slate``; a SASRec
teacher the first run trained (seqlm's distill_weight) teaches the second too. Rows, on the
same test users (``--users``: a seeded sample, 0 = all): the slate model's best slate
(slate_search), the next-item model's top N beams, the next-item model's best slate (the
exclusion inside the constraint), with ``--spread`` the two slates again with each item under its
own first SID code, the slate model with a diversity penalty chosen on ``--valid-users`` validation
sessions among ``--penalties`` (the most set recall at the next-item top N's diversity or more),
SASRec's top N, popularity (recllm.bench.lists). Figures: set
Recall@N and NDCG@N against the session, SID and category diversity, repeat rate
(recllm.eval.lists). Finished parts are not run again.

Writes ``OUT/summary.json``, ``OUT/table.md`` and ``OUT/lists.png`` (recall over SID diversity);
prints the table; the last line is one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--kind", choices=("chat", "seqlm"), required=True, help="recllm model kind")
    p.add_argument("--config", required=True, help="the recipe YAML")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--data", default=None, help="data path (default: the YAML's)")
    p.add_argument("--max-users", type=int, default=None, help="first N users of the data")
    p.add_argument("--n", type=int, default=5, help="items per session and per list")
    p.add_argument("--users", type=int, default=0, help="test users scored (seeded; 0 = all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the user sample and SASRec")
    p.add_argument("--beams", type=int, default=10, help="slate beams and next-item beams (>= 10)")
    p.add_argument("--batch-size", type=int, default=16, help="users per decoding batch")
    p.add_argument(
        "--session-weight",
        type=float,
        default=1.0,
        help="mixture.rec_session of the chat slate model",
    )
    p.add_argument("--sasrec-minutes", type=float, default=5.0, help="SASRec training budget")
    p.add_argument(
        "--penalties",
        type=float,
        nargs="*",
        default=[0.5, 1.0, 2.0, 4.0],
        help="diversity penalties tried for the slate model's penalty row (besides 0); none: no "
        "such row",
    )
    p.add_argument(
        "--valid-users",
        type=int,
        default=200,
        help="validation sessions (seeded by --seed) that choose the penalty (0: no such row)",
    )
    p.add_argument(
        "--spread",
        dest="spread_rows",
        action="store_true",
        help="also the two spread rows (each slate item under its own first SID code)",
    )
    p.add_argument(
        "--recipe-args",
        nargs=argparse.REMAINDER,
        default=[],
        help="flags passed to both recipe runs after the YAML (not data keys: use --data, "
        "--max-users)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    import logging

    from recllm.bench import lists
    from recllm.bench.machine import machine_line
    from recllm.io import write_json_atomic

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = parse_args(argv)
    settings = lists.ListsSettings(  # every flag is a settings field of the same name
        **{
            **vars(args),
            "config": Path(args.config),
            "out": Path(args.out),
            "recipe_args": tuple(args.recipe_args),
            "penalties": tuple(args.penalties),
        },
    )
    summary = {"machine": machine_line(), **lists.run(settings, ROOT)}
    out = Path(args.out)
    write_json_atomic(out / "summary.json", summary)
    n = summary["n"]
    text = lists.table(summary["rows"], n)
    (out / "table.md").write_text(text + "\n", encoding="utf-8")
    print(text)
    title = f"lists of {n}: {summary['data']} ({summary['test_users']} test users)"
    lists.plot(summary["rows"], out / "lists.png", title, n)
    last = {
        name: {k: v for k, v in f.items() if k != "note"} for name, f in summary["rows"].items()
    }
    print(json.dumps({"n": n, "test_users": summary["test_users"], "rows": last}))
    return summary


if __name__ == "__main__":
    main()
