"""Benchmark: top-10 constrained recommendations per second, vLLM against transformers, one run.

    python scripts/bench_serve.py                                   # tiny model + quickstart model
    python scripts/bench_serve.py --model tiny --model /tmp/qs_smol/model --users 64

For each model directory (``tiny`` builds :func:`recllm.testing.save_tiny_recommender`), the same
users' histories (the test split of the data the model records, cycled to ``--users``) go through
:class:`recllm.apps.recommender.Recommender` with ``k = num_beams = 10``:

- ``hf_generate``: ``engine="hf"`` with transformers ``model.generate`` + the SID logits
  processor, batches of ``--batch-size`` (recllm's ``evaluate_recommender(engine="generate")``).
- ``hf_sid_beam``: ``engine="hf"`` with recllm's fixed-depth SID beam search, same batches
  (the default evaluation engine).
- ``vllm``: ``engine="vllm"``: the SID beam driver on ``vllm.LLM`` with the SID logits
  processor, all users submitted at once (continuous batching), in a child process (vLLM pins
  torch threads in its process).
- ``vllm_beam_search``: vLLM's own ``LLM.beam_search`` on the same engine (processor in global
  ``sid_only`` mode, ``processed_logits``); its scores divide by prompt + answer length, so
  scores are reported as summed log-prob / (L + 3), which equals HF's only when the ranking
  does.

Throughput = users / median wall time of ``--repeats`` batch passes after a warm-up pass;
latency = one ``recommend(history)`` call at a time for ``--latency-users`` users (p50 / p90 /
p99). Parity: share of users whose top-10 lists are identical to ``hf_sid_beam``'s and the
largest score difference. Everything runs on ``--threads`` threads (vLLM: OMP threads, not bound
to cores); the load average is printed, as timings on a shared machine are noisy. The last line
is one JSON object of all figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from recllm.bench.serve_speed import (
    HFEngine,
    K,
    child_result,
    encode,
    histories_of,
    measure,
    parity,
    run_vllm,
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", action="append", help="model dir or 'tiny' (repeatable)")
    p.add_argument("--users", type=int, default=64, help="users per batch run")
    p.add_argument("--latency-users", type=int, default=16, help="one-at-a-time requests")
    p.add_argument("--repeats", type=int, default=3, help="timed batch passes (median kept)")
    p.add_argument("--batch-size", type=int, default=16, help="HF prompts per batch")
    p.add_argument("--threads", type=int, default=1, help="CPU threads per engine")
    p.add_argument("--kv-cache-gib", type=int, default=2, help="vLLM CPU KV cache (GiB)")
    p.add_argument("--max-model-len", type=int, default=2048, help="vLLM max_model_len")
    p.add_argument(
        "--vllm-kwargs",
        default="{}",
        help="extra vllm.LLM arguments as JSON, e.g. '{\"max_num_seqs\": 512}'",
    )
    p.add_argument(
        "--vllm-mp",
        action="store_true",
        help="run vLLM's engine core in its own process (vLLM's default; uses a second core)",
    )
    p.add_argument("--skip-hf-generate", action="store_true", help="skip the slowest engine")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child_result(args)))
        return

    import torch

    from recllm.apps.recommender import Recommender
    from recllm.testing import save_tiny_recommender

    torch.set_num_threads(args.threads)
    models = args.model or ["tiny", "outputs/quickstart/model"]
    tmp = tempfile.TemporaryDirectory(prefix="bench_serve_")
    import vllm

    print(f"command: {' '.join([sys.executable, *sys.argv])}")
    print(
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs, {platform.processor() or '?'}, "
        f"load average {os.getloadavg()}, threads per engine {args.threads}; torch "
        f"{torch.__version__}, vllm {vllm.__version__}"
    )
    report: dict[str, Any] = {"k": K, "num_beams": K, "users": args.users, "models": {}}
    for name in models:
        model_dir = str(save_tiny_recommender(Path(tmp.name) / "tiny")) if name == "tiny" else name
        if not Path(model_dir).is_dir():
            print(f"skipping {name}: no such directory")
            continue
        histories = histories_of(model_dir, args.users)
        hf = Recommender.from_pretrained(
            model_dir, engine="hf", max_k=K, batch_size=args.batch_size
        )
        params = sum(t.numel() for t in hf.backend.parameters())
        prompt_lens = [len(x) for x in encode(hf, histories)]
        print(
            f"\n{name}: {params / 1e6:.1f}M parameters, {len(hf.sid_map)} items x "
            f"{hf.trie.levels} levels, {args.users} users, prompts {min(prompt_lens)}-"
            f"{max(prompt_lens)} tokens (mean {np.mean(prompt_lens):.0f})"
        )
        row: dict[str, Any] = {"parameters_m": round(params / 1e6, 1), "items": len(hf.sid_map)}
        runs = {}
        engines = ["sid_beam"] if args.skip_hf_generate else ["generate", "sid_beam"]
        for engine in engines:
            hf_engine = HFEngine(hf, engine)
            runs[f"hf_{engine}"] = measure(
                hf_engine, histories, args.latency_users, args.batch_size, args.repeats
            )
        del hf
        runs.update(run_vllm(__file__, model_dir, args))
        ref = runs["hf_sid_beam"]["ranked"]
        for key, res in runs.items():
            fig = {k: v for k, v in res.items() if k != "ranked"}
            fig.update(parity(res["ranked"], ref))
            row[key] = fig
            print(
                f"  {key:16s} {fig['recs_per_s']:8.2f} recs/s  p50 {fig['p50_ms']:8.1f} ms  "
                f"p90 {fig['p90_ms']:8.1f} ms  p99 {fig['p99_ms']:8.1f} ms  top-10 equal to "
                f"hf_sid_beam: {fig['identical_top10']}, max score diff {fig['max_score_diff']}"
            )
        v = row["vllm"]["recs_per_s"]
        for key in runs:
            if key != "vllm":
                row[f"ratio_vllm_over_{key}"] = round(v / row[key]["recs_per_s"], 2)
                print(f"  vLLM / {key}: {row[f'ratio_vllm_over_{key}']:.2f}x")
        report["models"][name] = row
    print(json.dumps(report))


if __name__ == "__main__":
    main()
