"""Preference alignment, measured: an SFT model against itself after DPO, AW-SFT and GRPO.

    python scripts/align_benchmark.py --sft outputs/align_beauty/sft/model --out outputs/align_beauty
    python scripts/align_benchmark.py --sft DIR --out OUT --seeds 0 1 --stages dpo awsft grpo \\
        --dpo-args "--rounds 3 --learning_rate 1e-4" --eval-users 0 --sasrec-minutes 10
    python scripts/align_benchmark.py --replot OUT                     # the PNG and table again

One run, one split, one reward model, every row scored on the same test users:

1. the reward model: SASRec trained on the TRAINING split of the SFT model's data (epoch chosen
   on validation users, as ``scripts/benchmark.py`` does), saved in ``OUT/reward_model`` and
   given to every stage with ``--reward_model``; it is also scored on the test users, as the
   same-run SASRec row;
2. the SFT start, scored;
3. for each ``--seeds`` seed and ``--stages`` stage, the recipe (``recipes/<stage>.py`` through
   ``accelerate launch``, its YAML, the script's defaults for the model kind, then
   ``--<stage>-args``) from the SFT start into ``OUT/<stage>_seed<S>``; DPO's every round, and
   the final model of the others, scored. Minutes are the recipe's own (mining included).

Scoring is ``recllm.eval.run.evaluate_recommender`` (constrained SID beam search, ``--beams``
wide, the trie: invalid rate 0) on ``--eval-users`` test users (0 = all; else a seeded sample).
Nothing is selected on the test split: the stage settings come from validation runs
(``--split valid``). Finished parts are not run again (a stage trained with the same settings,
an evaluation of the same model files, users and beams: :mod:`recllm.bench`), so a stopped run
goes on where it stopped; a changed setting trains and scores again.

Every scored model also keeps each user's rank of the target (in its evaluation JSON), so each
row is compared with the SFT start user by user: the difference in R@10 and N@10 with its 95%
interval and p-value (``paired_vs_sft`` in the summary). Two seeds of a stage show the seed noise;
the paired interval shows the noise of the users.

Writes ``OUT/eval/<split><users>_b<beams>/*.json`` (each with the key it was scored under),
``OUT/summary.json`` and ``OUT/align_benchmark.png`` (R@10 and N@10 of every row, the SFT start and SASRec as lines);
prints the table; the last line of output is one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from recllm.bench.align import DEFAULTS, STAGES, AlignBench, last_line, plot, table


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sft", help="the SFT model directory (recipes/seqlm.py or plum_sft.py)")
    p.add_argument("--out", default="outputs/align_benchmark", help="output directory")
    p.add_argument(
        "--stages", nargs="*", default=list(STAGES), choices=STAGES, help="none: the start only"
    )
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="one run per stage each")
    for stage in STAGES:
        p.add_argument(f"--{stage}-args", default="", help=f"extra recipes/{stage}.py flags")
    p.add_argument("--reward", default="sasrec=1.0", help="every stage's reward (name=weight)")
    p.add_argument(
        "--reward-model", default=None, help="a SASRec artifact to use (default: train one)"
    )
    p.add_argument("--sasrec-minutes", type=float, default=10.0, help="reward model budget")
    p.add_argument("--sasrec-dropout", type=float, default=0.5, help="(0.5: sparse Amazon data)")
    p.add_argument("--sasrec-batch", type=int, default=64, help="SASRec sequences per step")
    p.add_argument("--split", default="test", choices=("test", "valid"), help="users scored")
    p.add_argument("--eval-users", type=int, default=0, help="users scored (0 = all)")
    p.add_argument("--eval-seed", type=int, default=0, help="seed of that sample")
    p.add_argument("--beams", type=int, default=20, help="beam width of the scoring")
    p.add_argument("--replot", default=None, help="only redraw OUT's table and PNG")
    args = p.parse_args(argv)
    if args.replot is None and not args.sft:
        p.error("--sft is required (or --replot OUT)")
    return args


def run(args: argparse.Namespace) -> dict:
    """Train what is missing, score every row; the summary (written to OUT/summary.json)."""
    from recllm.bench.machine import machine_line
    from recllm.bench.paired import paired_vs
    from recllm.io import write_json_atomic

    bench = AlignBench(
        args.sft,
        args.out,
        split=args.split,
        users=args.eval_users,
        seed=args.eval_seed,
        beams=args.beams,
    )
    rm_dir = bench.reward_model(
        args.reward_model, args.sasrec_minutes, args.sasrec_dropout, args.sasrec_batch
    )
    bench.score("SFT start", "sft", Path(args.sft), None)
    for seed in args.seeds:
        for stage in args.stages:
            extra = getattr(args, f"{stage}_args")
            out = bench.run_stage(stage, seed, rm_dir, args.reward, extra)
            bench.stage_rows(stage, seed, out)
    paired = {k: v for k, v in paired_vs(bench.ranks, "SFT start").items() if v is not None}
    summary = {
        "data": bench.data_fields.get("data_path"),
        "paired_vs_sft": paired,
        "published": bench.published(),
        "sft": str(args.sft),
        "model_kind": bench.spec.style,
        "split": args.split,
        "users": len(bench.users),
        "beams": args.beams,
        "reward": args.reward,
        "seeds": args.seeds,
        "stage_args": {s: getattr(args, f"{s}_args") for s in args.stages},
        "defaults": DEFAULTS.get(bench.spec.style, {}),
        "machine": machine_line(),
        "command": shlex.join([sys.executable, *sys.argv]),
        "rows": bench.rows,
    }
    write_json_atomic(bench.out / "summary.json", summary)
    return summary


def main(argv: list[str] | None = None) -> dict:
    import logging

    from recllm.bench.paired import paired_lines

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = parse_args(argv)
    if args.replot:
        out = Path(args.replot)
        summary = json.loads((out / "summary.json").read_text())
    else:
        out, summary = Path(args.out), run(args)
    plot(summary, out / "align_benchmark.png")
    print(f"\n{summary['data']}, {summary['users']} {summary['split']} users:")
    print(table({**summary["rows"], **summary.get("published", {})}))
    if summary.get("paired_vs_sft"):
        print("\nagainst the SFT start, same users (95% interval of the difference, p):")
        print("\n".join(paired_lines(summary["paired_vs_sft"])))
    figures = last_line(summary)
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
