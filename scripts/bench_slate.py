"""Benchmark: the cost of slate decoding on transformers, in one process.

    OMP_NUM_THREADS=1 python scripts/bench_slate.py              # 16 prompts, n=5, 8 beams
    OMP_NUM_THREADS=1 python scripts/bench_slate.py --prompts 32 --n 10

On the tiny recommender of :func:`recllm.testing.save_tiny_recommender` (random weights: only
time matters), with the same prompts, the best of ``--repeats`` wall times of:

- ``slate_beam``: :func:`recllm.decode.slate.slate_search`, beam over slates (``--beams``);
- ``slate_beam_no_exclusion``: the same without the slate exclusion (``distinct=False``): the
  cost of rebuilding the per-beam filter once per SID is the difference;
- ``next_item_top_n``: :func:`recllm.decode.sid_beam_search`, the next-item top ``n`` (one SID
  per beam, the list a next-item model gives);
- ``slate_greedy``: ``slate_search(mode="greedy")``;
- ``greedy_chain_reprefilled``: the greedy slate without KV reuse: ``n`` single-beam searches,
  each re-prefilling prompt + the slate so far (what a caller loops without ``slate_search``).

The last line is one JSON object of the figures (milliseconds).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from recllm.apps.recommender import Recommender
from recllm.decode import encode_prompts, left_pad, sid_beam_search
from recllm.decode.filters import ItemFilter
from recllm.decode.slate import slate_search
from recllm.testing import save_tiny_recommender
from recllm.vocab import SID_FORMAT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--n", type=int, default=5, help="items per slate")
    parser.add_argument("--beams", type=int, default=8)
    parser.add_argument("--history", type=int, default=8, help="items per history")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model_dir = save_tiny_recommender(Path(tempfile.mkdtemp()) / "tiny", seed=0)
    rec = Recommender.from_pretrained(model_dir, engine="hf")
    items = rec.sid_map.item_ids
    rng = np.random.default_rng(0)
    histories = [
        [items[i] for i in rng.choice(len(items), args.history, replace=False)]
        for _ in range(args.prompts)
    ]
    encoded = encode_prompts(rec.tokenizer, rec.prompts(histories, args.n))
    pad = rec.tokenizer.pad_token_id
    ids, mask = left_pad(encoded, pad, torch.device("cpu"))
    model, trie, stop, n = rec.backend, rec.trie, rec.stop_token_id, args.n

    def timed(fn) -> float:
        fn()
        best = float("inf")
        for _ in range(args.repeats):
            start = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - start)
        return round(best * 1000, 1)

    def chain() -> None:
        chosen: list[list[int]] = [[] for _ in encoded]
        for slot in range(n):
            seqs = []
            for prompt, slate in zip(encoded, chosen, strict=True):
                text = "".join(SID_FORMAT.render(rec.sid_map.code(items[i])) for i in slate)
                seqs.append(prompt + rec.tokenizer(text, add_special_tokens=False)["input_ids"])
            ids2, mask2 = left_pad(seqs, pad, torch.device("cpu"))
            filt = ItemFilter.from_items(trie, exclude=chosen) if slot else None
            out = sid_beam_search(model, ids2, mask2, trie, num_beams=1, item_filter=filt)
            for row, item in enumerate(out.items[:, 0].tolist()):
                chosen[row].append(item)

    beams = args.beams
    figures = {
        "slate_beam": timed(
            lambda: slate_search(model, ids, mask, trie, n=n, num_beams=beams, stop_token_id=stop)
        ),
        "slate_beam_no_exclusion": timed(
            lambda: slate_search(
                model, ids, mask, trie, n=n, num_beams=beams, stop_token_id=stop, distinct=False
            )
        ),
        "next_item_top_n": timed(
            lambda: sid_beam_search(
                model, ids, mask, trie, num_beams=beams, num_return_sequences=n, stop_token_id=stop
            )
        ),
        "slate_greedy": timed(
            lambda: slate_search(model, ids, mask, trie, n=n, mode="greedy", stop_token_id=stop)
        ),
        "greedy_chain_reprefilled": timed(chain),
    }
    print(
        f"{args.prompts} prompts of {ids.shape[1]} tokens, {len(items)} items, n={n}, {beams} beams"
    )
    for name, ms in figures.items():
        print(f"  {name:26s} {ms:8.1f} ms")
    print(json.dumps({"prompts": args.prompts, "n": n, "beams": beams, **figures}))


if __name__ == "__main__":
    main()
