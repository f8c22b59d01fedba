"""PLUM's claim, measured: a pretrained LM against the same architecture trained from scratch.

    python scripts/pretrained_vs_scratch.py --out outputs/pvs          # ~75 min on 2 cores
    python scripts/pretrained_vs_scratch.py --out outputs/pvs --max_steps 20 --every 10 \\
        --eval-users 50 --seqlm-minutes 0.5 --sasrec-minutes 0.3      # a quick look
    python scripts/pretrained_vs_scratch.py --replot outputs/pvs       # the PNG again

PLUM (YouTube) reports that an LLM pretrained on text, then taught semantic IDs, recommends better
than the same network trained on the recommendation data alone. This script trains both on the
same data, split, SID map, steps, schedule and seed: the PLUM recipe (``--config``, default
``recipes/quickstart.yaml``, with full fine-tuning: every layer trains in both runs) once with
``init_weights: pretrained`` and once with ``init_weights: random`` (the model's own initialiser).
Each run is ``scripts/learning_curve.py``: Recall@10 / NDCG@10 of trie-constrained beam search
(beam 10) every ``--every`` steps on ``--eval-users`` test users, a seeded random sample
(``--eval-seed``) so that no method is judged on an easy slice. Beside them, on the same users
of the same split: most-popular, recllm's from-scratch SID-sequence decoder (``recipes/seqlm.yaml``)
and SASRec, trained in one run of ``scripts/benchmark.py`` with the given budgets.

The second run reuses the SID map the first one built (``--sid_map``), so both read the same
codes. A finished part (its ``curve.json`` marked done, or the baselines' ``metrics.json``) is
not run again: a rerun after a stop goes on with what is missing. Recipe keys after the script's
own flags (``--learning_rate 1e-4``) go to both runs; the defaults below are added first.

Writes ``summary.json`` and ``pretrained_vs_scratch.png`` (both curves against training minutes,
the baselines as points at their training minutes, most-popular as a line) into ``--out``; the
last line of output is one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# both runs: a schedule a 2-core CPU trains in ~25 min each (bf16) and a rate that neither
# wrecks the pretrained weights nor starves the random ones
DEFAULT_OVERRIDES = ["--max_steps", "300", "--learning_rate", "5e-4", "--warmup_steps", "20"]
RUNS = ("pretrained", "random")


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--config", default=str(ROOT / "recipes" / "quickstart.yaml"), help="recipe YAML"
    )
    p.add_argument("--out", default="outputs/pretrained_vs_scratch", help="output directory")
    p.add_argument("--every", type=int, default=100, help="evaluate every N SFT steps")
    p.add_argument("--eval-users", type=int, default=300, help="test users scored (0 = all)")
    p.add_argument("--eval-seed", type=int, default=0, help="seed of the users' sample")
    p.add_argument(
        "--seqlm-minutes", type=float, default=5.0, help="SID-sequence decoder budget (0 = skip)"
    )
    p.add_argument("--sasrec-minutes", type=float, default=3.0, help="SASRec budget")
    p.add_argument("--replot", default=None, help="only redraw the PNG of this output directory")
    return p.parse_known_args(argv)


def run_config(base: Path, out: Path) -> Path:
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


def done(curve_json: Path) -> bool:
    return curve_json.is_file() and bool(json.loads(curve_json.read_text()).get("done"))


def run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from recllm.io import atomic_path

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
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def summarize(args: argparse.Namespace, out: Path, data_path: str, model: str) -> dict:
    curves, first = {}, None
    for label in RUNS:
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


def main(argv: list[str] | None = None) -> dict:
    args, overrides = parse_args(argv)
    out = Path(args.out)
    if args.replot:
        src = Path(args.replot)
        summary = json.loads((src / "summary.json").read_text())
        plot(summary, src / "pretrained_vs_scratch.png")
        print(f"wrote {src / 'pretrained_vs_scratch.png'}")
        return summary
    import torch
    import yaml

    print(f"command: python {' '.join(sys.argv)}")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, ATen {torch.backends.cpu.get_cpu_capability()}"
    )
    out.mkdir(parents=True, exist_ok=True)
    config = run_config(Path(args.config), out)
    base = yaml.safe_load(config.read_text())
    data_path = base.get("data_path", "ml-100k")
    model = base.get("model_name_or_path", "?")
    eval_flags = ["--every", str(args.every), "--eval-users", str(args.eval_users)]
    eval_flags += ["--eval-seed", str(args.eval_seed)]
    for label in RUNS:
        if done(out / label / "curve.json"):
            print(f"{label}: done in an earlier run ({out / label / 'curve.json'})")
            continue
        cmd = [sys.executable, str(ROOT / "scripts" / "learning_curve.py"), "--config", str(config)]
        cmd += [*eval_flags, "--out", str(out / label), "--output_dir", str(out / label / "run")]
        cmd += ["--init_weights", label, "--overwrite_output_dir", "true"]
        if label != RUNS[0]:  # the same codes as the first run
            cmd += ["--sid_map", str(out / RUNS[0] / "run" / "sids")]
        run(cmd + DEFAULT_OVERRIDES + overrides)
    if args.seqlm_minutes > 0 and not (out / "baselines" / "metrics.json").is_file():
        cmd = [sys.executable, str(ROOT / "scripts" / "benchmark.py"), "--data", str(data_path)]
        cmd += ["--out", str(out / "baselines"), "--recllm-minutes", str(args.seqlm_minutes)]
        cmd += ["--ensemble", "1", "--sasrec-minutes", str(args.sasrec_minutes), "--beams", "10"]
        cmd += ["--eval-users", str(args.eval_users), "--eval-seed", str(args.eval_seed)]
        cmd += ["--max_history", str(base.get("max_history", 20))]
        run(cmd)
    summary = summarize(args, out, str(data_path), model)
    from recllm.io import write_json_atomic

    write_json_atomic(out / "summary.json", summary)
    plot(summary, out / "pretrained_vs_scratch.png")
    print(f"\n{data_path}: {summary['users']} test users (sample seed {summary['eval_seed']})")
    print(f"{'method':<40}{'minutes':>9}{'R@10':>8}{'N@10':>8}{'cov':>8}")
    for label, curve in summary["curves"].items():
        c = curve[-1]
        name = f"{model} {label} init, {c['step']} steps"
        print(
            f"{name:<40}{c['train_min']:>9.1f}{c['R10']:>8.4f}{c['N10']:>8.4f}{c['coverage']:>8.4f}"
        )
    for label, b in summary["baselines"].items():
        print(
            f"{label:<40}{b['train_min']:>9.1f}{b['R10']:>8.4f}{b['N10']:>8.4f}{b['coverage']:>8.4f}"
        )
    p = summary["popular"]
    print(f"{'most popular':<40}{'-':>9}{p['R10']:>8.4f}{p['N10']:>8.4f}{p['coverage']:>8.4f}")
    print(f"wrote {out / 'summary.json'} and {out / 'pretrained_vs_scratch.png'}")
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
