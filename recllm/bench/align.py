"""The preference-alignment benchmark (``scripts/align_benchmark.py``): an SFT model against
itself after DPO, AW-SFT and GRPO, every row scored on the same users.

One :class:`AlignBench` holds the run's data, users, reward model and scored rows; each stage is
an arm (:func:`recllm.bench.arms.train_arm`) of ``recipes/<stage>.py`` from the SFT start, and
each scored model keeps every user's rank for the paired comparison with the start.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shlex
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from recllm.bench.arms import train_arm
from recllm.bench.scoring import ScoreCache, Scorer, model_fingerprint

logger = logging.getLogger(__name__)

__all__ = ["DEFAULTS", "STAGES", "AlignBench", "last_line", "plot", "table"]

ROOT = Path(__file__).resolve().parents[2]
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
SASREC_ROW = "SASRec (the reward model, same run)"


class AlignBench:
    """The data, users and reward model of one run, and its scored rows."""

    def __init__(
        self, sft: str | Path, out: str | Path, *, split: str, users: int, seed: int, beams: int
    ) -> None:
        from recllm.eval.run import eval_examples, select_users
        from recllm.tasks.prompting import PromptSpec

        self.sft, self.out, self.split, self.beams = Path(sft), Path(out), split, beams
        self.spec = PromptSpec.from_model_dir(sft)
        self.data_fields, self.dataset, examples = eval_examples(sft, None, split)
        self.users = select_users(examples, users, seed)
        cache = ScoreCache(self.out / "eval" / f"{split}{len(self.users)}_b{beams}")
        self.scorer = Scorer(self.users, self.dataset.catalog, cache, beams=beams, batch_size=64)
        self.rows: dict[str, dict] = {}
        self.ranks: dict[str, list[int]] = {}

    def reward_model(self, given: str | None, minutes: float, dropout: float, batch: int) -> Path:
        """Train (once) the SASRec reward model on the training split, and score it."""
        from recllm.baselines.sasrec import SASRecConfig, save_sasrec, train_sasrec
        from recllm.data import DataConfig, split_dataset
        from recllm.data.fingerprint import data_fingerprint

        rm_dir = Path(given or self.out / "reward_model")
        split = split_dataset(self.dataset, DataConfig(**self.data_fields))
        if not (rm_dir / "sasrec.json").is_file() and given is None:
            t0 = time.monotonic()
            cfg = SASRecConfig(time_budget_minutes=minutes, dropout=dropout, batch_size=batch)
            rm, _ = train_sasrec(split, self.dataset.catalog, cfg, progress=False)
            meta = {
                "data_fingerprint": data_fingerprint(split, self.dataset.catalog),
                "minutes": round((time.monotonic() - t0) / 60, 2),
            }
            save_sasrec(rm, rm_dir, meta=meta)

        def score() -> dict:
            from recllm.baselines.sasrec import evaluate_sasrec, load_sasrec

            rm, record = load_sasrec(rm_dir)
            scored = dataclasses.replace(split, **{self.split: self.users})
            figs = evaluate_sasrec(rm, scored, self.split, ks=(5, 10))
            return {**figs, "minutes": record["meta"].get("minutes")}

        key = self.scorer.key(rm_dir, {"sasrec": True})
        key["model"] = model_fingerprint(rm_dir)
        self.rows[SASREC_ROW] = self.scorer.cache.get_or_compute("sasrec", key, score)
        return rm_dir

    def score(self, row: str, name: str, model_dir: Path, minutes: float | None) -> None:
        """Score ``model_dir`` (cached as ``name``) into the row ``row``."""
        scored = self.scorer.score(name, model_dir)
        figs = dict(scored.figures)
        figs.update(eval_minutes=round(figs["seconds"] / 60, 2), minutes=minutes, eval=name)
        self.rows[row] = figs
        self.ranks[row] = scored.ranks

    def run_stage(self, stage: str, seed: int, rm_dir: Path, reward: str, extra: str) -> Path:
        """``recipes/<stage>.py`` from the SFT start into ``OUT/<stage>_seed<S>`` (once)."""
        args = ["--model_dir", str(self.sft), "--seed", str(seed), "--reward", reward]
        args += ["--reward_model", str(rm_dir)]
        args += DEFAULTS.get(self.spec.style, {}).get(stage, [])
        args += shlex.split(extra)
        out = self.out / f"{stage}_seed{seed}"
        recipe = ROOT / "recipes" / f"{stage}.py"
        train_arm(recipe, out, config=ROOT / "recipes" / f"{stage}.yaml", args=args)
        return out

    def stage_rows(self, stage: str, seed: int, out: Path) -> None:
        """Score a stage's model (DPO, AW-SFT: every round) with the recipe's own minutes."""
        import json

        log = json.loads((out / f"{stage}_log.json").read_text())
        if stage == "grpo":
            minutes = round(log["seconds"] / 60, 2)
            self.score(f"+ GRPO (seed {seed})", f"grpo_seed{seed}", out / "model", minutes)
            return
        label = {"dpo": "DPO", "awsft": "AW-SFT"}[stage]
        total = 0.0
        for r, rnd in enumerate(log["rounds"], 1):
            total += rnd["seconds"] / 60
            row = f"+ {label} round {r} (seed {seed})" if len(log["rounds"]) > 1 else None
            self.score(
                row or f"+ {label} (seed {seed})",
                f"{stage}_seed{seed}_round{r}",
                out / f"round{r}" / "model",
                round(total, 2),
            )

    def published(self) -> dict[str, dict]:
        """TIGER's published test rows of this data set (test split only: they cover all users)."""
        if self.split != "test":
            return {}
        from recllm.eval.published import load_published, match_dataset, published_rows

        key = match_dataset(str(self.data_fields.get("data_path")))
        if not key:
            return {}
        rows = published_rows(key, load_published())
        return {f"{n} (published)": f for n, f in rows.items() if n.startswith("TIGER")}


def table(rows: Mapping[str, Mapping[str, Any]]) -> str:
    from recllm.eval.report import Column, metrics_table

    return metrics_table(
        rows,
        extra=(
            Column("invalid", lambda f: f.get("invalid_rate")),
            Column("minutes", lambda f: f.get("minutes"), ".1f"),
        ),
    )


def plot(summary: Mapping[str, Any], path: Path) -> None:
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


def last_line(summary: Mapping[str, Any], rows: Sequence[str] | None = None) -> dict:
    """The figures of the last output line: R@10, N@10, ratio to the start, minutes, p."""
    rows_ = summary["rows"]
    base = rows_["SFT start"]
    paired = summary.get("paired_vs_sft") or {}
    return {
        name: {
            "R@10": round(f["recall@10"], 4),
            "N@10": round(f["ndcg@10"], 4),
            "R@10_vs_sft": round(f["recall@10"] / base["recall@10"], 3)
            if base["recall@10"]
            else math.nan,
            "minutes": f.get("minutes"),
            **({"R@10_p": paired[name]["R@10"]["p"]} if name in paired else {}),
        }
        for name, f in rows_.items()
        if rows is None or name in rows
    }
