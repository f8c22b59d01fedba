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

from recllm.bench.curves import (
    RUNS,
    comparison_lines,
    curve_done,
    full_finetuning_config,
    plot_comparison,
    summarize,
)

ROOT = Path(__file__).resolve().parents[1]
# both runs: a schedule a 2-core CPU trains in ~25 min each (bf16) and a rate that neither
# wrecks the pretrained weights nor starves the random ones
DEFAULT_OVERRIDES = ["--max_steps", "300", "--learning_rate", "5e-4", "--warmup_steps", "20"]


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


def run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def main(argv: list[str] | None = None) -> dict:
    args, overrides = parse_args(argv)
    out = Path(args.out)
    if args.replot:
        src = Path(args.replot)
        summary = json.loads((src / "summary.json").read_text())
        plot_comparison(summary, src / "pretrained_vs_scratch.png")
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
    config = full_finetuning_config(Path(args.config), out)
    base = yaml.safe_load(config.read_text())
    data_path = base.get("data_path", "ml-100k")
    model = base.get("model_name_or_path", "?")
    eval_flags = ["--every", str(args.every), "--eval-users", str(args.eval_users)]
    eval_flags += ["--eval-seed", str(args.eval_seed)]
    for label in RUNS:
        if curve_done(out / label / "curve.json"):
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
    summary = summarize(out, str(data_path), model)
    from recllm.io import write_json_atomic

    write_json_atomic(out / "summary.json", summary)
    plot_comparison(summary, out / "pretrained_vs_scratch.png")
    print(f"\n{data_path}: {summary['users']} test users (sample seed {summary['eval_seed']})")
    print("\n".join(comparison_lines(summary)))
    print(f"wrote {out / 'summary.json'} and {out / 'pretrained_vs_scratch.png'}")
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
