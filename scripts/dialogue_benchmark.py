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
from pathlib import Path


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


def main(argv: list[str] | None = None) -> dict:
    import logging

    from recllm.bench import dialogue
    from recllm.bench.arms import arm_minutes
    from recllm.bench.machine import machine_line
    from recllm.io import write_json_atomic

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = parse_args(argv)
    out, start = Path(args.out), Path(args.start)
    out.mkdir(parents=True, exist_ok=True)
    train = dict(steps=args.steps, batch=args.batch, learning_rate=args.learning_rate)
    train["seed"] = args.seed

    def arm(name: str, weight: float) -> Path:
        return dialogue.train_dialogue_arm(start, out / name, dialogue_weight=weight, **train)

    trained = arm("dialogue", args.dialogue_weight)
    arms = {"start (never saw a conversation)": (start, "start")}
    if args.control:
        arms["control: same steps, no dialogue rows"] = (arm("control", 0.0), "control")
    arms["dialogue SFT"] = (trained, "dialogue")
    probe = dialogue.Probe(
        start, trained, out, users=args.users, k=args.k, categories=args.categories, seed=args.seed
    )
    rows = {label: probe.ask(model_dir, name) for label, (model_dir, name) in arms.items()}
    summary = {
        "machine": machine_line(),
        "start": str(args.start),
        "settings": vars(args),
        "train_minutes": arm_minutes({a: out / a for a in ("dialogue", "control")}),
        "rows": rows,
    }
    write_json_atomic(out / "summary.json", summary)
    print(dialogue.table(rows, args.k))
    dialogue.plot(summary, out / "dialogue_benchmark.png")
    print(json.dumps(dialogue.last_line(rows, args.k)))
    return summary


if __name__ == "__main__":
    main()
