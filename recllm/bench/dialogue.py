"""The dialogue benchmark (``scripts/dialogue_benchmark.py``): does a dialogue-trained model use
the user's words?

The dialogue arm (and its control) is a :func:`recllm.bench.arms.train_arm` run of
``recipes/plum_sft.py`` from the start model; :class:`Probe` asks every arm the same dialogue
prompts of the same test users (plain, describing the target, asking for a category) and caches
each arm's figures in a :class:`recllm.bench.scoring.ScoreCache`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from recllm.bench.arms import train_arm
from recllm.bench.scoring import ScoreCache, digest, model_fingerprint

__all__ = ["Probe", "last_line", "plot", "table", "train_dialogue_arm"]

ROOT = Path(__file__).resolve().parents[2]


def train_dialogue_arm(
    start: Path, arm_dir: Path, *, dialogue_weight: float, steps: int, batch: int,
    learning_rate: float, seed: int,
) -> Path:  # fmt: skip
    """``recipes/plum_sft.py`` from the start model (its SIDs and vocabulary reused) with the
    dialogue task at ``dialogue_weight`` in the start's own mixture (0: the control)."""
    from recllm.tasks.prompting import PromptSpec
    from recllm.vocab.checkpoint import read_vocab_record

    data = PromptSpec.from_model_dir(start).data or {}
    record = read_vocab_record(start).get("recommender") or {}
    overrides = {
        "model_name_or_path": str(start),
        "sid_map": str(start),  # the start's SIDs and vocabulary
        "warmup_steps_embed": 0,
        "max_steps": steps,
        "per_device_train_batch_size": batch,
        "learning_rate": learning_rate,
        "seed": seed,
        **{k: data[k] for k in ("data_path", "max_users", "max_history", "split") if k in data},
        "rec_history_titles": bool((record.get("task") or {}).get("rec_history_titles")),
        "rec_history_markers": bool((record.get("task") or {}).get("rec_history_markers", True)),
        "mixture": {"dialogue": dialogue_weight},
        "distill_weight": 0.0,  # dialogue turns only: no recommendation rows for a teacher
    }
    recipe, config = ROOT / "recipes" / "plum_sft.py", ROOT / "recipes" / "quickstart.yaml"
    return train_arm(recipe, arm_dir, config=config, overrides=overrides).model_dir


class Probe:
    """Dialogue prompts for the sampled test users, asked of one model at a time."""

    def __init__(
        self, start: Path, dialogue_dir: Path, out: Path, *, users: int, k: int, categories: int,
        seed: int,
    ) -> None:  # fmt: skip
        from recllm.eval.run import eval_examples, select_users
        from recllm.sid.sidmap import SIDMap
        from recllm.tasks.dialogue import item_tags
        from recllm.tasks.prompting import PromptSpec, task_builder

        self.k = k
        _, self.dataset, examples = eval_examples(start, None, "test", 0)
        self.users = select_users(examples, users, seed=seed)
        self.cache = ScoreCache(Path(out) / "eval" / f"u{len(self.users)}_k{k}")
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
        ][:categories]

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
        """The figures of one model (cached as ``name``, keyed by its files, the users, ``k``
        and the steering categories)."""
        key = {
            "model": model_fingerprint(model_dir),
            "users": digest([(list(ex.history), ex.target) for ex in self.users]),
            "k": self.k,
            "categories": [f"{c.facet}:{c.tag}" for c in self.categories],
        }
        return self.cache.get_or_compute(name, key, lambda: self._ask(model_dir))

    def _ask(self, model_dir: Path) -> dict:
        from recllm.apps.recommender import Recommender
        from recllm.eval.run import evaluate_recommender
        from recllm.tasks.dialogue import reply_stop_token

        k = self.k
        rec = Recommender.from_pretrained(model_dir, engine="hf", max_k=k)
        stop = reply_stop_token(rec.tokenizer)

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
        return figs


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

    from recllm.bench.report import save_png

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
    save_png(fig, path)


def last_line(rows: Mapping[str, Mapping[str, Any]], k: int) -> dict:
    """The figures of the last output line."""
    return {
        label: {
            "hit_plain": r["hit_plain"],
            "hit_described": r["hit_described"],
            "rec_recall": r[f"rec_recall@{k}"],
            "category_share_asked": {c: v["asked"] for c, v in r["category_share"].items()},
        }
        for label, r in rows.items()
    }
