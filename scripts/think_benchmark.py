"""OneRec-Think, measured fairly: no-think SFT vs think SFT vs think-ahead, one run, one split.

    python scripts/think_benchmark.py --start outputs/quickstart/model --out outputs/think_ml
    python scripts/think_benchmark.py --start DIR --out OUT --steps 300 --paths 4 --prefixes 8

From one PLUM-aligned start model (the quickstart's), with the same data, text features,
settings and training budget in both arms:

1. rationales: ``recllm reason generate --model-dir START --per-user N`` (metadata source:
   the training split only);
2. the no-think arm: ``recipes/onerec_think.py --control true`` (the same mixture without the
   reasoning rows); the think arm: ``recipes/onerec_think.py`` with them. Both take
   ``--steps`` steps of the same batch from the same start and seed. Both mixtures hold the
   catalog text task (SID -> title, year, genres), so the no-think arm sees the metadata the
   rationales are made of: the think arm has no text feature the control lacks;
3. every row scored on the same test users (``--eval-users``, 0 = all) with constrained SID beam
   search (``--beams``; invalid rate 0 by construction): the start, the no-think arm, the think
   arm answering without thinking, the think arm thinking (greedy, one rationale; and
   ``--think-rationales`` sampled ones, merged), and think-ahead: ``recllm think-ahead`` with
   the think arm as the reasoner (``--paths`` rationales, ``--prefixes`` prefixes of
   ``--depth`` levels each) whose per-user prefix sets restrict the no-think arm's trie.

Each row keeps every user's rank of the target and is compared with the no-think arm user by
user (R@10 / N@10 difference, 95% interval, p). Users/s are measured on this machine, one job
at a time. Finished parts are not run again (an arm trained with the same settings, a row
scored on the same model files, users and settings: :mod:`recllm.bench`). Writes ``OUT/summary.json`` and
``OUT/think_benchmark.png``; prints the table; the last line is one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

from recllm.bench.think import ROWS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--start", required=True, help="PLUM-aligned model directory")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--steps", type=int, default=300, help="SFT steps of each arm")
    p.add_argument("--batch", type=int, default=8, help="examples per step")
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--per-user", type=int, default=3, help="rationales per training user")
    p.add_argument("--eval-users", type=int, default=0, help="test users (0 = all)")
    p.add_argument("--beams", type=int, default=20)
    p.add_argument("--think-tokens", type=int, default=256, help="longest rationale")
    p.add_argument("--think-rationales", type=int, default=3, help="sampled rationales row")
    p.add_argument("--paths", type=int, default=4, help="think-ahead rationales per user")
    p.add_argument("--prefixes", type=int, default=8, help="think-ahead prefixes per rationale")
    p.add_argument("--depth", type=int, default=2, help="think-ahead prefix levels")
    p.add_argument(
        "--ahead-engine",
        choices=("vllm", "hf"),
        default="vllm" if importlib.util.find_spec("vllm") else "hf",
        help="engine of the think-ahead pass (default: vllm when installed; 3.4x the users/s "
        "of hf on 2 CPU cores)",
    )
    p.add_argument(
        "--think-engine",
        choices=("hf", "vllm"),
        default="hf",
        help="engine of the thinking rows (think_greedy, think_sampled); the other rows decode "
        "on transformers. A vllm row says so in its label and its cache file",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--rows",
        nargs="+",
        default=list(ROWS),
        choices=ROWS,
        help="rows to score (default: all); nothink is always scored (the paired baseline)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    import logging

    from recllm.bench import think
    from recllm.bench.arms import arm_minutes
    from recllm.bench.machine import machine_line
    from recllm.io import write_json_atomic

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rationales = think.generate_rationales(Path(args.start), args.per_user, out / "rationales")
    settings = think.ThinkSettings(
        Path(args.start), args.steps, args.batch, args.learning_rate, args.seed
    )
    arms = think.train_arms(settings, out, rationales)
    rows, record, users = think.score_rows(args, out, arms)
    summary = {
        "machine": machine_line(),
        "start": str(args.start),
        "users": users,
        "beams": args.beams,
        "settings": vars(args),
        "train_minutes": arm_minutes({arm: out / arm for arm in ("nothink", "think")}),
        "think_ahead": None
        if record is None
        else {k: v for k, v in record.items() if k not in ("data", "versions")},
        "rows": rows,
    }
    write_json_atomic(out / "summary.json", summary)
    print(think.table(rows))
    think.plot(summary, out / "think_benchmark.png")
    print(json.dumps(think.last_line(summary)))
    return summary


if __name__ == "__main__":
    main()
