"""The one-dataset benchmark (``scripts/benchmark.py``): recllm's SID-sequence decoder(s) and
SASRec trained in one run on the same split, scored on the same test users, beside the
published rows of that dataset.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

__all__ = [
    "published_notes",
    "recipe_argv",
    "sasrec_baseline",
    "seqlm_rows",
    "table",
    "write_outputs",
]


def recipe_argv(args: Any, extra: list[str]) -> list[str]:
    """The recipe's command line: its YAML, this run's data and output, then the overrides."""
    argv = ["--config", args.config, "--data_path", str(args.data)]
    argv += ["--output_dir", str(Path(args.out) / "seqlm")]
    if args.recllm_minutes is not None:
        argv += ["--time_budget_minutes", str(args.recllm_minutes)]
    if args.ensemble is not None:
        argv += ["--ensemble", str(args.ensemble)]
    return argv + extra


def table(rows: dict[str, dict[str, float]], columns: tuple[str, ...]) -> str:
    width = max(28, *(len(n) + 2 for n in rows))
    head = f"{'method':<{width}}" + "".join(
        f"{c.replace('recall', 'R').replace('ndcg', 'N'):>9}" for c in columns
    )
    lines = [head]
    for name, fig in rows.items():
        cells = "".join(
            f"{'-':>9}" if math.isnan(fig.get(c, math.nan)) else f"{fig[c]:>9.4f}" for c in columns
        )
        lines.append(f"{name:<{width}}" + cells)
    return "\n".join(lines)


def sasrec_baseline(
    split: Any,
    test: list,
    catalog: Any,
    minutes: float,
    dropout: float,
    batch: int,
    directory: Path | None = None,
) -> tuple[dict, dict]:
    """SASRec trained within ``minutes`` (epoch chosen on validation NDCG@10), scored on the
    ``test`` users: (figures, info). With ``directory`` it is also saved there (or taken from
    there when it was trained with the same settings on the same split), for the recipe to use
    as its teacher."""
    import json

    from recllm.baselines.sasrec import (
        SASREC_FILE,
        SASRecConfig,
        evaluate_sasrec,
        split_sasrec,
        train_sasrec,
    )

    t = time.monotonic()
    cfg = SASRecConfig(time_budget_minutes=minutes, dropout=dropout, batch_size=batch)
    if directory is None:
        model, history = train_sasrec(split, catalog, cfg, progress=False)
    else:
        model = split_sasrec(directory, split, catalog, cfg, "--sasrec-minutes")
        history = json.loads((Path(directory) / SASREC_FILE).read_text())["meta"]["history"]
    info = {
        "minutes": round((time.monotonic() - t) / 60, 2),
        "epochs": len(history),
        "config": dataclasses.asdict(cfg),
        **({"saved_as_teacher": str(directory)} if directory is not None else {}),
    }
    scored = dataclasses.replace(split, test=test)  # the same users as recllm
    return evaluate_sasrec(model, scored, "test", ks=(5, 10)), info


def seqlm_rows(configs: tuple, test: list, catalog: Any, beams: int) -> tuple[dict, dict]:
    """``recipes/seqlm.py``'s code path (:func:`recllm.train.seqlm.run_seqlm`) with the parsed
    ``configs``, then the first decoder and (several) the ensemble scored on ``test``:
    (rows, info)."""
    from recllm.baselines.sasrec import run_teacher
    from recllm.eval.run import evaluate_recommender, load_ensemble
    from recllm.train.seqlm import run_seqlm

    info: dict[str, Any] = {}
    t = time.monotonic()
    run = run_seqlm(*configs, evaluate=evaluate_recommender, teacher_provider=run_teacher)
    info["recllm_train_minutes"] = round((time.monotonic() - t) / 60, 2)
    info["recllm"] = {
        seed: {
            **{k: v for k, v in s.items() if k not in ("log_history", "valid")},
            "valid": [
                {k: round(h[k], 4) for k in ("epoch", "recall@10", "ndcg@10")}
                for h in s["valid"] or []
            ],
        }
        for seed, s in run.log["seeds"].items()
    }
    models, tok, sid_map, spec = load_ensemble(run.model_dirs)
    decode = dict(beams=beams, ks=(5, 10), batch_size=64)
    rows = {}
    result = evaluate_recommender(models[0], tok, sid_map, test, spec, catalog, **decode)
    rows[f"recllm SID decoder (beam {beams})"] = result.metrics
    info["recllm_eval_minutes"] = round(result.seconds / 60, 2)
    if len(models) > 1:
        result = evaluate_recommender(models, tok, sid_map, test, spec, catalog, **decode)
        rows[f"recllm, {len(models)} decoders (beam {beams})"] = result.metrics
    return rows, info


def published_notes(key: str | None, tables: dict, published: dict, data: Any) -> list[str]:
    """Where the published rows come from, or why there are none."""
    if key is None:
        return [
            f"no published rows: {data} matches no dataset of recllm/eval/published.yaml "
            f"({', '.join(sorted(tables))}); pass --dataset NAME to compare with one"
        ]
    if not published:
        return [f"no published rows: the {key!r} table in recllm/eval/published.yaml has none yet"]
    return [f"  {row.name}: {row.source}" for row in tables[key].rows]


def write_outputs(
    out: Path, rows: dict, published: dict, config: dict, title: str, **extra: Any
) -> None:
    """``out/metrics.json`` (every row, the run's config, ``extra``) and ``out/recall.png``
    (the rows with every figure)."""
    from recllm.eval import plot_recall, save_metrics
    from recllm.eval.published import COLUMNS

    measured = {name: {c: float(fig[c]) for c in COLUMNS} for name, fig in rows.items()}
    complete = {
        n: f for n, f in {**measured, **published}.items() if not any(map(math.isnan, f.values()))
    }
    save_metrics(out / "metrics.json", {**rows, **published}, config, split="test", **extra)
    plot_recall(out / "recall.png", complete, ks=(5, 10), title=f"{title}, test")
