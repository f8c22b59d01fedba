"""Benchmark: evaluation users per second of a trained chat model, and what the prompt costs.

    python scripts/bench_eval.py --model outputs/quickstart/model --users 256
    python scripts/bench_eval.py --model outputs/quickstart/model --users 64 --repeats 1  # quick

A seeded sample of ``--users`` test users of the data the model was trained on, ranked by
``recllm.eval.run.evaluate_recommender`` (trie-constrained SID beam search, ``--beams`` wide,
``--batch-size`` users per batch) three ways, interleaved, best of ``--repeats``:

- ``whole prompts``: every prompt prefilled whole (the shared-prefix path switched off).
- ``shared prefix once``: the tokens every prompt of a batch starts with (the chat template's
  system turn and the instruction) run once per batch, their KV cache copied to every row
  (``recllm.decode.beam``; the default). Its rankings must equal the first row's (the script
  fails when more than 1% of users differ: float rounding may swap two near-tied items).
- ``compact history``: the same, with the history written as bare code tokens
  (``rec_history_markers: false``; 3 tokens an item instead of 6). Timing only: this model was
  not trained on such prompts, so its rankings are not compared.

Prints users/s, each row's ratio to ``whole prompts``, the mean prompt tokens and the share of
them the shared prefix covers; the last line is one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", required=True, help="a chat model directory written by recllm")
    p.add_argument("--users", type=int, default=256, help="test users (seeded sample)")
    p.add_argument("--seed", type=int, default=0, help="seed of the user sample")
    p.add_argument("--beams", type=int, default=10, help="beam width")
    p.add_argument("--batch-size", type=int, default=32, help="users per decoding batch")
    p.add_argument("--repeats", type=int, default=2, help="rounds; each arm's best is kept")
    args = p.parse_args(argv)
    if args.users < 1 or args.repeats < 1:
        p.error("--users and --repeats must be >= 1")
    return args


def encoded(tokenizer, prompts) -> list[list[int]]:
    """Each chat prompt's token ids, as evaluation feeds them."""
    texts = [
        tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
        for p in prompts
    ]
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def main(argv: list[str] | None = None) -> dict:
    import logging

    import torch

    import recllm.decode.beam as beam
    from recllm.bench.machine import machine_line
    from recllm.data.splits import select_users
    from recllm.decode.generate import left_pad
    from recllm.eval.run import PromptSpec, eval_examples, evaluate_recommender
    from recllm.tasks.prompting import build_prompts
    from recllm.vocab import load_model_with_sids

    logging.basicConfig(level=logging.WARNING)
    args = parse_args(argv)
    model_dir = Path(args.model)
    spec = PromptSpec.from_model_dir(model_dir)
    if spec.style != "chat":
        raise SystemExit(f"{model_dir}: a {spec.style} model; this benchmark times chat prompts")
    _, dataset, examples = eval_examples(model_dir, None, "test", None)
    examples = select_users(examples, args.users, args.seed)
    model, tok, sid_map = load_model_with_sids(model_dir)
    compact = replace(spec, task={**spec.task, "rec_history_markers": False})
    arms = {"whole prompts": spec, "shared prefix once": spec, "compact history": compact}

    tokens, shared = {}, {}
    for name, s in arms.items():
        heads = encoded(tok, build_prompts(s, examples, sid_map, dataset.catalog))
        tokens[name] = [len(h) for h in heads]
        # what the beam search shares (per batch; the whole sample's prefix is its lower bound)
        common = beam.shared_prefix_length(*left_pad(heads, 0, torch.device("cpu")))
        shared[name] = common if name != "whole prompts" else 0

    best: dict[str, float] = {}
    ranked: dict[str, list] = {}
    default = beam.MIN_SHARED_PREFIX
    for _ in range(args.repeats):
        for name, s in arms.items():
            beam.MIN_SHARED_PREFIX = 10**9 if name == "whole prompts" else default
            t0 = time.perf_counter()
            result = evaluate_recommender(
                model,
                tok,
                sid_map,
                examples,
                s,
                dataset.catalog,
                beams=args.beams,
                ks=(10,),
                batch_size=args.batch_size,
                progress=False,
            )
            seconds = time.perf_counter() - t0
            best[name] = min(best.get(name, float("inf")), seconds)
            ranked[name] = result.ranked
    beam.MIN_SHARED_PREFIX = default
    pairs = zip(ranked["shared prefix once"], ranked["whole prompts"], strict=True)
    same = sum(a == b for a, b in pairs) / len(examples)

    print(machine_line())
    print(
        f"model {model_dir}, {len(examples)} test users (seed {args.seed}), beam {args.beams}, "
        f"batch {args.batch_size}, {torch.get_num_threads()} threads, best of {args.repeats}"
    )
    print(f"{'':22s}{'users/s':>9s}{'vs whole':>10s}{'tokens':>8s}{'shared':>8s}")
    figures: dict[str, dict] = {}
    base = len(examples) / best["whole prompts"]
    for name in arms:
        rate = len(examples) / best[name]
        mean = sum(tokens[name]) / len(tokens[name])
        figures[name] = {
            "users_per_s": round(rate, 3),
            "vs_whole": round(rate / base, 3),
            "prompt_tokens": round(mean, 1),
            "shared_tokens": shared[name],
        }
        print(f"{name:22s}{rate:9.2f}{rate / base:10.2f}{mean:8.1f}{shared[name]:8d}")
    print(
        f"users whose top 10 is the same with the shared prefix as with whole prompts: {same:.3f}"
    )
    if same < 0.99:  # float rounding may swap two items whose scores tie to ~1e-6, no more
        raise SystemExit("the shared-prefix path changed rankings")
    out = {"users": len(examples), "threads": torch.get_num_threads(), **figures}
    out["same_rankings"] = round(same, 4)
    out["cpu_count"] = os.cpu_count()
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
