"""Teacher distillation measured (``scripts/distill.py``; issue 30, item 1).

One SASRec is trained on the training split and becomes both the same-run baseline and the
teacher. Arms of the SID-sequence recipe (``recipes/seqlm.py``) are then trained from the same
start and data, one per ``--distill_weight`` (0 = no teacher, the control), each keeping its
best epoch on the recipe's seeded sample of validation users. The weight is chosen on that
validation figure alone; every arm is then scored once on the test users, with the teacher
beside it and each arm compared with the control user by user (:mod:`recllm.bench.paired`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["DistillSettings", "chosen_weight", "plot", "run", "sasrec_lists", "table"]

TEACHER_ROW = "SASRec (the teacher, same run)"
FIGURES = ("recall@5", "ndcg@5", "recall@10", "ndcg@10")


@dataclass(frozen=True)
class DistillSettings:
    """What ``scripts/distill.py`` measures (every flag is a field of the same name)."""

    config: Path
    out: Path
    data: str | None = None
    weights: tuple[float, ...] = (0.0, 1.0)
    temperature: float = 1.0
    teacher_minutes: float = 10.0
    teacher_dropout: float = 0.5
    recllm_minutes: float | None = None
    users: int = 0
    seed: int = 0
    beams: int = 20
    batch_size: int = 64
    recipe_args: tuple[str, ...] = ()


def arm_name(weight: float) -> str:
    return "no teacher (control)" if not weight else f"distill_weight {weight:g}"


def sasrec_lists(model: Any, examples: Sequence[Any], top: int = 20, batch: int = 512) -> list:
    """Every user's ``top`` items in SASRec's full ranking, best first."""
    from recllm.baselines.sasrec import score_histories

    lists = []
    for start in range(0, len(examples), batch):
        chunk = examples[start : start + batch]
        best = score_histories(model, [e.history for e in chunk]).topk(top, dim=1).indices
        lists += [[model.item_ids[j] for j in row] for row in best.tolist()]
    return lists


def best_valid(arm_dir: Path) -> dict[str, float] | None:
    """The arm's validation figures at its kept epoch (the recipe's train_log.json)."""
    log = json.loads((arm_dir / "train_log.json").read_text())
    seed = next(iter(log["seeds"].values()))
    valid = [h for h in seed.get("valid") or [] if h.get("epoch") == seed.get("best_epoch")]
    if not valid:
        return None
    return {k: float(valid[0][k]) for k in ("recall@10", "ndcg@10") if k in valid[0]}


def chosen_weight(valid: dict[float, dict[str, float] | None]) -> float:
    """The weight whose arm reads the highest validation Recall@10 (ties: the smaller weight).

    Raises:
        ValueError: No arm has a validation figure (the recipe ran with ``valid_users 0``).
    """
    scored = {w: v["recall@10"] for w, v in valid.items() if v}
    if not scored:
        raise ValueError("no arm has validation figures: run the recipe with valid_users > 0")
    return max(sorted(scored), key=lambda w: scored[w])


def run(s: DistillSettings, root: Path) -> dict[str, Any]:
    """Teacher, arms, test scores and paired comparisons; returns the summary."""
    from trl import SFTConfig

    from recllm.baselines.sasrec import SASRecConfig, split_sasrec
    from recllm.bench.arms import train_arm
    from recllm.bench.paired import paired_vs
    from recllm.bench.scoring import ScoreCache, Scorer
    from recllm.data import DataConfig, load_rec_dataset, split_dataset
    from recllm.data.splits import select_users
    from recllm.eval.metrics import RankingMetrics
    from recllm.eval.report import target_ranks
    from recllm.sid.config import SIDConfig
    from recllm.train.recipe_args import parse_recipe_args
    from recllm.train.seqlm import SeqLMArguments

    t0 = time.monotonic()
    if 0.0 not in s.weights:
        raise ValueError("--weights must include 0 (the control arm without a teacher)")
    base = ["--config", str(s.config), *(["--data_path", s.data] if s.data else [])]
    base += [*(["--time_budget_minutes", str(s.recllm_minutes)] if s.recllm_minutes else [])]
    base += ["--ensemble", "1", *s.recipe_args]
    types = (SeqLMArguments, DataConfig, SIDConfig, SFTConfig)
    configs = parse_recipe_args(types, [*base, "--output_dir", str(s.out / "check")], prog="seqlm")
    data_cfg, sft_cfg = configs[1], configs[3]
    dataset = load_rec_dataset(config=data_cfg)
    split = split_dataset(dataset, data_cfg)
    test = select_users(split.test, s.users, s.seed if s.users else None)

    teacher_cfg = SASRecConfig(
        time_budget_minutes=s.teacher_minutes,
        dropout=s.teacher_dropout,
        batch_size=64,
        seed=sft_cfg.seed,
    )
    teacher = split_sasrec(s.out / "teacher", split, dataset.catalog, teacher_cfg, "--teacher")
    record = json.loads((s.out / "teacher" / "sasrec.json").read_text())
    teacher_minutes = round(record["meta"]["history"][-1]["seconds"] / 60, 1)  # (reused: then)
    lists = sasrec_lists(teacher, test, s.beams)
    ranks = {TEACHER_ROW: target_ranks([ex.target for ex in test], lists)}
    metrics = RankingMetrics(teacher.item_ids)
    for items, ex in zip(lists, test, strict=True):
        metrics.add(items, ex.target)
    computed = metrics.compute((5, 10))
    teacher_figures = {k: computed[k] for k in FIGURES}

    recipe = root / "recipes" / "seqlm.py"
    cache = ScoreCache(s.out / "scores")
    scorer = Scorer(test, dataset.catalog, cache, s.beams, (5, 10), s.batch_size)
    rows: dict[str, dict[str, Any]] = {}
    valid: dict[float, dict[str, float] | None] = {}
    for weight in s.weights:
        flags = [*base, "--distill_weight", str(weight)]  # 0 said, not left to the YAML
        if weight:
            flags += ["--teacher", str(s.out / "teacher")]
            flags += ["--distill_temperature", str(s.temperature)]
        arm_dir = s.out / f"w{weight:g}"
        arm = train_arm(recipe, arm_dir, args=flags)
        valid[weight] = best_valid(arm_dir)
        scored = scorer.score(f"w{weight:g}", arm.model_dir)
        name = arm_name(weight)
        ranks[name] = scored.ranks
        rows[name] = {
            **{k: scored.figures[k] for k in FIGURES},
            "invalid_rate": scored.figures.get("invalid_rate", 0.0),
            "train_minutes": round(arm.minutes, 1),
            "valid": valid[weight],
        }
    rows[TEACHER_ROW] = {**teacher_figures, "train_minutes": teacher_minutes}
    chosen = chosen_weight({w: v for w, v in valid.items() if w})
    paired = {k: paired_vs(ranks, arm_name(0.0), k=k) for k in (5, 10)}
    return {
        "data": s.data or data_cfg.data_path,
        "test_users": len(test),
        "items": len(dataset.catalog),
        "weights": list(s.weights),
        "temperature": s.temperature,
        "chosen_weight": chosen,
        "chosen_by": "the arms' best validation Recall@10 (the recipe's seeded validation sample)",
        "rows": rows,
        "paired_vs_control": paired[10],
        "paired_vs_control_at5": paired[5],
        "minutes": round((time.monotonic() - t0) / 60, 1),
    }


def table(summary: dict[str, Any]) -> str:
    """The rows as a Markdown table (the chosen weight in bold)."""
    from recllm.bench.report import markdown_table

    chosen = arm_name(summary["chosen_weight"])
    lines = []
    for name, f in summary["rows"].items():
        v = f.get("valid") or {}
        lines.append(
            [
                f"**{name}**" if name == chosen else name,
                *(f"{f[k]:.4f}" for k in ("recall@5", "ndcg@5", "recall@10", "ndcg@10")),
                f"{v['recall@10']:.4f}" if "recall@10" in v else "-",
                f.get("train_minutes", "-"),
            ]
        )
    header = ["method", "R@5", "N@5", "R@10", "N@10", "valid R@10", "train min"]
    return markdown_table(header, lines)


def plot(summary: dict[str, Any], path: Path, title: str) -> Path:
    """R@5, N@5, R@10 and N@10 of every row as grouped bars."""
    from recllm.bench.report import grouped_bars

    keys = ("recall@5", "ndcg@5", "recall@10", "ndcg@10")
    series = {n: [f[k] for k in keys] for n, f in summary["rows"].items()}
    groups = ["Recall@5", "NDCG@5", "Recall@10", "NDCG@10"]
    return grouped_bars(series, groups, path, title=title)
