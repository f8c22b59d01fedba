"""The cost of a DPO step by what trains: every weight, the top N decoder layers, or LoRA.

    python scripts/bench_dpo.py --model outputs/quickstart/model --out outputs/bench_dpo
    python scripts/bench_dpo.py --model DIR --out OUT --top-layers 6 --steps 8 --batch 8

Runs ``recipes/dpo.py`` (its YAML, one round) once per method from the same SFT model, with the
same reward model (the first run trains it; the others get it as ``--reward_model``): each run
mines the same ``--mining-users`` training users with the same policy, so the pairs are the same
and only what trains differs. Each run trains
``--steps`` DPO steps of ``--batch`` pairs; a step's seconds are TRL's ``train_runtime`` over the
steps (trainer set-up and saving are outside it). Methods:

- ``full``: every weight trains (the recipe's default), against a frozen reference model;
- ``top``: ``--train_top_layers N``: the top N layers, the final norm and the SID rows; the
  backward stops below them;
- ``lora``: ``--use_peft``: LoRA adapters on every linear layer and trainable SID rows; the
  reference is the policy with the adapters off, so no second model is held.

Prints each method's seconds per step and its ratio to ``full`` (measured in the same run, on
the same cores), and the round's seconds in all (mining, training, saving). The last line is one JSON object of
the figures. Runs one method after another, never two at once (each uses the machine's threads).
A method whose run with the same flags already finished in OUT is read back, not timed again
(:func:`recllm.bench.arms.train_arm`); delete ``OUT/<method>`` (or pick a new OUT) after changing
the model at the same path or the machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
logger = logging.getLogger("bench_dpo")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", required=True, help="an SFT model directory (plum_sft/seqlm model)")
    p.add_argument("--out", required=True, help="output directory (one subdirectory per method)")
    p.add_argument(
        "--methods", nargs="+", default=["full", "top", "lora"], choices=["full", "top", "lora"]
    )
    p.add_argument("--top-layers", type=int, default=6, help="N of the `top` method (default 6)")
    p.add_argument("--steps", type=int, default=8, help="DPO steps per method (default 8)")
    p.add_argument("--batch", type=int, default=8, help="pairs per step (default 8)")
    p.add_argument("--mining-users", type=int, default=64, help="users mined for the pairs")
    p.add_argument("--beams", type=int, default=10, help="beams mined per user")
    p.add_argument(
        "--reward-minutes",
        type=float,
        default=1.0,
        help="budget of the SASRec reward model the first run trains",
    )
    p.add_argument(
        "--recipe-args",
        nargs=argparse.REMAINDER,
        default=[],
        help="further recipes/dpo.py flags, given to every method",
    )
    args = p.parse_args(argv)
    if args.steps < 2:
        p.error("--steps must be 2 or more")
    return args


METHOD_FLAGS = {
    "full": lambda n: [],
    "top": lambda n: ["--train_top_layers", str(n)],
    "lora": lambda n: ["--use_peft", "true"],
}


def step_seconds(dpo_log: dict) -> tuple[float, int]:
    """``(seconds per step, steps)`` of the first round's trainer, from its ``train_runtime``."""
    history = dpo_log["rounds"][0]["dpo"]
    end = next(e for e in reversed(history) if "train_runtime" in e)
    steps = max(e.get("step", 0) for e in history)
    return end["train_runtime"] / steps, steps


def main(argv: list[str] | None = None) -> dict:
    from recllm.bench.arms import train_arm
    from recllm.bench.machine import machine_line
    from recllm.errors import UserError

    args = parse_args(argv)
    model = Path(args.model)
    if not (model / "recllm_vocab.json").is_file():
        raise UserError(
            str(model),
            "not a recllm model directory (no recllm_vocab.json)",
            "pass a recipe's OUTPUT_DIR/model",
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    common = [
        "--model_dir",
        str(model),
        "--rounds",
        "1",
        "--max_steps",
        str(args.steps),
        "--per_device_train_batch_size",
        str(args.batch),
        "--mining_users",
        str(args.mining_users),
        "--beams",
        str(args.beams),
        "--logging_steps",
        "1",
        *args.recipe_args,
    ]
    first = out / args.methods[0]
    rows: dict[str, dict] = {}
    for method in args.methods:
        arm_dir = out / method
        extra = METHOD_FLAGS[method](args.top_layers)
        if method == args.methods[0]:
            extra += ["--reward_model_minutes", str(args.reward_minutes)]
        else:  # the first run's reward model and pairs: only what trains differs
            if (first / "reward_model").is_dir():  # (a reward without a model trains none)
                extra += ["--reward_model", str(first / "reward_model")]
        logger.info("%s: recipes/dpo.py %s", method, " ".join(extra))
        train_arm(
            ROOT / "recipes" / "dpo.py",
            arm_dir,
            config=ROOT / "recipes" / "dpo.yaml",
            args=[*common, *extra, "--output_dir", str(arm_dir)],
        )
        log = json.loads((arm_dir / "dpo_log.json").read_text())
        sec, steps = step_seconds(log)
        rows[method] = {
            "seconds_per_step": round(sec, 3),
            "steps": steps,
            "round_seconds": log["rounds"][0]["seconds"],
        }
    base = rows.get("full")
    for r in rows.values():
        r["vs_full"] = round(r["seconds_per_step"] / base["seconds_per_step"], 3) if base else None
    machine = machine_line()
    print(f"DPO, {args.steps} steps of {args.batch} pairs, from {model}, on {machine}:")
    for method, r in rows.items():
        ratio = "" if r["vs_full"] is None else f"  {r['vs_full']:.2f}x full"
        print(f"  {method:<5} {r['seconds_per_step']:7.2f} s/step{ratio}")
    summary = {
        "model": str(model),
        "machine": machine,
        "steps": args.steps,
        "batch": args.batch,
        "methods": rows,
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    from recllm.errors import user_errors

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    with user_errors("bench_dpo"):
        main()
