"""Dialogue-style recommendation, measured: does a dialogue-trained model use the user's words?

    python scripts/dialogue_benchmark.py --start ~/.cache/recllm/ml_align/model --out outputs/dialogue_ml
    python scripts/dialogue_benchmark.py --start DIR --out OUT --steps 300 --users 300

From one PLUM-aligned start model (the quickstart's), the script trains the dialogue arm:
``recipes/plum_sft.py`` from the start model (its SIDs and vocabulary reused) with the
``dialogue`` task mixed into the start's own mixture (``rec_sequence``), ``--steps`` steps; and,
with ``--control``, the same run without the dialogue rows. Then, on held-out test users (a
seeded sample of ``--users``; 0 = all), every arm is asked with dialogue prompts
(:func:`recllm.tasks.dialogue.dialogue_prompt`: the user's history, then a request), its top
``--k`` items ranked as the reply's SID span (constrained beam search up to the newline):

1. **hit rate**: is the held-out target in the top k when the request is plain ("What should I
   try next?"), and when it describes the target (steered by one of the target's facet tags,
   the rarest in the catalog: "Can you suggest something with genre Film-Noir?");
2. **category steering**: for each of ``--categories`` tags (the most common genres), the share
   of the top-k items that carry the tag when the user asks for it, against the same users'
   plain answers and the tag's share of the catalog.

The start model never saw a conversation: it is the row that shows what the words add. Every
row also keeps its plain recommendation R@10 (the ``rec`` prompt) to show what dialogue training
costs. Users/s are measured on this machine, one job at a time. Finished parts are not run
again. Writes ``OUT/summary.json`` and ``OUT/dialogue_benchmark.png``; the last line of output is
one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import time
from collections import Counter
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--start", required=True, help="PLUM-aligned model directory")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--steps", type=int, default=300, help="SFT steps of each arm")
    p.add_argument("--batch", type=int, default=8, help="examples per step")
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--dialogue-weight", type=float, default=1.0, help="mixture.dialogue")
    p.add_argument("--users", type=int, default=300, help="test users (0 = all), seeded sample")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--categories", type=int, default=5, help="steering tags measured")
    p.add_argument("--control", action="store_true", help="also train the no-dialogue arm")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def run(cmd: list[str]) -> None:
    print("+", shlex.join(cmd), flush=True)
    subprocess.run(cmd, check=True, env=ENV)


def train_arm(args: argparse.Namespace, out: Path, name: str, dialogue: bool) -> Path:
    """``recipes/plum_sft.py`` from the start model, with or without the dialogue rows."""
    arm = out / name
    if (arm / "model" / "sid_map.json").is_file():
        return arm / "model"
    from recllm.tasks.prompting import PromptSpec
    from recllm.train.launch import launch_recipe
    from recllm.vocab.checkpoint import read_vocab_record

    spec = PromptSpec.from_model_dir(args.start)
    cfg = yaml.safe_load((ROOT / "recipes" / "quickstart.yaml").read_text())
    cfg.update(
        model_name_or_path=str(args.start),
        sid_map=str(args.start),  # the start's SIDs and vocabulary
        warmup_steps_embed=0,
        max_steps=args.steps,
        per_device_train_batch_size=args.batch,
        learning_rate=args.learning_rate,
        output_dir=str(arm),
        overwrite_output_dir=True,
        seed=args.seed,
        **{
            k: spec.data[k]
            for k in ("data_path", "max_users", "max_history", "split")
            if k in (spec.data or {})
        },
    )
    record = read_vocab_record(args.start).get("recommender") or {}
    cfg["rec_history_titles"] = bool((record.get("task") or {}).get("rec_history_titles"))
    cfg["mixture"] = {**cfg["mixture"], "dialogue": args.dialogue_weight if dialogue else 0.0}
    seconds = launch_recipe(
        ROOT / "recipes" / "plum_sft.py", config=cfg, config_path=out / f"{name}.yaml", env=ENV
    )
    (arm / "minutes.json").write_text(json.dumps({"minutes": seconds / 60}))
    return arm / "model"


class Probe:
    """Dialogue prompts for the sampled test users, asked of one model at a time."""

    def __init__(self, args: argparse.Namespace, dialogue_dir: Path) -> None:
        from recllm.eval.run import eval_examples, select_users
        from recllm.sid.sidmap import SIDMap
        from recllm.tasks.dialogue import item_tags
        from recllm.tasks.prompting import PromptSpec, task_builder

        self.args = args
        _, self.dataset, examples = eval_examples(args.start, None, "test", 0)
        self.users = select_users(examples, args.users, seed=args.seed)
        catalog = self.dataset.catalog
        # the dialogue arm's settings (facet labels) word every prompt, for every arm
        spec = PromptSpec.from_model_dir(dialogue_dir)
        self.builder = task_builder(spec, SIDMap.load(dialogue_dir), catalog)
        self.facets = self.builder.facets()
        self.tags = {i: item_tags(catalog, self.facets, i) for i in catalog.ids}
        counts = Counter((s.facet, s.tag) for tags in self.tags.values() for s in tags)
        self.catalog_share = {key: n / len(catalog.ids) for key, n in counts.items()}
        # steering categories: the most common tags of the first facet that splits into tags
        words = [f for f in self.facets if f.splitter != "whole"] or list(self.facets)
        first = words[0].name
        self.categories = [
            next(s for tags in self.tags.values() for s in tags if (s.facet, s.tag) == key)
            for key, _ in counts.most_common()
            if key[0] == first
        ][: args.categories]

    def target_steer(self, target: str):
        """The target's rarest tag in the catalog (the most telling description)."""
        tags = self.tags[target]
        if not tags:
            return None
        return min(tags, key=lambda s: (self.catalog_share[(s.facet, s.tag)], s.tag))

    def prompts(self, steer_of) -> list[list[dict[str, str]]]:
        from recllm.tasks.dialogue import DialogueTurn, dialogue_prompt

        return [
            dialogue_prompt(
                self.builder, ex.history, request=DialogueTurn("open", "", steer=steer_of(ex))
            )
            for ex in self.users
        ]

    def ask(self, model_dir: Path, name: str) -> dict:
        path = Path(self.args.out) / "eval" / f"u{len(self.users)}_k{self.args.k}" / f"{name}.json"
        if path.is_file():
            return json.loads(path.read_text())
        from recllm.apps.recommender import Recommender
        from recllm.eval.run import evaluate_recommender
        from recllm.io import write_json_atomic
        from recllm.tasks.dialogue import reply_stop_token

        rec = Recommender.from_pretrained(model_dir, engine="hf", max_k=self.args.k)
        stop = reply_stop_token(rec.tokenizer)
        k = self.args.k

        def ranked(prompts) -> tuple[list[list[str]], float]:
            t0 = time.perf_counter()
            out = rec.recommend_prompts(prompts, k, stop_token_id=stop)
            return [[r.item_id for r in row] for row in out], time.perf_counter() - t0

        targets = [ex.target for ex in self.users]
        plain, s_plain = ranked(self.prompts(lambda ex: None))
        steered_users = [n for n, ex in enumerate(self.users) if self.target_steer(ex.target)]
        described, s_desc = ranked(self.prompts(lambda ex: self.target_steer(ex.target)))
        figs: dict = {
            "users": len(self.users),
            "hit_plain": sum(t in r for t, r in zip(targets, plain, strict=True)) / len(targets),
            "hit_described": sum(targets[n] in described[n] for n in steered_users)
            / max(1, len(steered_users)),
            "hit_plain_same_users": sum(targets[n] in plain[n] for n in steered_users)
            / max(1, len(steered_users)),
            "described_users": len(steered_users),
            "users_per_second": round(2 * len(targets) / (s_plain + s_desc), 3),
        }
        shares = {}
        for cat in self.categories:
            asked, _ = ranked(self.prompts(lambda ex, c=cat: c))
            key = (cat.facet, cat.tag)

            def share(rows, key=key) -> float:
                hits = sum(
                    any((s.facet, s.tag) == key for s in self.tags[i]) for row in rows for i in row
                )
                return hits / max(1, sum(len(row) for row in rows))

            shares[f"{cat.label} {cat.tag}"] = {
                "asked": round(share(asked), 4),
                "plain": round(share(plain), 4),
                "catalog": round(self.catalog_share[key], 4),
            }
        figs["category_share"] = shares
        res = evaluate_recommender(
            rec.backend,
            rec.tokenizer,
            rec.sid_map,
            self.users,
            rec.spec,
            self.dataset.catalog,
            beams=k,
            ks=(k,),
            batch_size=32,
        )
        figs[f"rec_recall@{k}"] = res.metrics[f"recall@{k}"]
        write_json_atomic(path, figs)
        return figs


def main(argv: list[str] | None = None) -> dict:
    import logging

    from recllm.io import write_json_atomic

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dialogue = train_arm(args, out, "dialogue", dialogue=True)
    arms = {"start (never saw a conversation)": Path(args.start)}
    if args.control:
        arms["control: same steps, no dialogue rows"] = train_arm(args, out, "control", False)
    arms["dialogue SFT"] = dialogue
    probe = Probe(args, dialogue)
    rows = {}
    for label, model_dir in arms.items():
        name = {"dialogue SFT": "dialogue"}.get(label, "start" if "start" in label else "control")
        rows[label] = probe.ask(model_dir, name)
    minutes = {
        arm: round(json.loads((out / arm / "minutes.json").read_text())["minutes"], 1)
        for arm in ("dialogue", "control")
        if (out / arm / "minutes.json").is_file()
    }
    summary = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "start": str(args.start),
        "settings": vars(args),
        "train_minutes": minutes,
        "rows": rows,
    }
    write_json_atomic(out / "summary.json", summary)
    print(table(rows, args.k))
    plot(summary, out / "dialogue_benchmark.png")
    last = {
        label: {
            "hit_plain": r["hit_plain"],
            "hit_described": r["hit_described"],
            "rec_recall": r[f"rec_recall@{args.k}"],
            "category_share_asked": {c: v["asked"] for c, v in r["category_share"].items()},
        }
        for label, r in rows.items()
    }
    print(json.dumps(last))
    return summary


def table(rows: dict[str, dict], k: int) -> str:
    from recllm.eval.report import Column, metrics_table

    def mean_share(which: str):
        return lambda f: (
            sum(v[which] for v in f["category_share"].values()) / max(1, len(f["category_share"]))
        )

    return metrics_table(
        rows,
        columns=(),
        extra=(
            Column(f"hit@{k}", lambda f: f["hit_plain"]),
            Column("+desc", lambda f: f["hit_described"]),
            Column("cat.ask", mean_share("asked")),
            Column("cat.no", mean_share("plain")),
            Column(f"R@{k}", lambda f: f[f"rec_recall@{k}"], ".4f"),
            Column("users/s", lambda f: f["users_per_second"], ".2f"),
        ),
    )


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from recllm.io import atomic_path

    rows = summary["rows"]
    names = list(rows)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.2))
    x = np.arange(len(names))
    ax1.bar(x - 0.2, [rows[n]["hit_plain"] for n in names], 0.4, label="plain request")
    ax1.bar(
        x + 0.2,
        [rows[n]["hit_described"] for n in names],
        0.4,
        label="request names a tag of the target",
    )
    ax1.set_xticks(x, [n.split(" (")[0] for n in names], fontsize=8)
    ax1.set_title(f"target in the top {summary['settings']['k']}")
    ax1.set_ylim(bottom=0)
    ax1.legend(fontsize=7)
    cats = list(next(iter(rows.values()))["category_share"])
    width = 0.8 / (len(names) + 1)
    cx = np.arange(len(cats))
    for j, n in enumerate(names):
        ax2.bar(
            cx + j * width,
            [rows[n]["category_share"][c]["asked"] for c in cats],
            width,
            label=f"{n.split(' (')[0]}: asked",
        )
    plain = rows[names[-1]]["category_share"]
    ax2.bar(
        cx + len(names) * width,
        [plain[c]["plain"] for c in cats],
        width,
        color="0.6",
        label=f"{names[-1]}: not asked",
    )
    ax2.scatter(
        cx + 0.4,
        [plain[c]["catalog"] for c in cats],
        color="k",
        marker="_",
        s=300,
        label="share of the catalog",
        zorder=3,
    )
    ax2.set_xticks(cx + 0.4, cats, fontsize=8)
    ax2.set_title("share of recommended items in the asked category")
    ax2.legend(fontsize=7)
    fig.suptitle(f"{next(iter(rows.values()))['users']} test users", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


if __name__ == "__main__":
    main()
