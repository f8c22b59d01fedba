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
(``--split valid``). Finished parts are not run again (a stage's ``model/`` directory, an
evaluation's JSON), so a stopped run goes on where it stopped.

Every scored model also keeps each user's rank of the target (``<name>.ranks.json``), so each
row is compared with the SFT start user by user: the difference in R@10 and N@10 with its 95%
interval and p-value (``paired_vs_sft`` in the summary). Two seeds of a stage show the seed noise;
the paired interval shows the noise of the users.

Writes ``OUT/eval/<split><users>_b<beams>/*.json``, ``OUT/summary.json`` and
``OUT/align_benchmark.png`` (R@10 and N@10 of every row, the SFT start and SASRec as lines);
prints the table; the last line of output is one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("dpo", "awsft", "grpo")
#: Settings per stage and model kind, before ``--<stage>-args``: chosen on validation users of
#: Amazon Beauty for the SID-sequence decoder (docs/align.md); the recipes' YAML defaults are
#: for fine-tuning a pretrained chat model.
DEFAULTS = {
    "sid_sequence": {
        # valid R@10 .0815 -> .0895 in one round; lr 1e-4 with the NLL at 0.1 fell to .0740
        "dpo": [
            *("--rounds", "3", "--mining_users", "4096", "--beams", "20"),
            *("--mining_batch_size", "64", "--learning_rate", "3e-5", "--beta", "0.1"),
            *("--loss_weights", "1.0", "1.0", "--per_device_train_batch_size", "64"),
        ],
        "awsft": [
            *("--rounds", "1", "--mining_users", "2048", "--beams", "20"),
            *("--mining_batch_size", "64", "--learning_rate", "1e-4"),
            *("--per_device_train_batch_size", "64"),
        ],
        "grpo": [
            *("--mining_users", "1024", "--num_generations", "16"),
            *("--per_device_train_batch_size", "64", "--mining_batch_size", "64"),
            *("--learning_rate", "1e-4"),
        ],
    },
    "chat": {"dpo": [], "awsft": [], "grpo": []},
}


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


class Bench:
    """The data, users and reward model of one run, and its cached evaluations."""

    def __init__(self, args: argparse.Namespace) -> None:
        from recllm.eval.run import eval_examples, select_users
        from recllm.tasks.prompting import PromptSpec

        self.args, self.out = args, Path(args.out)
        self.spec = PromptSpec.from_model_dir(args.sft)
        self.data_fields, self.dataset, examples = eval_examples(args.sft, None, args.split)
        self.users = select_users(examples, args.eval_users, args.eval_seed)
        self.rows: dict[str, dict] = {}

    def reward_model(self) -> Path:
        """Train (once) and score the SASRec reward model."""
        from recllm.baselines.sasrec import (
            SASRecConfig,
            evaluate_sasrec,
            load_sasrec,
            save_sasrec,
            train_sasrec,
        )
        from recllm.data import DataConfig, split_dataset
        from recllm.data.fingerprint import data_fingerprint

        rm_dir = Path(self.args.reward_model or self.out / "reward_model")
        split = split_dataset(self.dataset, DataConfig(**self.data_fields))
        if not (rm_dir / "sasrec.json").is_file() and self.args.reward_model is None:
            t0 = time.monotonic()
            cfg = SASRecConfig(
                time_budget_minutes=self.args.sasrec_minutes,
                dropout=self.args.sasrec_dropout,
                batch_size=self.args.sasrec_batch,
            )
            rm, _ = train_sasrec(split, self.dataset.catalog, cfg, progress=False)
            meta = {
                "data_fingerprint": data_fingerprint(split, self.dataset.catalog),
                "minutes": round((time.monotonic() - t0) / 60, 2),
            }
            save_sasrec(rm, rm_dir, meta=meta)

        def score() -> dict:
            import dataclasses

            rm, record = load_sasrec(rm_dir)
            scored = dataclasses.replace(split, **{self.args.split: self.users})
            figs = evaluate_sasrec(rm, scored, self.args.split, ks=(5, 10))
            return {**figs, "minutes": record["meta"].get("minutes")}

        self.rows["SASRec (the reward model, same run)"] = self.cached("sasrec", score)
        return rm_dir

    @property
    def eval_dir(self) -> Path:
        return self.out / "eval" / f"{self.args.split}{len(self.users)}_b{self.args.beams}"

    def ranks(self, name: str) -> list[int] | None:
        """Every scored user's rank of the target (1 = first, 0 = not in the beam), if kept."""
        path = self.eval_dir / f"{name}.ranks.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def cached(self, name: str, compute) -> dict:
        path = self.eval_dir / f"{name}.json"
        if path.is_file():
            return json.loads(path.read_text())
        from recllm.io import write_json_atomic

        figs = {k: (float(v) if isinstance(v, int | float) else v) for k, v in compute().items()}
        write_json_atomic(path, figs)
        return figs

    def score_model(self, name: str, model_dir: Path, minutes: float | None) -> dict:
        from recllm.eval.report import target_ranks
        from recllm.eval.run import evaluate_recommender
        from recllm.vocab import load_model_with_sids

        def compute() -> dict:
            model, tok, sid_map = load_model_with_sids(model_dir)
            res = evaluate_recommender(
                model,
                tok,
                sid_map,
                self.users,
                self.spec,
                self.dataset.catalog,
                beams=self.args.beams,
                ks=(5, 10),
                batch_size=64,
            )
            from recllm.io import write_json_atomic

            ranks = target_ranks([ex.target for ex in self.users], res.ranked)
            write_json_atomic(self.eval_dir / f"{name}.ranks.json", ranks)
            return {**res.metrics, "eval_minutes": round(res.seconds / 60, 2)}

        figs = self.cached(name, compute)
        figs["minutes"] = minutes
        figs["eval"] = name
        return figs


def run_stage(bench: Bench, stage: str, seed: int, rm_dir: Path) -> Path:
    out = bench.out / f"{stage}_seed{seed}"
    if (out / "model" / "sid_map.json").is_file():
        return out
    from recllm.train.launch import launch_recipe

    args = bench.args
    cmd = ["--model_dir", str(args.sft), "--output_dir", str(out), "--seed", str(seed)]
    cmd += [
        "--reward",
        args.reward,
        "--reward_model",
        str(rm_dir),
        "--overwrite_output_dir",
        "true",
    ]
    cmd += DEFAULTS.get(bench.spec.style, {}).get(stage, [])
    cmd += shlex.split(getattr(args, f"{stage}_args"))
    launch_recipe(
        ROOT / "recipes" / f"{stage}.py",
        config_path=ROOT / "recipes" / f"{stage}.yaml",
        args=cmd,
        env={"HF_HUB_OFFLINE": "1"},
    )
    return out


def stage_rows(bench: Bench, stage: str, seed: int, out: Path) -> None:
    log = json.loads((out / f"{stage}_log.json").read_text())
    if stage == "grpo":
        minutes = round(log["seconds"] / 60, 2)
        bench.rows[f"+ GRPO (seed {seed})"] = bench.score_model(
            f"grpo_seed{seed}", out / "model", minutes
        )
        return
    label = {"dpo": "DPO", "awsft": "AW-SFT"}[stage]
    total = 0.0
    for r, rnd in enumerate(log["rounds"], 1):
        total += rnd["seconds"] / 60
        name = f"+ {label} round {r} (seed {seed})" if len(log["rounds"]) > 1 else None
        bench.rows[name or f"+ {label} (seed {seed})"] = bench.score_model(
            f"{stage}_seed{seed}_round{r}", out / f"round{r}" / "model", round(total, 2)
        )


def table(rows: dict[str, dict]) -> str:
    from recllm.eval.report import Column, metrics_table

    return metrics_table(
        rows,
        extra=(
            Column("invalid", lambda f: f.get("invalid_rate")),
            Column("minutes", lambda f: f.get("minutes"), ".1f"),
        ),
    )


def plot(summary: dict, path: Path) -> None:
    from recllm.eval.report import Panel, bar_chart

    rows = summary["rows"]
    bar_chart(
        {n: f for n, f in rows.items() if not n.startswith("SASRec")},
        (Panel("recall@10", "Recall@10"), Panel("ndcg@10", "NDCG@10")),
        path,
        f"{summary['data']}: {summary['users']} {summary['split']} users, beam "
        f"{summary['beams']}, reward {summary['reward']}",
        grey=lambda n: n == "SFT start",
        references={n: f for n, f in rows.items() if n.startswith("SASRec")},
    )


def main(argv: list[str] | None = None) -> dict:
    import logging

    from recllm.eval.metrics import paired_difference

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = parse_args(argv)
    if args.replot:
        out = Path(args.replot)
        summary = json.loads((out / "summary.json").read_text())
    else:
        bench = Bench(args)
        out = bench.out
        rm_dir = bench.reward_model()
        bench.rows["SFT start"] = bench.score_model("sft", Path(args.sft), None)
        for seed in args.seeds:
            for stage in args.stages:
                stage_rows(bench, stage, seed, run_stage(bench, stage, seed, rm_dir))
        published = {}
        if args.split == "test":  # the papers' rows are test figures over all users
            from recllm.eval.published import load_published, match_dataset, published_rows

            key = match_dataset(str(bench.data_fields.get("data_path")))
            if key:
                published = {
                    f"{name} (published)": fig
                    for name, fig in published_rows(key, load_published()).items()
                    if name.startswith("TIGER")
                }
        base_ranks = bench.ranks("sft")
        comparisons = {}
        for name, fig in bench.rows.items():
            ranks = bench.ranks(fig["eval"]) if "eval" in fig and fig["eval"] != "sft" else None
            if base_ranks is not None and ranks is not None:
                comparisons[name] = paired_difference(base_ranks, ranks)
        summary = {
            "data": bench.data_fields.get("data_path"),
            "paired_vs_sft": comparisons,
            "published": published,
            "sft": str(args.sft),
            "model_kind": bench.spec.style,
            "split": args.split,
            "users": len(bench.users),
            "beams": args.beams,
            "reward": args.reward,
            "seeds": args.seeds,
            "stage_args": {s: getattr(args, f"{s}_args") for s in args.stages},
            "defaults": DEFAULTS.get(bench.spec.style, {}),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "command": shlex.join([sys.executable, *sys.argv]),
            "rows": bench.rows,
        }
        from recllm.io import write_json_atomic

        write_json_atomic(out / "summary.json", summary)
    plot(summary, out / "align_benchmark.png")
    rows = summary["rows"]
    print(f"\n{summary['data']}, {summary['users']} {summary['split']} users:")
    print(table({**rows, **summary.get("published", {})}))
    if summary.get("paired_vs_sft"):
        print("\nagainst the SFT start, same users (95% interval of the difference, p):")
        for name, c in summary["paired_vs_sft"].items():
            cells = "  ".join(
                f"{m} {c[m]['delta']:+.4f} [{c[m]['ci95'][0]:+.4f}, {c[m]['ci95'][1]:+.4f}] "
                f"p={c[m]['p']:.2g}"
                for m in ("R@10", "N@10")
            )
            print(f"  {name:<30} {cells}  users +{c['users_gained']}/-{c['users_lost']}")
    base = rows["SFT start"]
    figures = {
        name: {
            "R@10": round(f["recall@10"], 4),
            "N@10": round(f["ndcg@10"], 4),
            "R@10_vs_sft": round(f["recall@10"] / base["recall@10"], 3)
            if base["recall@10"]
            else math.nan,
            "minutes": f.get("minutes"),
            **(
                {"R@10_p": summary["paired_vs_sft"][name]["R@10"]["p"]}
                if name in summary.get("paired_vs_sft", {})
                else {}
            ),
        }
        for name, f in rows.items()
    }
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
