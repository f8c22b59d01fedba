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
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

K = 10


def _histories(model_dir: str, users: int) -> list[list[str]]:
    from recllm.data import load_rec_dataset, split_dataset
    from recllm.data.config import DataConfig
    from recllm.eval.run import PromptSpec

    cfg = DataConfig(**(PromptSpec.from_model_dir(model_dir).data or {}))
    split = split_dataset(load_rec_dataset(config=cfg), cfg)
    base = [list(ex.history) for ex in split.test]
    return [base[i % len(base)] for i in range(users)]


def _percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.array(seconds) * 1000
    return {f"p{q}_ms": round(float(np.percentile(ms, q)), 1) for q in (50, 90, 99)}


def _measure(
    rec, histories: list[list[str]], latency_users: int, batch: int, repeats: int
) -> dict[str, Any]:
    """Warm-up pass, ``repeats`` timed batch passes (median and best), then latency.

    The warm-up is a whole batch pass, so first-call costs (allocations, vLLM's first batch of
    each size, oneDNN primitive creation) stay out of every engine's figures alike.
    """

    def one_pass() -> list:
        out = []
        for at in range(0, len(histories), batch):
            out.extend(rec.recommend_batch(histories[at : at + batch], k=K))
        return out

    one_pass()
    walls = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = one_pass()
        walls.append(time.perf_counter() - start)
    lat = []
    for h in histories[:latency_users]:
        t = time.perf_counter()
        rec.recommend(h, k=K)
        lat.append(time.perf_counter() - t)
    wall = float(np.median(walls))
    return {
        "seconds": round(wall, 3),
        "recs_per_s": round(len(histories) / wall, 2),
        "best_recs_per_s": round(len(histories) / min(walls), 2),
        **_percentiles(lat),
        "ranked": [[(r.item_id, r.score) for r in row] for row in out],
    }


def _child(args: argparse.Namespace) -> None:
    """The vLLM side, run in its own process; prints one RESULT line."""
    from transformers import AutoTokenizer

    from recllm.apps.recommender import Recommender
    from recllm.decode.vllm_processor import CONFIG_KEY

    histories = _histories(args.child, args.users)
    eos = AutoTokenizer.from_pretrained(args.child).eos_token_id
    # Global sid_only: vLLM's own beam search cannot pass per-request switches; recllm's
    # driver sends sid_only per request anyway, so one engine serves both.
    section = {"model_dir": args.child, "sid_only": True, "stop_token_id": eos}
    kwargs = {"max_model_len": args.max_model_len, "additional_config": {CONFIG_KEY: section}}
    kwargs.update(json.loads(args.vllm_kwargs))
    start = time.perf_counter()
    rec = Recommender.from_pretrained(args.child, engine="vllm", max_k=K, vllm_kwargs=kwargs)
    load = time.perf_counter() - start
    n = len(histories)
    res = {"vllm": _measure(rec, histories, args.latency_users, n, args.repeats)}
    res["vllm"]["load_seconds"] = round(load, 1)
    res["vllm_beam_search"] = _measure(
        _NativeBeam(rec), histories, args.latency_users, n, args.repeats
    )
    print("RESULT " + json.dumps(res))


class _NativeBeam:
    """vLLM's own ``LLM.beam_search`` under the processor's global ``sid_only`` config. Its
    scores divide by prompt + answer length, so only the items are compared with HF."""

    def __init__(self, rec) -> None:
        self.rec = rec

    def recommend(self, history, k):
        return self.recommend_batch([history], k)[0]

    def recommend_batch(self, histories, k):
        import torch
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import BeamSearchParams

        from recllm.decode import Recommendation, encode_prompts

        rec = self.rec
        prompts = encode_prompts(rec.tokenizer, rec.prompts(histories, k))
        levels = rec.trie.levels
        params = BeamSearchParams(beam_width=k, max_tokens=levels + 3)
        outs = rec.backend.beam_search([TokensPrompt(prompt_token_ids=p) for p in prompts], params)
        results = []
        for p, out in zip(prompts, outs, strict=True):
            codes = [
                [
                    t - int(rec.trie.code_token_start[lv])
                    for lv, t in enumerate(s.tokens[len(p) + 1 :][:levels])
                ]
                for s in out.sequences
            ]
            rows = rec.trie.item_index(torch.tensor(codes)).tolist()
            results.append(
                [
                    Recommendation(rec.sid_map.item_ids[r], s.cum_logprob / (levels + 3), None)
                    for r, s in zip(rows, out.sequences, strict=True)
                ]
            )
        return results


def _run_vllm(model_dir: str, args: argparse.Namespace) -> dict[str, Any]:
    env = {
        **os.environ,
        # 1 = vLLM's default layout: the engine core in its own process, so request intake and
        # output handling overlap the model steps (another core); 0 = one process.
        "VLLM_ENABLE_V1_MULTIPROCESSING": "1" if args.vllm_mp else "0",
        "VLLM_CPU_KVCACHE_SPACE": str(args.kv_cache_gib),
        "VLLM_CPU_OMP_THREADS_BIND": "nobind",
        "OMP_NUM_THREADS": str(args.threads),
    }
    cmd = [sys.executable, __file__, "--child", model_dir, "--users", str(args.users)]
    cmd += ["--latency-users", str(args.latency_users), "--max-model-len", str(args.max_model_len)]
    cmd += ["--repeats", str(args.repeats), "--vllm-kwargs", args.vllm_kwargs]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"vLLM child failed:\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def _parity(ours: list, ref: list) -> dict[str, Any]:
    same = sum([i for i, _ in a] == [i for i, _ in b] for a, b in zip(ours, ref, strict=True))
    diffs = [
        abs(sa - sb)
        for a, b in zip(ours, ref, strict=True)
        if [i for i, _ in a] == [i for i, _ in b]
        for (_, sa), (_, sb) in zip(a, b, strict=True)
    ]
    return {
        "identical_top10": f"{same}/{len(ref)}",
        "max_score_diff": float(f"{max(diffs):.2e}") if diffs else None,
    }


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
        _child(args)
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
        histories = _histories(model_dir, args.users)
        hf = Recommender.from_pretrained(
            model_dir, engine="hf", max_k=K, batch_size=args.batch_size
        )
        params = sum(t.numel() for t in hf.backend.parameters())
        prompt_lens = [len(x) for x in _encode(hf, histories)]
        print(
            f"\n{name}: {params / 1e6:.1f}M parameters, {len(hf.sid_map)} items x "
            f"{hf.trie.levels} levels, {args.users} users, prompts {min(prompt_lens)}-"
            f"{max(prompt_lens)} tokens (mean {np.mean(prompt_lens):.0f})"
        )
        row: dict[str, Any] = {"parameters_m": round(params / 1e6, 1), "items": len(hf.sid_map)}
        runs = {}
        engines = ["sid_beam"] if args.skip_hf_generate else ["generate", "sid_beam"]
        for engine in engines:
            hf_engine = _HFEngine(hf, engine)
            runs[f"hf_{engine}"] = _measure(
                hf_engine, histories, args.latency_users, args.batch_size, args.repeats
            )
        del hf
        runs.update(_run_vllm(model_dir, args))
        ref = runs["hf_sid_beam"]["ranked"]
        for key, res in runs.items():
            fig = {k: v for k, v in res.items() if k != "ranked"}
            fig.update(_parity(res["ranked"], ref))
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


def _encode(rec, histories):
    from recllm.decode import encode_prompts

    return encode_prompts(rec.tokenizer, rec.prompts(histories, K))


class _HFEngine:
    """A Recommender view decoding with one transformers engine."""

    def __init__(self, rec, engine: str) -> None:
        self.rec, self.engine = rec, engine

    def recommend(self, history, k):
        return self.recommend_batch([history], k)[0]

    def recommend_batch(self, histories, k):
        from recllm.decode import generate_sids

        rec = self.rec
        return generate_sids(
            rec.backend,
            rec.tokenizer,
            rec.prompts(histories, k),
            rec.sid_map,
            k=k,
            num_beams=k,
            batch_size=rec.batch_size,
            engine=self.engine,
            stop_token_id=rec.stop_token_id,
            titles=rec.catalog,
            trie=rec.trie,
        )


if __name__ == "__main__":
    main()
