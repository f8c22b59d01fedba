"""Learning curves (``scripts/learning_curve.py``) and the pretrained-vs-scratch comparison
(``scripts/pretrained_vs_scratch.py``) built from them.

:class:`CurveProbe` is a trainer callback: every N SFT steps and at the last one it ranks fixed
test users with constrained beam search on the model as it is, beside most-popular
(:func:`most_popular`), and writes the curve so far. The rest draws and sums up curves.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from recllm.bench.report import save_png

__all__ = [
    "RUNS",
    "CurveProbe",
    "comparison_lines",
    "curve_done",
    "full_finetuning_config",
    "most_popular",
    "plot_comparison",
    "plot_curve",
    "summarize",
]

RUNS = ("pretrained", "random")


def most_popular(split: Any, users: Sequence[Any], catalog: Any) -> dict[str, float]:
    """R@10, N@10 and coverage of the 10 items most frequent in the training split."""
    from recllm.eval import RankingMetrics

    counts = Counter(i for seq in split.train.sequences.values() for i in seq)
    popular = [i for i, _ in counts.most_common(10)]
    pop = RankingMetrics(list(catalog.ids))
    for ex in users:
        pop.add(popular, ex.target)
    return pop.compute((10,))


class CurveProbe(TrainerCallback):
    """Every ``every`` SFT steps and at the last: the model ranks ``users`` (beam 10, float32);
    a point is appended to ``doc["curve"]`` and ``out/curve.json`` rewritten. Evaluation time
    is left out of the training minutes."""

    def __init__(
        self, *, every: int, users: Sequence[Any], spec: Any, sid_dir: Path, catalog: Any,
        popular: Mapping[str, float], doc: dict, out: Path,
        emit: Callable[[str], None] | None = None,
    ) -> None:  # fmt: skip
        self.every, self.users, self.spec, self.sid_dir = every, users, spec, sid_dir
        self.catalog, self.pop, self.doc, self.out = catalog, popular, doc, out
        self.emit = emit  # each point's line, as it comes (the script prints it)
        self.t0, self.eval_seconds = time.monotonic(), 0.0

    def on_step_end(self, _args, state, control, model=None, processing_class=None, **kw):
        if state.global_step % self.every and state.global_step != state.max_steps:
            return
        import torch

        from recllm.eval.run import evaluate_recommender
        from recllm.io import write_json_atomic
        from recllm.sid.sidmap import SIDMap

        t = time.monotonic()
        was = model.training
        model.eval()
        with torch.autocast("cpu", enabled=False):
            result = evaluate_recommender(
                model,
                processing_class,
                SIDMap.load(self.sid_dir),
                self.users,
                self.spec,
                self.catalog,
                beams=10,
                ks=(10,),
                batch_size=16,
                progress=False,
            )
        model.train(was)
        self.eval_seconds += time.monotonic() - t
        m, pop = result.metrics, self.pop
        point = {
            "step": state.global_step,
            "train_min": round((time.monotonic() - self.t0 - self.eval_seconds) / 60, 2),
            "R10": round(m["recall@10"], 4),
            "N10": round(m["ndcg@10"], 4),
            "coverage": round(m["coverage"], 4),
            "popR10": round(pop["recall@10"], 4),
            "popN10": round(pop["ndcg@10"], 4),
            "pop_coverage": round(pop["coverage"], 4),
        }
        self.doc["curve"].append(point)
        if self.emit is not None:
            self.emit("curve: " + json.dumps(point))
        write_json_atomic(self.out / "curve.json", self.doc)


def plot_curve(doc: Mapping[str, Any], path: Path) -> None:
    """R@10 and N@10 of a curve against training minutes, most-popular as a line (a PNG)."""
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
    save_png(fig, path)


def full_finetuning_config(base: Path, out: Path) -> Path:
    """The base recipe YAML with full fine-tuning (``train_top_layers: null``), into ``out``."""
    import yaml

    from recllm.io import atomic_path

    doc = yaml.safe_load(base.read_text(encoding="utf-8"))
    doc["train_top_layers"] = None
    path = out / "config.yaml"
    with atomic_path(path) as tmp:
        Path(tmp).write_text(
            f"# {base} with full fine-tuning (scripts/pretrained_vs_scratch.py)\n"
            + yaml.safe_dump(doc, sort_keys=False),
            encoding="utf-8",
        )
    return path


def curve_done(curve_json: Path) -> bool:
    """The curve was finished (its last point is the run's last step)."""
    return curve_json.is_file() and bool(json.loads(curve_json.read_text()).get("done"))


def plot_comparison(summary: Mapping[str, Any], path: Path) -> None:
    """Both curves against training minutes, the baselines as points, most-popular as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    styles = {"pretrained": ("C0", "o-"), "random": ("C3", "s-")}
    for ax, key, name in ((axes[0], "R10", "Recall@10"), (axes[1], "N10", "NDCG@10")):
        for label, curve in summary["curves"].items():
            color, style = styles.get(label, ("C2", "^-"))
            ax.plot(
                [c["train_min"] for c in curve],
                [c[key] for c in curve],
                style,
                color=color,
                label=f"{summary['model']} {label} init",
            )
            last = curve[-1]
            ax.annotate(
                f"{last['step']} steps",
                (last["train_min"], last[key]),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
        for (label, b), marker in zip(summary["baselines"].items(), ("D", "*"), strict=False):
            ax.plot([b["train_min"]], [b[key]], marker, ms=9, color="k", label=label)
        ax.axhline(summary["popular"][key], color="gray", ls="--", label="most popular")
        ax.set_xlabel("training minutes")
        ax.set_title(name)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(
        f"pretrained vs from scratch, {summary['data']}: {summary['users']} test users "
        f"(seeded sample), same SIDs, steps and schedule",
        fontsize=9,
    )
    fig.tight_layout()
    save_png(fig, path)


def summarize(out: Path, data_path: str, model: str, runs: Sequence[str] = RUNS) -> dict:
    """The curves of both runs (``out/<run>/curve.json``), most-popular and the baselines."""
    curves, first = {}, None
    for label in runs:
        doc = json.loads((out / label / "curve.json").read_text())
        curves[label] = doc["curve"]
        first = first or doc
    pop = first["curve"][0]
    summary = {
        "data": data_path,
        "model": model,
        "users": first["users"],
        "eval_seed": first.get("eval_seed"),
        "curves": curves,
        "popular": {"R10": pop["popR10"], "N10": pop["popN10"], "coverage": pop["pop_coverage"]},
        "baselines": {},
    }
    metrics_file = out / "baselines" / "metrics.json"
    if metrics_file.is_file():
        doc = json.loads(metrics_file.read_text())
        info = doc["info"]
        for name, fig in doc["metrics"].items():
            if name.startswith("recllm SID decoder"):
                label, minutes = "SID-sequence decoder (seqlm)", info["recllm_train_minutes"]
            elif name.startswith("SASRec"):
                label, minutes = "SASRec", info["sasrec"]["minutes"]
            else:
                continue
            summary["baselines"][label] = {
                "train_min": minutes,
                "R10": round(fig["recall@10"], 4),
                "N10": round(fig["ndcg@10"], 4),
                "coverage": round(fig.get("coverage", float("nan")), 4),
            }
    return summary


def comparison_lines(summary: Mapping[str, Any]) -> list[str]:
    """The printed table: each run's last point, the baselines, most-popular."""
    lines = [f"{'method':<40}{'minutes':>9}{'R@10':>8}{'N@10':>8}{'cov':>8}"]
    for label, curve in summary["curves"].items():
        c = curve[-1]
        name = f"{summary['model']} {label} init, {c['step']} steps"
        lines.append(
            f"{name:<40}{c['train_min']:>9.1f}{c['R10']:>8.4f}{c['N10']:>8.4f}{c['coverage']:>8.4f}"
        )
    for label, b in summary["baselines"].items():
        lines.append(
            f"{label:<40}{b['train_min']:>9.1f}{b['R10']:>8.4f}{b['N10']:>8.4f}{b['coverage']:>8.4f}"
        )
    p = summary["popular"]
    lines.append(
        f"{'most popular':<40}{'-':>9}{p['R10']:>8.4f}{p['N10']:>8.4f}{p['coverage']:>8.4f}"
    )
    return lines
