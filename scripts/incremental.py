"""Incremental training against a stale and a retrained model, on a temporal split.

    python scripts/incremental.py --out outputs/incremental                 # ml-100k, quickstart
    python scripts/incremental.py --out outputs/incremental --update-days 7 --replay-ratio 1 \\
        --eval-users 200 --max_steps 60                                     # recipe keys pass through

The recipe (``--config``, default ``recipes/quickstart.yaml``) runs three times in this process
on a temporal split (``--split temporal``; ``--valid_ratio``/``--test_ratio`` as given, defaults
0.02 / 0.1): the stale model on the base period (``--train_until T``, T = ``--update-days``
before the last training event), the incremental model (the stale one continued with
``--init_model`` on the update period plus ``--replay-ratio`` x as many older examples, one
epoch: ``--update-epochs``), and a model retrained from the pretrained checkpoint on the whole
training period with the stale model's steps. All three share the stale run's SID map and seed.
Each ranks the same last-period users (each one's first test interaction; ``--eval-users``, a
seeded sample) with trie-constrained beam search (beam 10); most-popular (training period) is
scored beside them. Items first seen in the update period have codes already (the SID map covers
the data's catalog), so nothing needs ``recllm catalog add`` here; the count is reported.

Writes ``summary.json`` into ``--out``; a row already in it is not run again (delete the file to
start over). The last line of output is one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from recllm.bench.incremental import (
    ROWS,
    Stopwatch,
    last_period_users,
    score_model,
    table_lines,
    temporal_periods,
)

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "recipes" / "quickstart.yaml"), help="recipe")
    p.add_argument("--out", default="outputs/incremental", help="output directory")
    p.add_argument("--update-days", type=float, default=7.0, help="length of the update period")
    p.add_argument("--replay-ratio", type=float, default=1.0, help="older examples per new one")
    p.add_argument("--update-epochs", type=float, default=1.0, help="epochs of the update")
    p.add_argument("--eval-users", type=int, default=200, help="last-period users (0 = all)")
    p.add_argument("--eval-seed", type=int, default=0, help="seed of the users' sample")
    return p.parse_known_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args, overrides = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import torch

    from recllm.baselines.sasrec import run_teacher
    from recllm.bench.curves import most_popular
    from recllm.bench.machine import cpu_name
    from recllm.data import load_rec_dataset, split_dataset
    from recllm.eval.run import evaluate_recommender
    from recllm.io import write_json_atomic
    from recllm.train.plum import parse_recipe_args, run_plum

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"command: python {' '.join(sys.argv)}")
    print(f"machine: {cpu_name()}, torch {torch.__version__} ({torch.get_num_threads()} threads)")
    split_flags = ["--split", "temporal", "--valid_ratio", "0.02", "--test_ratio", "0.1"]
    base_argv = ["--config", args.config, *split_flags, *overrides]

    def configs(name: str, *extra: str):
        return parse_recipe_args(
            [*base_argv, "--output_dir", str(out / name), "--overwrite_output_dir", "true", *extra]
        )

    _, data_cfg, _, _, sft_cfg, _ = configs("stale")
    dataset = load_rec_dataset(config=data_cfg)
    split = split_dataset(dataset, data_cfg)
    periods = temporal_periods(split, args.update_days)
    users = last_period_users(split, args.eval_users, args.eval_seed)
    path = out / "summary.json"
    summary = json.loads(path.read_text()) if path.is_file() else {}
    summary.update(
        command="python " + " ".join(sys.argv),
        machine=cpu_name(),
        data=data_cfg.data_path,
        periods=periods.to_dict(),
        users=len(users),
        eval_seed=args.eval_seed,
        replay_ratio=args.replay_ratio,
        update_epochs=args.update_epochs,
    )
    summary.setdefault("rows", {})
    summary["rows"]["popular"] = {**most_popular(split, users, dataset.catalog), "minutes": None}
    since = str(periods.t_update)
    stale_dir = out / "stale" / "model"
    extra = {
        "stale": ["--train_until", since],
        "incremental": [
            *("--init_model", str(stale_dir), "--train_since", since),
            *("--replay_ratio", str(args.replay_ratio), "--max_steps", "-1"),
            *("--num_train_epochs", str(args.update_epochs), "--warmup_steps", "0"),
        ],
        "scratch": ["--sid_map", str(out / "stale" / "sids")],
    }
    for name in ROWS:
        if name in summary["rows"]:
            print(f"{name}: done in an earlier run ({path})")
            continue
        with Stopwatch() as watch:
            model_dir = run_plum(*configs(name, *extra[name]), teacher_provider=run_teacher)
        log = json.loads((out / name / "train_log.json").read_text())
        steps = max((h.get("step", 0) for h in log.get("sft", [])), default=None)
        row = score_model(model_dir, users, dataset.catalog, evaluate_recommender)
        summary["rows"][name] = {
            **row,
            "minutes": watch.minutes,
            "train_examples": log["train_examples"],
            "steps": steps,
            **({"period": log["period"]} if "period" in log else {}),
        }
        write_json_atomic(path, summary)
        print(f"{name}: {summary['rows'][name]}", flush=True)
    summary["sft_max_steps"] = sft_cfg.max_steps
    write_json_atomic(path, summary)
    print(
        f"\n{data_cfg.data_path}: update period {args.update_days:g} days "
        f"({periods.update_events} interactions of {periods.update_users} users, "
        f"{len(periods.new_items)} items first seen there); {len(users)} last-period users"
    )
    print("\n".join(table_lines(summary)))
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
