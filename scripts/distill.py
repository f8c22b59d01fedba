"""Teacher distillation against no teacher, from the same start on the same data (issue 30).

    python scripts/distill.py --config recipes/seqlm.yaml --data ../shared/data/ml-100k \\
        --out outputs/distill_ml100k --weights 0 0.5 1 2
    python scripts/distill.py --config recipes/seqlm.yaml --data ../shared/data/amazon_p5/beauty \\
        --out outputs/distill_beauty --weights 0 1 --recllm-minutes 25

One SASRec (``--teacher-minutes``, epoch chosen on validation NDCG@10) is trained on the training
split into OUT/teacher: it is the same-run baseline and the teacher. Then one SID-sequence
decoder per weight (``recipes/seqlm.py`` with ``--distill_weight W --teacher OUT/teacher``; 0 =
the control without a teacher) into OUT/w<W>, each keeping its best epoch on the recipe's seeded
sample of validation users; ``--recipe-args`` go to every arm. The weight is chosen on that
validation Recall@10; test users are scored once (beam ``--beams``, full ranking, cached in
OUT/scores), every arm compared with the control user by user. Prints the table and the paired
differences; writes OUT/summary.json, OUT/table.md and OUT/distill.png; the last line of output
is one JSON object of the figures. A rerun reuses the teacher, the arms and the scores that
were made with the same settings.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "recipes" / "seqlm.yaml"), help="recipe YAML")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--data", default=None, help="data path (default: the YAML's)")
    p.add_argument(
        "--weights", type=float, nargs="+", default=[0.0, 1.0], help="distill weights (0 = control)"
    )
    p.add_argument("--temperature", type=float, default=1.0, help="distillation temperature")
    p.add_argument("--teacher-minutes", type=float, default=10.0, help="SASRec training budget")
    p.add_argument("--teacher-dropout", type=float, default=0.5, help="SASRec dropout")
    p.add_argument(
        "--recllm-minutes", type=float, default=None, help="each arm's budget (YAML default)"
    )
    p.add_argument("--users", type=int, default=0, help="test users scored (seeded; 0 = all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the test-user sample")
    p.add_argument("--beams", type=int, default=20, help="beam width of the test decoding")
    p.add_argument("--batch-size", type=int, default=64, help="users per decoding batch")
    p.add_argument(
        "--recipe-args",
        nargs=argparse.REMAINDER,
        default=[],
        help="flags passed to every arm's recipe after the YAML",
    )
    args = p.parse_args(argv)
    if args.beams < 10:
        p.error("--beams must be >= 10 (Recall@10 needs 10 ranked items)")
    if 0.0 not in args.weights:
        p.error("--weights must include 0: the control arm without a teacher")
    return args


def main(argv: list[str] | None = None) -> dict:
    import logging

    from recllm.bench import distill
    from recllm.bench.machine import machine_line
    from recllm.bench.paired import paired_lines
    from recllm.io import write_json_atomic, write_text_atomic

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = parse_args(argv)
    settings = distill.DistillSettings(
        **{
            **vars(args),
            "config": Path(args.config),
            "out": Path(args.out),
            "weights": tuple(args.weights),
            "recipe_args": tuple(args.recipe_args),
        }
    )
    print(f"command: python {' '.join(sys.argv)}")
    summary = {"machine": machine_line(), **distill.run(settings, ROOT)}
    out = Path(args.out)
    write_json_atomic(out / "summary.json", summary)
    text = distill.table(summary)
    write_text_atomic(out / "table.md", text + "\n")
    print(text)
    print(f"\nuser by user against the control ({summary['test_users']} test users):")
    print("\n".join(paired_lines(summary["paired_vs_control"], k=10)))
    print("\n".join(paired_lines(summary["paired_vs_control_at5"], k=5)))
    print(f"weight chosen on validation: {summary['chosen_weight']:g}")
    title = f"teacher distillation: {summary['data']} ({summary['test_users']} test users)"
    distill.plot(summary, out / "distill.png", title)
    last = {
        "data": summary["data"],
        "test_users": summary["test_users"],
        "chosen_weight": summary["chosen_weight"],
        "rows": {
            name: {k: round(v, 4) for k, v in f.items() if isinstance(v, float)}
            for name, f in summary["rows"].items()
        },
    }
    print(json.dumps(last))
    return summary


if __name__ == "__main__":
    from recllm.errors import user_errors

    with user_errors("distill"):
        main()
