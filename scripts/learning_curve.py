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
import time
from collections import Counter
from pathlib import Path


def plot(doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = doc["curve"]
    minutes = [c["train_min"] for c in curve]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, key, pop_key, name in (
        (axes[0], "R10", "popR10", "Recall@10"),
        (axes[1], "N10", "popN10", "NDCG@10"),
    ):
        ax.plot(minutes, [c[key] for c in curve], "o-", label="recllm (this recipe)")
        for c in curve:
            ax.annotate(
                f"{c['step']}",
                (c["train_min"], c[key]),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
        ax.axhline(curve[0][pop_key], color="gray", ls="--", label="most popular")
        ax.set_xlabel("training minutes (labels: SFT steps)")
        ax.set_title(name)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{doc.get('title', 'learning curve')}: {doc['users']} test users", fontsize=9)
    fig.tight_layout()
    from recllm.io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


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
        plot(json.loads(src.read_text()), src.with_suffix(".png"))
        print(f"wrote {src.with_suffix('.png')}")
        return

    import torch
    from transformers import TrainerCallback

    from recllm.data import load_rec_dataset, split_dataset
    from recllm.eval import RankingMetrics
    from recllm.eval.run import evaluate_recommender, select_users
    from recllm.io import write_json_atomic
    from recllm.sid.sidmap import SIDMap
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
    counts = Counter(i for seq in split.train.sequences.values() for i in seq)
    popular = [i for i, _ in counts.most_common(10)]
    pop = RankingMetrics(list(dataset.catalog.ids))
    for ex in users:
        pop.add(popular, ex.target)
    pop_m = pop.compute((10,))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {
        "title": f"{Path(args.config).name} {' '.join(recipe_args)}".strip(),
        "command": " ".join(sys.argv),
        "users": len(users),
        "eval_seed": args.eval_seed,
        "curve": [],
    }
    t0 = time.monotonic()
    eval_seconds = 0.0

    class Probe(TrainerCallback):
        def on_step_end(self, _args, state, control, model=None, processing_class=None, **kw):
            nonlocal eval_seconds
            if state.global_step % args.every and state.global_step != state.max_steps:
                return
            t = time.monotonic()
            was = model.training
            model.eval()
            spec = PromptSpec(
                style="chat",
                max_history=data_cfg.max_history,
                task={"rec_history_titles": task_cfg.rec_history_titles},
            )
            sid_map = SIDMap.load(sid_dir)
            with torch.autocast("cpu", enabled=False):
                result = evaluate_recommender(
                    model,
                    processing_class,
                    sid_map,
                    users,
                    spec,
                    dataset.catalog,
                    beams=10,
                    ks=(10,),
                    batch_size=16,
                    progress=False,
                )
            model.train(was)
            eval_seconds += time.monotonic() - t
            m = result.metrics
            point = {
                "step": state.global_step,
                "train_min": round((time.monotonic() - t0 - eval_seconds) / 60, 2),
                "R10": round(m["recall@10"], 4),
                "N10": round(m["ndcg@10"], 4),
                "coverage": round(m["coverage"], 4),
                "popR10": round(pop_m["recall@10"], 4),
                "popN10": round(pop_m["ndcg@10"], 4),
                "pop_coverage": round(pop_m["coverage"], 4),
            }
            doc["curve"].append(point)
            print("curve:", json.dumps(point), flush=True)
            write_json_atomic(out / "curve.json", doc)

    run_plum(*configs, callbacks=[Probe()])
    doc["done"] = True  # the last point is the run's last step (a resumable driver checks it)
    write_json_atomic(out / "curve.json", doc)
    plot(doc, out / "curve.png")
    print(f"wrote {out / 'curve.json'} and {out / 'curve.png'}")
    print(json.dumps({"users": doc["users"], "curve": doc["curve"]}))


if __name__ == "__main__":
    main()
