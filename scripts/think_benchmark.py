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
at a time. Finished parts are not run again. Writes ``OUT/summary.json`` and
``OUT/think_benchmark.png``; prints the table; the last line is one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
ROWS = (
    "start",
    "nothink",
    "think_plain",
    "think_greedy",
    "think_sampled",
    "ahead_nothink",
    "ahead_think",
)
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


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


def run(cmd: list[str]) -> None:
    print("+", shlex.join(cmd), flush=True)
    subprocess.run(cmd, check=True, env=ENV)


def train_arm(args: argparse.Namespace, out: Path, name: str, control: bool) -> Path:
    arm = out / name
    if (arm / "model" / "sid_map.json").is_file():
        return arm / "model"
    from recllm.tasks.prompting import PromptSpec
    from recllm.train.launch import launch_recipe

    data = PromptSpec.from_model_dir(args.start).data or {}
    cfg = yaml.safe_load((ROOT / "recipes" / "onerec_think.yaml").read_text())
    cfg.update(
        model_name_or_path=str(args.start),
        rationales=str(out / "rationales"),
        control=control,
        max_steps=args.steps,
        per_device_train_batch_size=args.batch,
        learning_rate=args.learning_rate,
        output_dir=str(arm),
        overwrite_output_dir=True,
        seed=args.seed,
        **{k: data[k] for k in ("data_path", "max_users", "max_history", "split") if k in data},
    )
    # the same text features in both arms: the catalog text (title, year, genres) the
    # rationales are built from is a training task of both
    cfg["mixture"].update(rec_sequence=1.0, catalog_sid_to_text=1.0, reason_rec=1.0)
    seconds = launch_recipe(
        ROOT / "recipes" / "onerec_think.py", config=cfg, config_path=out / f"{name}.yaml", env=ENV
    )
    (arm / "minutes.json").write_text(json.dumps({"minutes": seconds / 60}))
    return arm / "model"


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        from recllm.eval.run import eval_examples, select_users

        self.args = args
        self.out = Path(args.out)
        _, self.dataset, examples = eval_examples(args.start, None, "test", 0)
        self.users = select_users(examples, args.eval_users, seed=0)
        self.rows: dict[str, dict] = {}
        self.ranks: dict[str, list[int]] = {}

    def score(
        self, name: str, model_dir: Path, cache: str | None = None, engine: str = "hf", **kw
    ) -> dict:
        """Evaluate (or read the cached figures of) one row; ``cache`` names its file.

        ``engine="vllm"``: the row decodes on a vLLM engine started for it and shut down after.
        """
        path = (
            self.out / "eval" / f"u{len(self.users)}_b{self.args.beams}" / f"{cache or name}.json"
        )
        if not path.is_file():
            import gc

            import torch

            from recllm.eval.report import target_ranks
            from recllm.eval.run import evaluate_recommender
            from recllm.io import write_json_atomic
            from recllm.tasks.prompting import PromptSpec
            from recllm.vocab import load_model_with_sids

            rec = None
            if engine == "vllm":
                from recllm.apps.recommender import Recommender

                rec = Recommender.from_pretrained(model_dir, engine="vllm", max_k=self.args.beams)
                model, tok, sid_map = None, rec.tokenizer, rec.sid_map
                kw.update(engine="vllm", recommender=rec)
            else:
                model, tok, sid_map = load_model_with_sids(model_dir, dtype=torch.float32)
                model.eval()
            res = evaluate_recommender(
                model,
                tok,
                sid_map,
                self.users,
                PromptSpec.from_model_dir(model_dir),
                self.dataset.catalog,
                beams=self.args.beams,
                ks=(5, 10),
                batch_size=32,
                **kw,
            )
            del rec, model
            gc.collect()
            ranks = target_ranks([ex.target for ex in self.users], res.ranked)
            figs = {k: v for k, v in res.metrics.items() if k != "think"}
            figs["seconds"] = round(res.seconds, 1)
            write_json_atomic(path, {"figures": figs, "ranks": ranks})
        saved = json.loads(path.read_text())
        self.rows[name] = saved["figures"]
        self.ranks[name] = saved["ranks"]
        return saved["figures"]


def main(argv: list[str] | None = None) -> dict:
    import logging

    from recllm.decode.prefixes import read_prefix_file
    from recllm.decode.think import ThinkOptions
    from recllm.eval.metrics import paired_difference
    from recllm.io import write_json_atomic

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "rationales" / "rationales.json").is_file():
        run(
            [
                sys.executable,
                "-m",
                "recllm.cli",
                "reason",
                "generate",
                "--model-dir",
                str(args.start),
                "--per-user",
                str(args.per_user),
                "--out",
                str(out / "rationales"),
                "--overwrite",
            ]
        )
    plain = train_arm(args, out, "nothink", control=True)
    think = train_arm(args, out, "think", control=False)
    bench = Bench(args)
    want = set(args.rows) | {"nothink"}
    names = {}
    r = args.think_rationales
    on = " on vLLM" if args.think_engine == "vllm" else ""
    label = {
        "start": "PLUM start (quickstart model)",
        "nothink": "no-think SFT (control arm)",
        "think_plain": "think SFT, answering without thinking",
        "think_greedy": f"think SFT, thinking (1 greedy rationale){on}",
        "think_sampled": f"think SFT, thinking ({r} sampled rationales, merged){on}",
        "ahead_nothink": f"think-ahead ({args.paths} paths x {args.prefixes} prefixes, depth "
        f"{args.depth}) -> no-think SFT",
        "ahead_think": "think-ahead -> think SFT answering without thinking",
    }
    greedy = ThinkOptions(1, args.think_tokens, 0.0, 1.0, args.seed)
    sampled = ThinkOptions(r, args.think_tokens, 1.0, 1.0, args.seed)
    plans = {
        "start": (Path(args.start), {}),
        "nothink": (plain, {}),
        "think_plain": (think, {}),
        "think_greedy": (think, {"think": greedy}),
        "think_sampled": (think, {"think": sampled}),
    }
    for key in ROWS[:5]:
        if key in want:
            names[key] = label[key]
            model_dir, kw = plans[key]
            if "think" in kw and args.think_engine == "vllm":
                kw = {**kw, "engine": "vllm", "cache": f"{key}_vllm"}
            bench.score(key, model_dir, **kw)
    record = None
    if want & {"ahead_nothink", "ahead_think"}:
        prefix_file = (
            out / f"prefixes_t{args.paths}_m{args.prefixes}_d{args.depth}_u{len(bench.users)}"
            f"_{args.ahead_engine}.parquet"
        )
        if not prefix_file.is_file():
            run(
                [sys.executable, "-m", "recllm.cli", "think-ahead", "--model", str(think)]
                + ["--paths", str(args.paths), "--prefixes", str(args.prefixes)]
                + ["--depth", str(args.depth), "--think-tokens", str(args.think_tokens)]
                # vLLM: 64 users (128 sequences) per engine call fit its 30% CPU KV cache
                + ["--engine", args.ahead_engine]
                + ["--batch-size", "64" if args.ahead_engine == "vllm" else "16"]
                + ["--out", str(prefix_file)]
                + (
                    ["--max-users", str(args.eval_users), "--sample-seed", "0"]
                    if args.eval_users
                    else []
                )
            )
        sets, record = read_prefix_file(prefix_file)
        for key, model_dir in (("ahead_nothink", plain), ("ahead_think", think)):
            if key in want:
                names[key] = label[key]
                bench.score(key, model_dir, cache=f"{key}_{args.ahead_engine}", prefixes=sets)

    base = bench.ranks["nothink"]
    rows = {}
    for key, label in names.items():
        fig = dict(bench.rows[key])
        fig["paired_vs_nothink"] = (
            None if key == "nothink" else paired_difference(base, bench.ranks[key])
        )
        rows[label] = fig
    minutes = {
        arm: round(json.loads((out / arm / "minutes.json").read_text())["minutes"], 1)
        for arm in ("nothink", "think")
        if (out / arm / "minutes.json").is_file()
    }
    summary = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "start": str(args.start),
        "users": len(bench.users),
        "beams": args.beams,
        "settings": vars(args),
        "train_minutes": minutes,
        "think_ahead": None
        if record is None
        else {k: v for k, v in record.items() if k not in ("data", "versions")},
        "rows": rows,
    }
    write_json_atomic(out / "summary.json", summary)
    print(table(rows))
    plot(summary, out / "think_benchmark.png")
    last = {
        label: {
            "R@10": fig["recall@10"],
            "N@10": fig["ndcg@10"],
            "users_per_second": fig["users_per_second"],
            "invalid_rate": fig["invalid_rate"],
        }
        for label, fig in rows.items()
    }
    if record is not None:
        last["prefix_recall"] = record["prefix_recall"]
        last["think_ahead_users_per_second"] = record["users_per_second"]
    print(json.dumps(last))
    return summary


def table(rows: dict[str, dict]) -> str:
    from recllm.eval.report import Column, metrics_table

    def p_value(fig: dict) -> float | None:
        pair = fig.get("paired_vs_nothink")
        return None if pair is None else pair["R@10"]["p"]

    return metrics_table(
        rows,
        extra=(
            Column("invalid", lambda f: f["invalid_rate"]),
            Column("users/s", lambda f: f["users_per_second"], ".2f"),
            Column("dR@10 p", p_value, ".2g"),
        ),
    )


def plot(summary: dict, path: Path) -> None:
    from recllm.eval.report import Panel, bar_chart

    title = f"{summary['users']} test users, beam {summary['beams']}"
    ahead = summary["think_ahead"]
    if ahead:
        title += (
            f"; think-ahead prefix-set recall {ahead['prefix_recall']:.3f}, mean set "
            f"{ahead['set_size_mean']} prefixes (~{ahead['items_per_set_mean']} items)"
        )
    panels = (
        Panel("recall@10", "Recall@10"),
        Panel("ndcg@10", "NDCG@10"),
        Panel("users_per_second", "users / s (log)", log=True),
    )
    bar_chart(summary["rows"], panels, path, title, grey=lambda n: "start" in n)


if __name__ == "__main__":
    main()
