"""Serving with vLLM (issue 6): the SID logits processor, beam parity with transformers, the
recommendation API and ``recllm serve``, on a tiny random Qwen3 recommender built here.

vLLM runs in child processes (see tests/test_vllm_smoke.py for why); the transformers reference
and every check run in this process. Invalid = a generated SID span that is not a catalog item.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from recllm.apps.recommender import Recommender
from recllm.decode import DecodeOptions, generate_sids
from recllm.testing import save_tiny_recommender
from tests.serving import free_port, post, run_vllm_child, served

pytestmark = [pytest.mark.vllm, pytest.mark.usefixtures("torch_single_thread")]

VLLM_ENV = {
    # One process instead of an engine-core subprocess (offline LLM); 1 GiB KV cache.
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    # One OpenMP thread, not bound: the machine's cores are shared.
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",
    "OMP_NUM_THREADS": "1",
    "HF_HUB_OFFLINE": "1",
}
SCORE_ATOL = 1e-4  # float32 on both sides; measured differences are ~1e-6

_CHILD = """
import json, sys
from vllm import LLM, SamplingParams
from vllm.inputs import TokensPrompt
from vllm.sampling_params import BeamSearchParams
from recllm.apps.recommender import Recommender
from recllm.decode.vllm_processor import vllm_engine_kwargs

job = json.loads(open(sys.argv[1]).read())
d = job["model_dir"]
llm = LLM(model=d, dtype="float32", max_model_len=512, seed=0, enforce_eager=True,
          enable_prefix_caching=True, max_logprobs=50, **vllm_engine_kwargs(d, sid_only=True))
res = {}
rec = Recommender.from_pretrained(d, engine="vllm", backend=llm)
res["recommend"] = [[[r.item_id, r.score, r.title] for r in row]
                    for row in rec.recommend_batch(job["histories"], k=10)]
res["recommend_k5_b8"] = [[[r.item_id, r.score] for r in row]
                          for row in rec.recommend_batch(job["histories"], k=5, num_beams=8)]
prompts = [TokensPrompt(prompt_token_ids=p) for p in job["prompts"]]
n = len(prompts)
greedy = SamplingParams(temperature=0.0, max_tokens=10)
res["greedy"] = [list(o.outputs[0].token_ids) for o in llm.generate(prompts, greedy, use_tqdm=False)]
sample = SamplingParams(temperature=1.5, top_k=0, max_tokens=10)
res["sample"] = [list(o.outputs[0].token_ids) for o in llm.generate(prompts, sample, use_tqdm=False)]
spans = [TokensPrompt(prompt_token_ids=p) for p in job["span_prompts"]]
on = SamplingParams(temperature=1.0, max_tokens=12, extra_args={"recllm_sid_only": False})
off = SamplingParams(temperature=1.0, max_tokens=12, extra_args={"recllm_sid": False})
res["spans"] = [list(o.outputs[0].token_ids) for o in llm.generate(spans, on, use_tqdm=False)]
res["spans_off"] = [list(o.outputs[0].token_ids) for o in llm.generate(spans, off, use_tqdm=False)]
beam = BeamSearchParams(beam_width=4, max_tokens=8)
outs = llm.beam_search(prompts[: job["beam_prompts"]], beam)
res["beam_search"] = [[list(s.tokens[len(p["prompt_token_ids"]):]) for s in o.sequences]
                      for p, o in zip(prompts, outs)]
print("RESULT " + json.dumps(res))
"""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_recommender(tmp_path_factory.mktemp("rec") / "tiny", seed=0)


@pytest.fixture(scope="module")
def hf_rec(model_dir: Path) -> Recommender:
    return Recommender.from_pretrained(model_dir, engine="hf")


def _histories(rec: Recommender, n: int, seed: int) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    items = rec.sid_map.item_ids
    return [
        [items[i] for i in rng.choice(len(items), size=int(rng.integers(1, 8)), replace=False)]
        for _ in range(n)
    ]


def _run_child(job: dict, tmp_path: Path) -> dict:
    return run_vllm_child(_CHILD, job, tmp_path, VLLM_ENV)


def _answer_item(tokens: list[int], rec: Recommender) -> str | None:
    """The item of a sid_only answer ``begin, codes..., end, stop``; None when invalid."""
    ids, levels = rec.trie.token_ids, rec.trie.levels
    if len(tokens) != levels + 3 or tokens[-1] != rec.stop_token_id:
        return None
    code = ids.decode(tokens[: levels + 2])
    if code is None:
        return None
    row = int(rec.trie.item_index(torch.tensor([code]))[0])
    return rec.sid_map.item_ids[row] if row >= 0 else None


def _invalid_spans(tokens: list[int], rec: Recommender) -> int:
    """Invalid SID spans in ``tokens`` (a span cut off by the length limit only needs to be a
    catalog prefix). Code tokens outside spans are free text (no item), as in the HF processor."""
    ids, trie = rec.trie.token_ids, rec.trie
    bad, at = 0, 0
    while at < len(tokens):
        if tokens[at] != ids.begin_id:
            at += 1
            continue
        span = tokens[at : at + trie.levels + 2]
        cut = len(span) < trie.levels + 2
        codes = []
        for level, tok in enumerate(span[1 : trie.levels + 1]):
            lc = ids.level_code(tok)
            if lc is None or lc[0] != level:
                break
            codes.append(lc[1])
        prefix_ok = len(codes) == len(span[1 : trie.levels + 1]) and (
            not codes or int(trie.walk(torch.tensor([codes]))[0]) >= 0
        )
        if cut:
            bad += not prefix_ok
        else:
            bad += not (prefix_ok and span[-1] == ids.end_id)
        at += len(span)
    return bad


def test_vllm_constrained_requests_and_hf_parity(model_dir: Path, hf_rec: Recommender, tmp_path):
    """1,000+ constrained requests (greedy, sampling, vLLM beam search, SID spans in free text)
    produce 0 invalid items; the vLLM beam driver returns HF's items and scores."""
    histories = _histories(hf_rec, 12, seed=1)
    from recllm.decode import encode_prompts

    pool = _histories(hf_rec, 300, seed=2)
    prompts = encode_prompts(hf_rec.tokenizer, hf_rec.prompts(pool, 1))
    begin = hf_rec.trie.token_ids.begin_id
    span_prompts = [[*p, begin] for p in prompts[:250]]  # prompts that open a SID span
    job = {
        "model_dir": str(model_dir),
        "histories": histories,
        "prompts": prompts,
        "span_prompts": span_prompts,
        "beam_prompts": 50,
    }
    got = _run_child(job, tmp_path)

    # -- validity: every sid_only answer is one catalog item followed by the stop token
    answers = got["greedy"] + got["sample"] + [s for o in got["beam_search"] for s in o]
    items = [_answer_item(t, hf_rec) for t in answers]
    spans = got["spans"]
    total = len(answers) + len(spans)
    assert total >= 1000, total
    assert [t for t, i in zip(answers, items, strict=True) if i is None] == []
    assert sum(_invalid_spans([begin, *t], hf_rec) for t in spans) == 0
    assert len({tuple(t) for t in got["sample"]}) > 10  # sampling really samples
    assert all(len(o) == 4 for o in got["beam_search"])  # 4 distinct beams per prompt
    assert all(len({tuple(s) for s in o}) == 4 for o in got["beam_search"])
    # free text continues after a constrained span closes
    assert any(len(t) > hf_rec.trie.levels + 1 for t in spans)
    # The control: the same span prompts with the processor switched off per request leave
    # the catalog (this is what the counts above would catch).
    assert sum(_invalid_spans([begin, *t], hf_rec) for t in got["spans_off"]) > 10
    # Greedy sid_only answers are HF's greedy answers (same processor logic, same argmax).
    hf_greedy = generate_sids(
        hf_rec.backend,
        hf_rec.tokenizer,
        hf_rec.prompts(pool[:30], 1),
        hf_rec.sid_map,
        DecodeOptions(k=1, mode="greedy"),
        trie=hf_rec.trie,
    )
    assert [items[i] for i in range(30)] == [row[0].item_id for row in hf_greedy]

    # -- parity with transformers (recllm's SID beam search and HF generate)
    want = hf_rec.recommend_batch(histories, k=10)
    hf_generate = generate_sids(
        hf_rec.backend,
        hf_rec.tokenizer,
        hf_rec.prompts(histories, 5),
        hf_rec.sid_map,
        DecodeOptions(k=5, num_beams=8, engine="generate"),
        trie=hf_rec.trie,
    )
    worst = 0.0
    for vllm_row, hf_row in zip(got["recommend"], want, strict=True):
        assert [r[0] for r in vllm_row] == [r.item_id for r in hf_row]
        assert [r[2] for r in vllm_row] == [r.title for r in hf_row]
        diff = np.abs(np.array([r[1] for r in vllm_row]) - [r.score for r in hf_row]).max()
        worst = max(worst, float(diff))
    for vllm_row, hf_row in zip(got["recommend_k5_b8"], hf_generate, strict=True):
        assert [r[0] for r in vllm_row] == [r.item_id for r in hf_row]
        diff = np.abs(np.array([r[1] for r in vllm_row]) - [r.score for r in hf_row]).max()
        worst = max(worst, float(diff))
    print(f"max |score difference| vLLM vs HF: {worst:.2e}")
    assert worst < SCORE_ATOL


@pytest.mark.slow  # default-suite budget (README, Tests): the Recommender parity test covers the vLLM beam search
def test_cli_eval_engine_vllm_matches_sid_beam(model_dir: Path, tmp_path: Path):
    """``recllm eval --engine vllm`` ranks every user as the transformers engine does."""
    ranked = {}
    for engine in ("vllm", "sid_beam"):
        out = tmp_path / engine
        cmd = [sys.executable, "-m", "recllm.cli", "eval", "--model", str(model_dir)]
        cmd += ["--beams", "5", "--k", "2,5", "--engine", engine, "--out", str(out)]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env={**os.environ, **VLLM_ENV}, timeout=600
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
        assert f"engine {engine})" in proc.stdout
        ranked[engine] = json.loads((out / "metrics.json").read_text())["metrics"]
    assert ranked["vllm"]["users"] == ranked["sid_beam"]["users"] > 0
    for key in ("recall@2", "ndcg@5", "coverage", "invalid_rate"):
        assert ranked["vllm"][key] == pytest.approx(ranked["sid_beam"][key]), key


# Per-request seeds are left out: on vllm-cpu 0.32 a seeded request crashes the engine
# ("CPU Generator does not use offset" in gpu_model_runner._bookkeeping_sync), so the SID
# processor rejects them on CPU (tested below); the engine seed makes runs reproducible instead.


# -- the server ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    # the engine in the server's process (VLLM_ENV): one process fewer on 2 cores
    with served(model_dir, log, 512, args=["--max-k", "20"], env=VLLM_ENV) as base:
        yield base


def test_server_concurrent_clients(server: str, hf_rec: Recommender):
    """32 clients x 10 requests (recommendations and SID-only chat completions): 0 errors,
    every item valid; /v1/recommend agrees with the transformers Recommender."""
    histories = _histories(hf_rec, 320, seed=3)
    model = str(hf_rec.model_dir)

    def client(c: int) -> list[str]:
        errors = []
        for j in range(10):
            n = c * 10 + j
            if n % 2 == 0:
                k = 1 + n % 10
                status, body = post(server + "/v1/recommend", {"history": histories[n], "k": k})
                ok = status == 200 and len(body["items"]) == k
                ok = ok and all(i["item_id"] in hf_rec.sid_map for i in body["items"])
            else:
                req = {
                    "model": model,
                    "messages": [{"role": "user", "content": f"Recommend a movie ({n})."}],
                    "max_tokens": 8,
                    "temperature": 0.0 if n % 4 == 1 else 1.0,
                    "vllm_xargs": {"recllm_sid_only": True},
                }
                status, body = post(server + "/v1/chat/completions", req)
                ok = status == 200
                if ok:
                    text = body["choices"][0]["message"]["content"]
                    parsed = hf_rec.tokenizer(text, add_special_tokens=False)["input_ids"]
                    ok = _answer_item([*parsed, hf_rec.stop_token_id], hf_rec) is not None
            if not ok:
                errors.append(f"request {n}: {status} {body}")
        return errors

    start = time.perf_counter()
    with ThreadPoolExecutor(32) as pool:
        errors = [e for errs in pool.map(client, range(32)) for e in errs]
    seconds = time.perf_counter() - start
    print(f"320 requests from 32 clients in {seconds:.1f} s")
    assert errors == []

    history = ["item3", "item7", "item12"]
    status, body = post(server + "/v1/recommend", {"history": history, "k": 5})
    want = hf_rec.recommend(history, k=5)
    assert status == 200
    assert [i["item_id"] for i in body["items"]] == [r.item_id for r in want]
    assert [i["title"] for i in body["items"]] == [r.title for r in want]
    np.testing.assert_allclose(
        [i["score"] for i in body["items"]], [r.score for r in want], atol=SCORE_ATOL
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"history": ["no-such-item"], "k": 3}, "unknown item ids ['no-such-item']"),
        ({"history": [], "k": 3}, "history is empty"),
        ({"history": ["item1"], "k": 21}, "k=21 is out of range"),
        ({"history": ["item1"], "k": 0}, "k=0 is out of range"),
        ({"k": 3}, 'with a "history" list'),
        ({"history": ["item1"], "n": 3}, "unknown fields ['n']"),
        (b'{"history": ["item1"', "not valid JSON"),
        (b"[1, 2]", 'with a "history" list'),
        # issue 15: a RecursionError in the JSON parser used to answer 500
        (b"[" * 100_000, "JSON nested more than 64 levels deep"),
        ({"history": ["item1"], "k": 2, "x" * 100_000: 1}, "unknown fields ['xxxx"),
    ],
)
def test_server_bad_requests_get_400_and_it_keeps_serving(server: str, body, message):
    status, doc = post(server + "/v1/recommend", body)
    assert status == 400, doc
    assert message in doc["error"]["message"] and "Fix" in doc["error"]["message"]
    assert len(doc["error"]["message"]) < 500  # user input is quoted cut short
    status, doc = post(server + "/v1/recommend", {"history": ["item1"], "k": 2})
    assert status == 200 and len(doc["items"]) == 2


def test_server_rejects_seeded_requests_on_cpu(server: str, hf_rec: Recommender):
    """A per-request seed would crash vllm-cpu's engine for everyone: 400, server keeps serving."""
    req = {
        "model": str(hf_rec.model_dir),
        "messages": [{"role": "user", "content": "Recommend a movie."}],
        "max_tokens": 4,
        "seed": 7,
    }
    status, doc = post(server + "/v1/chat/completions", req)
    assert status == 400 and "seed" in doc["error"]["message"], doc
    del req["seed"]
    status, doc = post(server + "/v1/chat/completions", req)
    assert status == 200, doc


# -- issue 15: bad input gets a 4xx with a short message, never a 500 ---------------------------


def _post_raw(base: str, path: str, body: bytes | list[bytes], timeout: float = 120):
    """POST ``body`` (a list: sent chunked, without Content-Length); (status, raw response)."""
    import http.client
    from urllib.parse import urlsplit

    url = urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"}
        chunked = isinstance(body, list)
        conn.request(
            "POST",
            path,
            body=iter(body) if chunked else body,
            headers=headers,
            encode_chunked=chunked,
        )
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _chat(hf_rec: Recommender, **fields) -> dict:
    return {
        "model": str(hf_rec.model_dir),
        "messages": [{"role": "user", "content": "Recommend a movie."}],
        **fields,
    }


def test_server_deeply_nested_json_is_400_on_every_route(server: str, hf_rec: Recommender):
    """``[`` x 100000 used to raise RecursionError inside the JSON parser: HTTP 500."""
    for path in ("/v1/recommend", "/v1/chat/completions", "/v1/completions"):
        status, raw = _post_raw(server, path, b"[" * 100_000)
        doc = json.loads(raw)
        assert status == 400, (path, status, raw[:500])
        message = doc["error"]["message"]
        assert message.startswith("request body: JSON nested more than 64 levels deep. Fix: ")
    # ordinary nesting is untouched
    status, doc = post(server + "/v1/chat/completions", _chat(hf_rec, max_tokens=2))
    assert status == 200, doc


def test_server_limits_request_bodies(server: str, hf_rec: Recommender):
    """A 5 MB body used to be read whole, and a 5 MB unknown id came back in the error."""
    huge = json.dumps({"history": ["x" * 5_000_000], "k": 3}).encode()
    for path in ("/v1/recommend", "/v1/chat/completions"):
        status, raw = _post_raw(server, path, huge)
        assert status == 413, (path, status, raw[:500])
        message = json.loads(raw)["error"]["message"]
        assert f"{len(huge)} bytes, over this server's limit of 1048576 bytes" in message
        assert "--max-request-bytes" in message and len(raw) < 1000
    # without Content-Length (chunked upload) the limit holds too
    status, raw = _post_raw(
        server, "/v1/recommend", [huge[i : i + 65536] for i in range(0, len(huge), 65536)]
    )
    assert status == 413, raw[:500]
    assert "larger, over this server's limit" in json.loads(raw)["error"]["message"]
    # under the limit, a long unknown id is named, cut short
    status, doc = post(server + "/v1/recommend", {"history": ["y" * 500_000], "k": 3})
    assert status == 400
    message = doc["error"]["message"]
    assert "unknown item ids ['yyyy" in message and "(500002 chars)" in message
    assert len(message) < 500
    status, doc = post(server + "/v1/recommend", {"history": ["item1"], "k": 2})
    assert status == 200 and len(doc["items"]) == 2


def test_server_rejects_misspelled_recllm_xargs(server: str, hf_rec: Recommender):
    """``recllm_sid_onyl`` used to be ignored silently (a free-text answer, 200)."""
    req = _chat(hf_rec, max_tokens=8, vllm_xargs={"recllm_sid_onyl": True})
    status, doc = post(server + "/v1/chat/completions", req)
    assert status == 400, doc
    message = doc["error"]["message"]
    assert "'recllm_sid_onyl'" in message and "unknown recllm switch" in message
    assert "recllm_sid, recllm_sid_only, recllm_sid_partial" in message and "Fix" in message
    # keys of other processors are left alone
    req = _chat(hf_rec, max_tokens=8, temperature=0.0, vllm_xargs={"other_processor_knob": 1})
    status, doc = post(server + "/v1/chat/completions", req)
    assert status == 200, doc


def test_server_rejects_sid_only_with_too_few_tokens(server: str, hf_rec: Recommender):
    """``recllm_sid_only`` with ``max_tokens: 1`` used to answer ``<|sid_begin|>`` alone."""
    need = hf_rec.trie.levels + 2
    for max_tokens in (1, need - 1):
        req = _chat(hf_rec, max_tokens=max_tokens, vllm_xargs={"recllm_sid_only": True})
        status, doc = post(server + "/v1/chat/completions", req)
        assert status == 400, doc
        assert f"send max_tokens >= {need}" in doc["error"]["message"]
    req = _chat(hf_rec, max_tokens=need, temperature=0.0, vllm_xargs={"recllm_sid_only": True})
    status, doc = post(server + "/v1/chat/completions", req)
    assert status == 200, doc
    text = doc["choices"][0]["message"]["content"]
    parsed = hf_rec.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert _answer_item([*parsed, hf_rec.stop_token_id], hf_rec) is not None, text
    # a SID-free request is not limited
    req = _chat(hf_rec, max_tokens=1, vllm_xargs={"recllm_sid": False})
    assert post(server + "/v1/chat/completions", req)[0] == 200


def _serve_cli(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "recllm.cli", "serve", *args]
    env = {**os.environ, **VLLM_ENV}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


def test_serve_on_busy_port_is_one_line_before_loading(model_dir: Path):
    """A busy port used to end in an OSError traceback, after vLLM had started up."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _serve_cli(["--model", str(model_dir), "--port", str(port)])
    out = (proc.stdout + proc.stderr).strip().splitlines()
    assert proc.returncode == 2, out
    # one line and nothing else: vLLM was never imported (it logs as soon as it is)
    assert len(out) == 1, out
    assert out[0].startswith(f"recllm: error: --port {port}: cannot listen on 127.0.0.1:{port}")
    assert "pick a free port with --port N" in out[0]


@pytest.mark.parametrize("case", ["missing", "file", "not_recllm", "no_weights"])
def test_serve_bad_model_dir_is_one_line(case: str, model_dir: Path, tmp_path: Path):
    """Before vLLM starts: without weights, vLLM used to print 3 tracebacks after ~30 s."""
    if case == "no_weights":
        shutil.copytree(model_dir, tmp_path / "model")
        (tmp_path / "model" / "model.safetensors").unlink()
    model = {
        "missing": tmp_path / "nope",
        "file": model_dir / "config.json",
        "no_weights": tmp_path / "model",
    }.get(case, tmp_path)
    t0 = time.monotonic()
    proc = _serve_cli(["--model", str(model), "--port", str(free_port())])
    out = (proc.stdout + proc.stderr).strip().splitlines()
    assert proc.returncode == 2 and len(out) == 1, out
    prefix = "--model " if case in ("missing", "file") else ""
    assert out[0].startswith(f"recllm: error: {prefix}{model}")
    assert "Fix: " in out[0]
    if case == "no_weights":
        assert "the model weights model.safetensors missing" in out[0]
        assert time.monotonic() - t0 < 25  # no engine was started
