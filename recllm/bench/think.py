"""The OneRec-Think benchmark (``scripts/think_benchmark.py``): no-think SFT against think SFT
against think-ahead, from one start model, on the same test users.

Both arms are :func:`recllm.bench.arms.train_arm` runs of ``recipes/onerec_think.py`` with the
same mixture of text features (the control without the reasoning rows); every row is a
:class:`recllm.bench.scoring.Scorer` score, compared user by user with the no-think arm.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recllm.bench.arms import train_arm

logger = logging.getLogger(__name__)

__all__ = [
    "ROWS",
    "ThinkSettings",
    "labels",
    "last_line",
    "plot",
    "score_rows",
    "table",
    "train_arms",
]

ROOT = Path(__file__).resolve().parents[2]
ROWS = (
    "start",
    "nothink",
    "think_plain",
    "think_greedy",
    "think_sampled",
    "ahead_nothink",
    "ahead_think",
)


@dataclass(frozen=True)
class ThinkSettings:
    """The arms' shared training settings."""

    start: Path
    steps: int
    batch: int
    learning_rate: float
    seed: int


def run_cli(args: list[str]) -> None:
    """``python -m recllm.cli ARGS`` in its own process, offline, echoed."""
    cmd = [sys.executable, "-m", "recllm.cli", *args]
    print("+", shlex.join(cmd), flush=True)
    subprocess.run(cmd, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def generate_rationales(start: Path, per_user: int, out: Path) -> Path:
    """``recllm reason generate`` from the start model into ``out`` (once)."""
    if not (out / "rationales.json").is_file():
        run_cli(
            [
                *("reason", "generate", "--model-dir", str(start)),
                *("--per-user", str(per_user), "--out", str(out), "--overwrite"),
            ]
        )
    return out


def train_arms(settings: ThinkSettings, out: Path, rationales: Path) -> dict[str, Path]:
    """The no-think (control) and think arms: the same start, steps, batch, seed and text
    features (the catalog text the rationales are built from is a task of both)."""
    from recllm.tasks.prompting import PromptSpec

    data = PromptSpec.from_model_dir(settings.start).data or {}
    common = {
        "model_name_or_path": str(settings.start),
        "rationales": str(rationales),
        "max_steps": settings.steps,
        "per_device_train_batch_size": settings.batch,
        "learning_rate": settings.learning_rate,
        "seed": settings.seed,
        "mixture": {"rec_sequence": 1.0, "catalog_sid_to_text": 1.0, "reason_rec": 1.0},
        **{k: data[k] for k in ("data_path", "max_users", "max_history", "split") if k in data},
    }
    recipe, config = ROOT / "recipes" / "onerec_think.py", ROOT / "recipes" / "onerec_think.yaml"
    return {
        name: train_arm(
            recipe, out / name, config=config, overrides={**common, "control": control}
        ).model_dir
        for name, control in (("nothink", True), ("think", False))
    }


def think_ahead_prefixes(
    think: Path,
    out: Path,
    *,
    paths: int,
    prefixes: int,
    depth: int,
    tokens: int,
    engine: str,
    users: int,
    eval_users: int,
) -> Path:
    """``recllm think-ahead`` with the think arm as the reasoner: the prefix file (once)."""
    path = out / f"prefixes_t{paths}_m{prefixes}_d{depth}_u{users}_{engine}.parquet"
    if not path.is_file():
        run_cli(
            ["think-ahead", "--model", str(think), "--paths", str(paths)]
            + ["--prefixes", str(prefixes), "--depth", str(depth), "--think-tokens", str(tokens)]
            # vLLM: 64 users (128 sequences) per engine call fit its 30% CPU KV cache
            + ["--engine", engine, "--batch-size", "64" if engine == "vllm" else "16"]
            + ["--out", str(path)]
            + (["--max-users", str(eval_users), "--sample-seed", "0"] if eval_users else [])
        )
    return path


def score_rows(args: Any, out: Path, arms: Mapping[str, Path]) -> tuple[dict, dict | None, int]:
    """Every wanted row of ``args.rows`` (the script's flags) scored on the same users: (rows
    with their paired comparison to the no-think arm, the think-ahead record or None, users)."""
    from recllm.bench.paired import paired_vs
    from recllm.bench.scoring import ScoreCache, Scorer
    from recllm.decode.prefixes import read_prefix_file
    from recllm.decode.think import ThinkOptions
    from recllm.eval.run import check_prefix_file, eval_examples, select_users

    data_fields, dataset, examples = eval_examples(args.start, None, "test", 0)
    users = select_users(examples, args.eval_users, seed=0)
    cache = ScoreCache(out / "eval" / f"u{len(users)}_b{args.beams}")
    scorer = Scorer(users, dataset.catalog, cache, beams=args.beams, dtype="float32")
    want = set(args.rows) | {"nothink"}
    r, on_vllm = args.think_rationales, args.think_engine == "vllm"
    label = labels(r, args.paths, args.prefixes, args.depth, on_vllm)
    plain, thinker = arms["nothink"], arms["think"]
    plans = {
        "start": (Path(args.start), {}),
        "nothink": (plain, {}),
        "think_plain": (thinker, {}),
        "think_greedy": (
            thinker,
            {"think": ThinkOptions(1, args.think_tokens, 0.0, 1.0, args.seed)},
        ),
        "think_sampled": (
            thinker,
            {"think": ThinkOptions(r, args.think_tokens, 1.0, 1.0, args.seed)},
        ),
    }
    scored, record = {}, None
    for key in (k for k in ROWS[:5] if k in want):
        model_dir, kw = plans[key]
        name, engine = (f"{key}_vllm", "vllm") if "think" in kw and on_vllm else (key, "hf")
        scored[key] = scorer.score(name, model_dir, engine=engine, **kw)
    if want & {"ahead_nothink", "ahead_think"}:
        prefix_file = think_ahead_prefixes(
            thinker, out, paths=args.paths, prefixes=args.prefixes, depth=args.depth,
            tokens=args.think_tokens, engine=args.ahead_engine, users=len(users),
            eval_users=args.eval_users,
        )  # fmt: skip
        # made for the test users of the same data (a file of another split leaks targets)
        check_prefix_file(str(prefix_file), "test", data_fields, dataset)
        sets, record = read_prefix_file(prefix_file)
        for key, model_dir in (("ahead_nothink", plain), ("ahead_think", thinker)):
            if key in want:
                name = f"{key}_{args.ahead_engine}"
                scored[key] = scorer.score(name, model_dir, prefixes=sets)
    paired = paired_vs({k: s.ranks for k, s in scored.items()}, "nothink")
    rows = {label[k]: {**s.figures, "paired_vs_nothink": paired[k]} for k, s in scored.items()}
    return rows, record, len(users)


def labels(rationales: int, paths: int, prefixes: int, depth: int, on_vllm: bool) -> dict:
    """The printed name of each row."""
    on = " on vLLM" if on_vllm else ""
    return {
        "start": "PLUM start (quickstart model)",
        "nothink": "no-think SFT (control arm)",
        "think_plain": "think SFT, answering without thinking",
        "think_greedy": f"think SFT, thinking (1 greedy rationale){on}",
        "think_sampled": f"think SFT, thinking ({rationales} sampled rationales, merged){on}",
        "ahead_nothink": f"think-ahead ({paths} paths x {prefixes} prefixes, depth "
        f"{depth}) -> no-think SFT",
        "ahead_think": "think-ahead -> think SFT answering without thinking",
    }


def table(rows: Mapping[str, Mapping[str, Any]]) -> str:
    from recllm.eval.report import Column, metrics_table

    def p_value(fig: Mapping[str, Any]) -> float | None:
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


def plot(summary: Mapping[str, Any], path: Path) -> None:
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


def last_line(summary: Mapping[str, Any]) -> dict:
    """The figures of the last output line."""
    last: dict[str, Any] = {
        label: {
            "R@10": fig["recall@10"],
            "N@10": fig["ndcg@10"],
            "users_per_second": fig["users_per_second"],
            "invalid_rate": fig["invalid_rate"],
        }
        for label, fig in summary["rows"].items()
    }
    record = summary.get("think_ahead")
    if record is not None:
        last["prefix_recall"] = record["prefix_recall"]
        last["think_ahead_users_per_second"] = record["users_per_second"]
    return last
