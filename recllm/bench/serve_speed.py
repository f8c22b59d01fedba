"""The serving benchmark (``scripts/bench_serve.py``): top-10 constrained recommendations per
second, vLLM against transformers, on the same users.

:func:`measure` times an engine (a warm-up pass, timed batch passes, one-at-a-time latency);
the vLLM side runs in a child process (:func:`run_vllm` starts the script with ``--child``,
which calls :func:`child_result`); :func:`parity` compares every engine's lists with recllm's
SID beam search on transformers. vLLM is imported only inside the child.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import numpy as np

__all__ = [
    "HFEngine",
    "K",
    "child_result",
    "encode",
    "histories_of",
    "measure",
    "parity",
    "percentiles",
    "run_vllm",
]

K = 10


def histories_of(model_dir: str, users: int) -> list[list[str]]:
    from recllm.data import load_rec_dataset, split_dataset
    from recllm.data.config import DataConfig
    from recllm.eval.run import PromptSpec

    cfg = DataConfig(**(PromptSpec.from_model_dir(model_dir).data or {}))
    split = split_dataset(load_rec_dataset(config=cfg), cfg)
    base = [list(ex.history) for ex in split.test]
    return [base[i % len(base)] for i in range(users)]


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.array(seconds) * 1000
    return {f"p{q}_ms": round(float(np.percentile(ms, q)), 1) for q in (50, 90, 99)}


def measure(
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
        **percentiles(lat),
        "ranked": [[(r.item_id, r.score) for r in row] for row in out],
    }


def child_result(args: Any) -> dict[str, Any]:
    """The vLLM side, run in its own process (the script's ``--child``): the figures of both
    vLLM engines, which the child prints as one ``RESULT`` line."""
    from transformers import AutoTokenizer

    from recllm.apps.recommender import Recommender
    from recllm.decode.vllm_processor import CONFIG_KEY

    histories = histories_of(args.child, args.users)
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
    res = {"vllm": measure(rec, histories, args.latency_users, n, args.repeats)}
    res["vllm"]["load_seconds"] = round(load, 1)
    res["vllm_beam_search"] = measure(
        _NativeBeam(rec), histories, args.latency_users, n, args.repeats
    )
    return res


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


def run_vllm(script: str, model_dir: str, args: Any) -> dict[str, Any]:
    """``script --child MODEL_DIR``: the vLLM figures, measured in a child process."""
    env = {
        **os.environ,
        # 1 = vLLM's default layout: the engine core in its own process, so request intake and
        # output handling overlap the model steps (another core); 0 = one process.
        "VLLM_ENABLE_V1_MULTIPROCESSING": "1" if args.vllm_mp else "0",
        "VLLM_CPU_KVCACHE_SPACE": str(args.kv_cache_gib),
        "VLLM_CPU_OMP_THREADS_BIND": "nobind",
        "OMP_NUM_THREADS": str(args.threads),
    }
    cmd = [sys.executable, script, "--child", model_dir, "--users", str(args.users)]
    cmd += ["--latency-users", str(args.latency_users), "--max-model-len", str(args.max_model_len)]
    cmd += ["--repeats", str(args.repeats), "--vllm-kwargs", args.vllm_kwargs]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"vLLM child failed:\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def parity(ours: list, ref: list) -> dict[str, Any]:
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


def encode(rec, histories):
    from recllm.decode import encode_prompts

    return encode_prompts(rec.tokenizer, rec.prompts(histories, K))


class HFEngine:
    """A Recommender view decoding with one transformers engine."""

    def __init__(self, rec, engine: str) -> None:
        self.rec, self.engine = rec, engine

    def recommend(self, history, k):
        return self.recommend_batch([history], k)[0]

    def recommend_batch(self, histories, k):
        from recllm.decode import DecodeOptions, generate_sids

        rec = self.rec
        options = DecodeOptions(
            k=k,
            num_beams=k,
            batch_size=rec.batch_size,
            engine=self.engine,
            stop_token_id=rec.stop_token_id,
        )
        return generate_sids(
            rec.backend,
            rec.tokenizer,
            rec.prompts(histories, k),
            rec.sid_map,
            options,
            titles=rec.catalog,
            trie=rec.trie,
        )
