"""Benchmark: constrained SID decoding, side by side in one process.

    python scripts/bench_decode.py            # tiny Qwen3 + SmolLM2-135M-shaped Llama, beams 20 and 50
    python scripts/bench_decode.py --quick    # a fast small run (tiny model, 8 users)

On each model (random weights: only time matters) and beam width, with the same prompts:

- ``hf_free``: ``model.generate`` beam search, no constraint (same length: ``L + 3`` new tokens).
- ``hf_ours``: the same with :class:`recllm.decode.SIDLogitsProcessor` (``sid_only=True``, in
  place, as :func:`recllm.decode.generate_sids` runs it).
- ``hf_dict``: the same with a ``prefix_allowed_tokens_fn`` written the way research repos do
  it: a Python dict from the generated-prefix tuple to the allowed token list, called per row
  (transformers' ``PrefixConstrainedLogitsProcessor`` loops over ``batch x beams`` in Python).
- ``sid_beam``: :func:`recllm.decode.sid_beam_search`, our fixed-depth beam search (prompt
  prefilled once per user, then ``L`` trie steps, the last one also scoring the markers).

Figures: (a) ``hf_ours / hf_free`` wall time (target <= 1.05), and our processor's own time as a
share of ``hf_ours`` (the same overhead without run-to-run noise); (b) the dict processor's cost
over ours, per call on the states of a real run (all ``users x beams`` rows, fresh scores each
call) and summed inside ``generate`` (target >= 5x at 50 beams), with the ``generate`` totals,
which the model dominates; (c) users/s of ``sid_beam``
over ``hf_ours`` (target >= 3x). ``hf_ours``, ``hf_dict`` and ``sid_beam`` must return the same
ranked items and the processors the same masks: both are checked and reported.

Prompts are chat prompts of a user's history (SIDs rendered in the text, each followed by a
title): ~100-200 tokens on the tiny model (32 users); the SmolLM2-shaped runs use 4 users and a
one-item history (~60 tokens), because Hugging Face prefills ``users x beams`` prompt copies and
the whole run should stay within ~15 min on 2 cores. Everything runs on ``--threads`` (1 by
default, see its help) and the machine's load average is printed: timings on a shared machine
are noisy. The last line is one JSON object of all figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import torch

from recllm.bench.decode_speed import (
    bench_one,
    random_codes,
    run_line,
    smol_setup,
    summary_lines,
    tiny_setup,
    titles_for,
)
from recllm.bench.machine import cpu_name


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    p.add_argument("--quick", action="store_true", help="tiny model only, 8 users, beams 20 50")
    p.add_argument("--items", type=int, default=4096, help="catalog items (random unique SIDs)")
    p.add_argument("--levels", type=int, default=3)
    p.add_argument("--codebook-size", type=int, default=256)
    p.add_argument("--users", type=int, default=32, help="users per batch, tiny model")
    p.add_argument("--smol-users", type=int, default=4, help="users per batch, SmolLM2 shape")
    p.add_argument("--beams", type=int, nargs="+", default=[20, 50])
    p.add_argument("--repeats", type=int, default=3, help="best-of-N, tiny model")
    p.add_argument("--smol-repeats", type=int, default=2, help="best-of-N, SmolLM2 shape")
    p.add_argument("--call-repeats", type=int, default=10, help="per-call processor timing")
    p.add_argument("--no-smol", action="store_true", help="skip the SmolLM2-shaped model")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads. 1 by default: on a shared 2-core machine two OpenMP threads thrash "
        "whenever another job holds a core, which slows small ops (decode steps, processors) "
        "several-fold; use 2 on an idle machine",
    )
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.quick:
        args.users, args.repeats, args.no_smol, args.call_repeats = 8, 1, True, 3

    import transformers

    from recllm.sid.sidmap import SIDMap

    sizes = (args.codebook_size,) * args.levels
    codes = random_codes(args.items, args.levels, args.codebook_size, args.seed)
    sid_map = SIDMap([f"item{i}" for i in range(args.items)], codes, sizes)
    titles = titles_for(args.items, args.seed)
    print(
        f"machine: {cpu_name()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, "
        f"torch threads {args.threads}, python {platform.python_version()}, "
        f"torch {torch.__version__}, "
        f"transformers {transformers.__version__}"
    )
    print(
        f"sizes: {args.items} items x {args.levels} levels x {args.codebook_size} codes; users "
        f"{args.users} (tiny) / {args.smol_users} (SmolLM2 shape); beams {args.beams}; "
        f"repeats {args.repeats} / {args.smol_repeats}"
    )
    print("command: python " + " ".join(sys.argv))
    sys.stdout.flush()

    torch.set_num_threads(args.threads)
    from recllm import testing

    tok = testing.build_tiny_tokenizer()
    model = testing.build_tiny_qwen3(tok, seed=args.seed)
    tiny, tok = tiny_setup(args, sid_map, titles, tok, model)
    setups = [tiny]
    if not args.no_smol:
        setups.append(smol_setup(args, sid_map, titles, tiny, tok))
    results = []
    for setup in setups:
        repeats = args.repeats if setup is tiny else args.smol_repeats
        for beams in args.beams:
            t0 = time.perf_counter()
            r = bench_one(setup, beams, repeats, args.call_repeats)
            r["bench_seconds"] = time.perf_counter() - t0
            results.append(r)
            print(run_line(r), flush=True)

    print()
    print("\n".join(summary_lines(results)))
    summary = {
        "machine": {
            "cpu": cpu_name(),
            "cores": os.cpu_count(),
            "torch_threads": args.threads,
            "load_avg_1min_at_end": os.getloadavg()[0],
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "sizes": {
            "items": args.items,
            "levels": args.levels,
            "codebook_size": args.codebook_size,
            "users_tiny": args.users,
            "users_smol": None if args.no_smol else args.smol_users,
            "beams": args.beams,
        },
        "results": results,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
