"""Benchmark: the constrained SID step with per-row item filters against the same step without.

    flock /tmp/h/cpu.lock timeout 10m python scripts/bench_filters.py
    python scripts/bench_filters.py --quick      # a small fast run

A random catalog (``--items`` unique 3-level SIDs over 256 x 256 x 256 codebooks, 100k by
default), ``--rows`` rows (64), each its own request with ``--excluded`` excluded items (1,000),
on logits of a Qwen3-sized vocabulary (151,669 tokens + the SID tokens). Each row sits inside a
SID span at a random depth 0-2, on a prefix of an item it may still emit (what a decoding step
meets). Timed, interleaved, median of ``--repeats``:

- ``processor``: :class:`recllm.decode.SIDLogitsProcessor` (``sid_only``, in place, as beam
  search runs it) on ``(rows, vocab)`` log-probs: the whole constrained step of ``generate``,
  without and with ``item_filter``. The headline ratio (target <= 1.2x).
- ``constraint``: :func:`recllm.decode.trie.sid_constraint` alone (the trie walk and the
  ``(rows, codes)`` mask, no vocabulary write): the filter's share of the mask itself.
- ``beam_step``: one level of :func:`recllm.decode.sid_beam_search` without the model forward
  (gather the code log-probs, mask, top-k over ``beams x codes``, child lookup) for ``--rows``
  prompts x ``--beams`` beams, each prompt with its own filter; filtered, the mask also takes
  ``~item_filter.removed_codes(rows, nodes)``.
- ``beam_mask``: that step's mask alone (``trie.allowed[nodes]`` vs the same and the filter's
  removed codes), a micro-op of a few microseconds either way.
- ``build``: building the filter of all rows once (per request; not per step).

The last line is one JSON object of all figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np
import torch

from recllm.bench.machine import cpu_name
from recllm.decode import SIDLogitsProcessor, SIDTrie, sid_constraint, tails_of
from recllm.decode.filters import ItemFilter
from recllm.vocab.format import SIDTokenIds

QWEN3_LEN = 151_669


def random_codes(n: int, sizes: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """``n`` unique random code tuples."""
    total = int(np.prod(sizes))
    flat = rng.choice(total, size=n, replace=False)
    return np.stack(np.unravel_index(flat, sizes), axis=1).astype(np.int64)


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--codebook-size", type=int, default=256)
    p.add_argument("--levels", type=int, default=3)
    p.add_argument("--rows", type=int, default=64)
    p.add_argument("--excluded", type=int, default=1000, help="excluded items per row")
    p.add_argument("--beams", type=int, default=8, help="beams per prompt in beam_step")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: shared machine)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="10k items, 5 repeats")
    args = p.parse_args()
    if args.quick:
        args.items, args.repeats = 10_000, 5
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    sizes = (args.codebook_size,) * args.levels
    print(
        f"machine: {cpu_name()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, "
        f"torch threads {args.threads}, python {platform.python_version()}, "
        f"torch {torch.__version__}",
        flush=True,
    )

    codes = random_codes(args.items, sizes, rng)
    ids = SIDTokenIds(QWEN3_LEN, sizes)
    vocab = ids.last_id + 1
    trie = SIDTrie.from_codes(codes, sizes, ids)
    exclude = [
        rng.choice(args.items, size=args.excluded, replace=False).tolist() for _ in range(args.rows)
    ]
    t0 = time.perf_counter()
    filt = ItemFilter.from_items(trie, exclude=exclude)
    first_build = time.perf_counter() - t0  # includes the trie index, built once per trie
    build = statistics.median(
        timed(lambda: ItemFilter.from_items(trie, exclude=exclude), max(3, args.repeats // 5))
    )

    # one state per row: inside a span at depth 0-2, on a prefix of an admissible item
    tails = []
    for r in range(args.rows):
        banned = set(exclude[r])
        item = int(rng.integers(args.items))
        while item in banned:
            item = int(rng.integers(args.items))
        depth = int(rng.integers(args.levels))
        seq = [7, 7, 7, ids.begin_id] + [
            ids.code_id(lv, int(c)) for lv, c in enumerate(codes[item][:depth])
        ]
        tails.append(tails_of(torch.tensor([seq]), args.levels + 1)[0])
    tails = torch.stack(tails)  # (rows, L + 1)
    input_ids = torch.cat([torch.full((args.rows, 20), 7), tails], dim=1)
    logp = torch.randn(args.rows, vocab).log_softmax(-1)
    plain_proc = SIDLogitsProcessor(trie, sid_only=True, stop_token_id=2, inplace=True)
    filt_proc = SIDLogitsProcessor(
        trie, sid_only=True, stop_token_id=2, inplace=True, item_filter=filt
    )
    state_nodes = sid_constraint(tails, trie, sid_only=True, stop_token_id=2)
    del state_nodes
    from recllm.decode.trie import span_state

    nodes = span_state(tails, trie).node  # (rows,) where each row stands
    rows = torch.arange(args.rows)
    # In place on one buffer: after the first call its masked entries are -inf, which costs the
    # processor exactly the same work (it reads, fills and writes back the same entries).
    scratch = [logp.clone() for _ in range(2)]

    # beam_step: rows prompts x beams, at level 1 (each beam on a level-0 node of an item its
    # prompt may emit), as sid_beam_search's loop runs a level
    beams, max_codes = args.beams, trie.max_codes
    level = 1
    beam_nodes = torch.stack(
        [
            trie.walk(
                torch.tensor(
                    codes[
                        [
                            i
                            for i in rng.integers(args.items, size=4 * beams)
                            if i not in set(exclude[r])
                        ][:beams],
                        :level,
                    ]
                )
            )
            for r in range(args.rows)
        ]
    )  # (rows, beams)
    beam_scores = torch.randn(args.rows, beams)
    beam_logp = torch.randn(args.rows * beams, vocab).log_softmax(-1)
    code_range = torch.arange(max_codes)
    token_cols = trie.code_token_start[level] + code_range
    prompt_rows = torch.arange(args.rows)[:, None]

    def beam_step(item_filter):
        cand = beam_logp[:, token_cols].view(args.rows, beams, max_codes)
        allowed = trie.allowed[beam_nodes] & (code_range < trie.codebook_sizes[level])
        if item_filter is not None:
            allowed &= ~item_filter.removed_codes(prompt_rows, beam_nodes)
        cand = torch.where(allowed, cand + beam_scores[..., None], float("-inf"))
        top, index = cand.view(args.rows, beams * max_codes).topk(beams, dim=1)
        source, code = index // max_codes, index % max_codes
        return trie.child(beam_nodes.gather(1, source), code), top

    cases = {
        "processor": (
            lambda: plain_proc(input_ids, scratch[0]),
            lambda: filt_proc(input_ids, scratch[1]),
        ),
        "constraint": (
            lambda: sid_constraint(tails, trie, sid_only=True, stop_token_id=2),
            lambda: sid_constraint(
                tails, trie, sid_only=True, stop_token_id=2, item_filter=filt, filter_rows=rows
            ),
        ),
        "beam_step": (lambda: beam_step(None), lambda: beam_step(filt)),
        "beam_mask": (
            lambda: trie.allowed[nodes],
            lambda: trie.allowed[nodes] & ~filt.removed_codes(rows, nodes),
        ),
    }
    # correctness: the filtered processor never leaves an excluded item reachable from a row
    out = filt_proc(input_ids, logp.clone())
    assert torch.isfinite(out).any(dim=1).all(), "a filtered row has no allowed token"

    figures: dict[str, dict[str, float]] = {}
    for name, (plain, filtered) in cases.items():
        for fn in (plain, filtered):  # warm-up
            fn()
        a, b = [], []
        for _ in range(args.repeats):  # interleaved: load changes hit both alike
            a += timed(plain, 1)
            b += timed(filtered, 1)
        ta, tb = statistics.median(a), statistics.median(b)
        figures[name] = {
            "unfiltered_ms": round(ta * 1e3, 3),
            "filtered_ms": round(tb * 1e3, 3),
            "ratio": round(tb / ta, 3),
            "filtered_rows_per_s": round(args.rows / tb),
            "unfiltered_rows_per_s": round(args.rows / ta),
        }
        print(
            f"{name:>10}: unfiltered {ta * 1e3:8.3f} ms, filtered {tb * 1e3:8.3f} ms, "
            f"ratio {tb / ta:.3f}x, {args.rows / tb:,.0f} rows/s filtered",
            flush=True,
        )
    print(
        f"     build: {build * 1e3:.1f} ms for {args.rows} rows x {args.excluded} excluded items "
        f"(first, with the trie index: {first_build * 1e3:.1f} ms); {filt.keys.numel():,} "
        f"keyed nodes",
        flush=True,
    )
    summary = {
        "items": args.items,
        "codebook_sizes": list(sizes),
        "trie_nodes": trie.num_nodes,
        "vocab": vocab,
        "rows": args.rows,
        "excluded_per_row": args.excluded,
        "repeats": args.repeats,
        "beams_in_beam_step": beams,
        **figures,
        "build_ms": round(build * 1e3, 1),
        "first_build_ms": round(first_build * 1e3, 1),
        "keyed_nodes": int(filt.keys.numel()),
        "machine": {
            "cpu": cpu_name(),
            "cores": os.cpu_count(),
            "load_average": round(os.getloadavg()[0], 2),
            "torch_threads": args.threads,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
