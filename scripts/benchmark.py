"""One benchmark for any dataset: recllm's SID-sequence decoder(s) and SASRec, beside the
published rows for that dataset.

    python scripts/benchmark.py --data ../shared/data/amazon_p5/beauty --out outputs/bench_beauty
    python scripts/benchmark.py --data ../shared/data/amazon18_scientific --recllm-minutes 10 \\
        --sasrec-minutes 5 --ensemble 1 --eval-users 2000          # a quicker look
    python scripts/benchmark.py --data DIR --dataset toys --hidden_size 128   # any recipe key

recllm side: ``recipes/seqlm.yaml`` (``--config``) with the data path and output directory set
here; any recipe key can follow as ``--key value`` (``--method rq-kmeans``). It runs the recipe's
own code path (:func:`recllm.train.seqlm.run_seqlm`): SIDs -> ``--ensemble`` decoders, each
within ``--recllm-minutes``, each keeping the epoch with the best Recall@10 on the recipe's
``valid_users`` VALIDATION users -> trie-constrained beam search (``--beams``) over the test
users, of the first decoder alone and of all of them together. SASRec side: full-softmax
cross-entropy (recllm.baselines.sasrec) within ``--sasrec-minutes``, epoch chosen on validation
NDCG@10. With the recipe's teacher on (``distill_weight`` > 0, the YAML's default) and no
``--teacher`` given, that SASRec is saved into ``--out/sasrec`` and teaches the decoders: the
recllm rows are distilled from the baseline printed beside them. Nothing is chosen on the test
split, which is scored once at the end. Both:
leave-one-out, full ranking, histories cut to the recipe's ``max_history``, seen items not
removed (../shared/data/README.md).

The published rows come from ``recllm/eval/published.yaml``: the entry whose folder names match
``--data`` (``amazon_p5/beauty`` -> beauty, ``Scientific.inter.json`` -> scientific), or
``--dataset NAME``; data of no entry gets no published rows (said so in the output). Prints the
table; writes ``metrics.json`` and ``recall.png`` into ``--out`` (the recipe's run in
``--out/seqlm``); the last line of output is one JSON object of the measured figures.

Cost (2 EPYC cores, one thread): Beauty (22,363 users, 12,101 items) with the defaults, 2 x 30
min of decoders + 12 min of SASRec + evaluation, about 80 min. A smoke run on a 40-user,
60-item set (tests/scripts/test_benchmark.py) takes about 30 s.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

from recllm.bench.benchmark import (
    published_notes,
    recipe_argv,
    sasrec_baseline,
    seqlm_rows,
    table,
    write_outputs,
)

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", required=True, help="dataset directory or file (any recllm layout)")
    p.add_argument(
        "--dataset", default=None, help="published table to compare with (default: from --data)"
    )
    p.add_argument("--out", default="outputs/benchmark", help="output directory")
    p.add_argument("--config", default=str(ROOT / "recipes" / "seqlm.yaml"), help="recipe YAML")
    p.add_argument(
        "--recllm-minutes", type=float, default=None, help="budget of each decoder (YAML default)"
    )
    p.add_argument("--ensemble", type=int, default=None, help="decoders (YAML default)")
    p.add_argument("--sasrec-minutes", type=float, default=12.0, help="0 = skip SASRec")
    p.add_argument(
        "--sasrec-dropout", type=float, default=0.5, help="SASRec dropout (0.5: sparse data)"
    )
    p.add_argument("--sasrec-batch", type=int, default=64, help="SASRec sequences per step")
    p.add_argument("--eval-users", type=int, default=0, help="first N test users (0 = all)")
    p.add_argument(
        "--eval-seed", type=int, default=None, help="a seeded random sample of --eval-users instead"
    )
    p.add_argument("--beams", type=int, default=20, help="beam width of the test decoding")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    args, recipe = p.parse_known_args(argv)
    if args.beams < 10:
        p.error("--beams must be >= 10 (Recall@10 needs 10 ranked items)")
    return args, recipe


def main(argv: list[str] | None = None) -> dict:
    t0 = time.monotonic()
    args, extra = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    import torch
    from trl import SFTConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    from recllm.data import DataConfig, load_rec_dataset, split_dataset
    from recllm.eval.published import COLUMNS, load_published, match_dataset, published_rows
    from recllm.eval.run import select_users
    from recllm.sid.config import SIDConfig
    from recllm.train.recipe_args import parse_recipe_args
    from recllm.train.seqlm import SeqLMArguments

    out = Path(args.out)
    types = (SeqLMArguments, DataConfig, SIDConfig, SFTConfig)
    configs = parse_recipe_args(types, recipe_argv(args, extra), prog="seqlm")
    data_cfg, sft_cfg = configs[1], configs[3]
    key = args.dataset or match_dataset(args.data)
    tables = load_published()
    published = published_rows(key, tables) if key else {}
    print(f"command: python {' '.join(sys.argv)}")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads)"
    )
    dataset = load_rec_dataset(config=data_cfg)
    split = split_dataset(dataset, data_cfg)
    test = select_users(split.test, args.eval_users, args.eval_seed)
    info: dict[str, object] = {"dataset": key, "data": str(args.data)}
    sasrec = None
    recipe_args = configs[0]
    if args.sasrec_minutes > 0:
        # the recipe's teacher (distill_weight > 0, no --teacher) is this same-run SASRec,
        # saved for it, rather than a second SASRec trained inside the recipe
        teach = recipe_args.distill_weight > 0 and recipe_args.teacher is None
        sasrec, info["sasrec"] = sasrec_baseline(
            split,
            test,
            dataset.catalog,
            args.sasrec_minutes,
            args.sasrec_dropout,
            args.sasrec_batch,
            directory=out / "sasrec" if teach else None,
        )
        if teach:
            recipe_args.teacher = str(out / "sasrec")
            print(
                f"the SASRec row is also recllm's teacher (distill_weight {recipe_args.distill_weight:g})"
            )
    rows, more = seqlm_rows(configs, test, dataset.catalog, args.beams)
    info.update(more)
    if sasrec is not None:
        rows["SASRec (same run)"] = sasrec
    measured = {name: {c: float(fig[c]) for c in COLUMNS} for name, fig in rows.items()}

    title = tables[key].title if key else dataset.name
    print(
        f"\n{title}, test, {len(test)} users, full ranking over {len(dataset.catalog)} items, "
        f"histories <= {data_cfg.max_history} items, seen items not removed"
    )
    print(table({**measured, **published}, COLUMNS))
    print("\n".join(published_notes(key, tables, published, args.data)))
    first = next(iter(rows))
    print(
        f"invalid rate {rows[first]['invalid_rate']:.4f}; recllm trained in "
        f"{info['recllm_train_minutes']} min, eval {info['recllm_eval_minutes']} min; total "
        f"{(time.monotonic() - t0) / 60:.1f} min"
    )
    config = {
        "benchmark": {k: str(v) for k, v in vars(args).items()},
        "recipe_overrides": extra,
        "recipe": json.loads((Path(sft_cfg.output_dir) / "resolved_config.json").read_text()),
    }
    write_outputs(
        out,
        rows,
        published,
        config,
        title,
        dataset=key or dataset.name,
        users=len(test),
        published_sources={r.name: r.source for r in tables[key].rows} if key else {},
        info=info,
    )
    print(f"metrics.json and recall.png in {out}")
    summary = {
        "dataset": key,
        "users": len(test),
        "rows": {
            name: {c: round(float(fig[c]), 4) for c in (*COLUMNS, "invalid_rate") if c in fig}
            for name, fig in rows.items()
        },
        "published": published,
        "info": info,
        "minutes": round((time.monotonic() - t0) / 60, 2),
    }
    print(json.dumps(summary, default=str))
    return summary


if __name__ == "__main__":
    from recllm.errors import user_errors

    with user_errors("benchmark"):
        main()
