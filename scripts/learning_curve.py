"""The PLUM recipe's learning curve: Recall@10 / NDCG@10 of the model as it trains, beside most-popular.

    python scripts/learning_curve.py --config recipes/quickstart.yaml --every 200 \
        --eval-users 943 --out outputs/curve --max_steps 800        # recipe keys pass through
    python scripts/learning_curve.py --replot outputs/curve/curve.json   # the PNG again

Runs ``recllm.train.plum.run_plum`` with the YAML (and any ``--key value`` recipe overrides)
and, every ``--every`` SFT steps and at the last one, ranks the first ``--eval-users`` test
users (a seeded random sample with ``--eval-seed``) with trie-constrained beam search (beam
10) on the model as it is, in float32. The
evaluation time is left out of the training minutes. Most-popular (the 10 items most frequent
in the training split) is scored on the same users. Writes ``curve.json`` and ``curve.png``
(R@10 and N@10 against training minutes) into ``--out``; the last line of output is one JSON
object of the curve. Machine, threads and the command are printed first: minutes depend on the
CPU (``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 ... --bf16 false`` approximates a CPU
without AVX512-BF16).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
from pathlib import Path

from recllm.bench.curves import plot_curve


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", default="recipes/quickstart.yaml", help="recipe YAML")
    p.add_argument("--every", type=int, default=100, help="evaluate every N SFT steps")
    p.add_argument("--eval-users", type=int, default=200, help="first N test users (0 = all)")
    p.add_argument(
        "--eval-seed", type=int, default=None, help="a seeded random sample of --eval-users instead"
    )
    p.add_argument("--out", default="outputs/learning_curve", help="curve.json + curve.png")
    p.add_argument("--replot", default=None, help="only redraw the PNG of this curve.json")
    args, recipe_args = p.parse_known_args()
    logging.basicConfig(level=logging.WARNING)
    if args.replot:
        src = Path(args.replot)
        plot_curve(json.loads(src.read_text()), src.with_suffix(".png"))
        print(f"wrote {src.with_suffix('.png')}")
        return

    import torch

    from recllm.baselines.sasrec import run_teacher
    from recllm.bench.curves import CurveProbe, most_popular
    from recllm.data import load_rec_dataset, split_dataset
    from recllm.eval.run import select_users
    from recllm.io import write_json_atomic
    from recllm.tasks.prompting import PromptSpec
    from recllm.train.plum import parse_recipe_args, run_plum

    print(f"command: python {' '.join(sys.argv)}")
    env = {
        k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA") if k in os.environ
    }
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"ATen {torch.backends.cpu.get_cpu_capability()} {env}"
    )
    configs = parse_recipe_args(["--config", args.config, *recipe_args])
    plum, data_cfg, _, task_cfg, sft_cfg, _ = configs
    sid_dir = Path(plum.sid_map) if plum.sid_map else Path(sft_cfg.output_dir) / "sids"
    dataset = load_rec_dataset(config=data_cfg)
    split = split_dataset(dataset, data_cfg)
    users = select_users(split.test, args.eval_users, args.eval_seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {
        "title": f"{Path(args.config).name} {' '.join(recipe_args)}".strip(),
        "command": " ".join(sys.argv),
        "users": len(users),
        "eval_seed": args.eval_seed,
        "curve": [],
    }
    spec = PromptSpec(
        style="chat",
        max_history=data_cfg.max_history,
        task={"rec_history_titles": task_cfg.rec_history_titles},
    )
    probe = CurveProbe(
        every=args.every,
        users=users,
        spec=spec,
        sid_dir=sid_dir,
        catalog=dataset.catalog,
        popular=most_popular(split, users, dataset.catalog),
        doc=doc,
        out=out,
        emit=lambda line: print(line, flush=True),
    )
    run_plum(*configs, callbacks=[probe], teacher_provider=run_teacher)
    doc["done"] = True  # the last point is the run's last step (a resumable driver checks it)
    write_json_atomic(out / "curve.json", doc)
    plot_curve(doc, out / "curve.png")
    print(f"wrote {out / 'curve.json'} and {out / 'curve.png'}")
    print(json.dumps({"users": doc["users"], "curve": doc["curve"]}))


if __name__ == "__main__":
    main()
