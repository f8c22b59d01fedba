"""The cold-start benchmark: items held out of training, recommended after `catalog add`.

    python scripts/cold_start.py --kind chat --config recipes/quickstart.yaml --out outputs/cold_ml
    python scripts/cold_start.py --kind seqlm --config recipes/seqlm.yaml \
        --data ../shared/data/beauty --out outputs/cold_beauty --recipe-args --time_budget_minutes 25

A seeded share of the items (``--share``, 10%) is held out of training entirely: their
interactions leave the training and validation histories and they leave the catalog the SIDs and
the model are built from (``DataConfig.holdout_items``, so the recipe itself trains on the
reduced data); the test examples are the usual leave-one-out ones. Test users whose target is a
held-out item are the cold set, all others the warm set. The recipe (``--kind chat``:
recipes/plum_sft.py; ``seqlm``: recipes/seqlm.py with one decoder) trains once into
``OUT/model_run``; the held-out items are then added with the frozen SID quantizer
(``recllm catalog add``'s code, no training) and every row is ranked on the same test users:
recllm without and with the new items (and after ``--warmup-steps``, chat models), text-KNN,
popularity and SASRec (recllm.bench.cold_start). Finished parts are not run again.

Writes ``OUT/summary.json``, ``OUT/cold_start.png`` and ``OUT/table.md``; prints the table; the
last line is one JSON object of the figures.
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
    p.add_argument("--share", type=float, default=0.1, help="share of items held out")
    p.add_argument("--seed", type=int, default=0, help="seed of the held-out items and SASRec")
    p.add_argument("--beams", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=32, help="users per decoding batch")
    p.add_argument("--users", type=int, default=0, help="test users scored (0 = all)")
    p.add_argument(
        "--bonus-users",
        type=int,
        default=3000,
        help="validation users (a seeded sample; 0 = all) the new-item bonus is chosen on",
    )
    p.add_argument(
        "--warm-tolerance",
        type=float,
        default=0.05,
        help="the second bonus row: the most validation cold R@10 with warm R@10 within this "
        "share of the trained items' list",
    )
    p.add_argument("--warmup-steps", type=int, default=0, help="warm-up row (chat models)")
    p.add_argument(
        "--no-text-head",
        dest="text_head",
        action="store_false",
        help="skip the text head rows (recllm.decode.text_head, fitted on the frozen model)",
    )
    p.add_argument(
        "--head-windows", type=int, default=3, help="text head: training windows per user"
    )
    p.add_argument("--sasrec-minutes", type=float, default=5.0, help="SASRec training budget")
    p.add_argument(
        "--recipe-args",
        nargs=argparse.REMAINDER,
        default=[],
        help="flags passed to the recipe after its YAML (not data keys: use --data, --max-users)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    import logging

    from recllm.bench import cold_start
    from recllm.bench.machine import machine_line
    from recllm.io import write_json_atomic

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = parse_args(argv)
    settings = cold_start.ColdStartSettings(  # every flag is a settings field of the same name
        **{
            **vars(args),
            "config": Path(args.config),
            "out": Path(args.out),
            "recipe_args": tuple(args.recipe_args),
        },
    )
    summary = {"machine": machine_line(), **cold_start.run(settings, ROOT)}
    out = Path(args.out)
    write_json_atomic(out / "summary.json", summary)
    text = cold_start.table(summary["rows"])
    (out / "table.md").write_text(text + "\n", encoding="utf-8")
    print(text)
    title = f"cold start: {summary['data']} ({summary['cold_users']} cold test users)"
    cold_start.plot(summary["rows"], out / "cold_start.png", title)
    if "bonus" in summary:
        cold_start.plot_bonus(summary["bonus"], out / "bonus.png", summary["data"])
    last = {
        name: {k: v for k, v in f.items() if k != "note"} for name, f in summary["rows"].items()
    }
    print(json.dumps({"cold_users": summary["cold_users"], "rows": last}))
    return summary


if __name__ == "__main__":
    main()
