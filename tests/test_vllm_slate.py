"""Slates on vLLM (issue 32 item 3): ``Recommender.recommend_slates`` on the vLLM engine
(:mod:`recllm.decode.vllm_slate`, rounds with the processor's ``recllm_next_sid`` switch) equal
the transformers engine's (:func:`recllm.decode.slate.slate_search`): the same slates in the same
order and the same joint and per-item scores, with and without item filters; every slate is
distinct items. A request with ``recllm_next_sid`` opens a new SID after ``<|sid_end|>``; the
same request without it ends with the stop token (the control)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recllm.apps.recommender import Recommender
from recllm.testing import save_tiny_recommender
from tests.serving import VLLM_INPROCESS_ENV, run_vllm_child

pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.usefixtures("torch_single_thread")]

VLLM_ENV = VLLM_INPROCESS_ENV

_CHILD = """
import json, sys
from vllm import LLM, SamplingParams
from vllm.inputs import TokensPrompt
from recllm.apps.recommender import Recommender
from recllm.decode.vllm_processor import vllm_engine_kwargs

job = json.loads(open(sys.argv[1]).read())
d = job["model_dir"]
llm = LLM(model=d, dtype="float32", max_model_len=512, seed=0, enforce_eager=True,
          enable_prefix_caching=True, max_logprobs=50, **vllm_engine_kwargs(d))
rec = Recommender.from_pretrained(d, engine="vllm", backend=llm)
res = {}
for name, kw in job["calls"].items():
    rows = rec.recommend_slates(job["histories"], **kw)
    res[name] = [[[[r.item_id for r in s.items], [r.score for r in s.items], s.score]
                  for s in row] for row in rows]
prompt = TokensPrompt(prompt_token_ids=job["prompts"][0])
def run(extra):
    params = SamplingParams(temperature=0.0, max_tokens=job["levels"] + 3,
                            extra_args={"recllm_sid_only": True, **extra})
    return list(llm.generate([prompt], params, use_tqdm=False)[0].outputs[0].token_ids)
res["next_sid"] = run({"recllm_next_sid": True})
res["control"] = run({})
print("RESULT " + json.dumps(res))
"""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_recommender(tmp_path_factory.mktemp("rec") / "tiny", seed=0)


def test_vllm_slates_equal_hf(model_dir: Path, tmp_path: Path):
    hf = Recommender.from_pretrained(model_dir, engine="hf")
    rng = np.random.default_rng(1)
    items = hf.sid_map.item_ids
    histories = [
        [items[i] for i in rng.choice(len(items), size=int(rng.integers(2, 6)), replace=False)]
        for _ in range(3)
    ]
    calls = {
        "beam": {"n": 3, "num_beams": 6, "num_slates": 4},
        "greedy": {"n": 4, "mode": "greedy"},
        "filters": {
            "n": 3,
            "num_beams": 5,
            "num_slates": 2,
            "exclude": [list(items[:4]), None, list(items[5:9])],
            "allow": [None, list(items[::2]), None],
            "exclude_history": True,
        },
        "spread": {"n": 3, "num_beams": 5, "num_slates": 2, "spread": True},
        "penalty": {"n": 4, "num_beams": 5, "num_slates": 3, "diversity_penalty": 0.7},
    }
    from recllm.decode import encode_prompts

    job = {
        "model_dir": str(model_dir),
        "histories": histories,
        "calls": calls,
        "prompts": encode_prompts(hf.tokenizer, hf.prompts(histories, 3)),
        "levels": hf.trie.levels,
    }
    got = run_vllm_child(_CHILD, job, tmp_path, VLLM_ENV)
    for name, kw in calls.items():
        want = hf.recommend_slates(histories, **kw)
        for g_row, w_row in zip(got[name], want, strict=True):
            assert len(g_row) == len(w_row) == kw.get("num_slates", 1), name
            for (ids, parts, score), w in zip(g_row, w_row, strict=True):
                assert ids == [r.item_id for r in w.items], name
                assert len(set(ids)) == kw["n"]
                assert abs(score - w.score) < 5e-4, name
                assert max(abs(p - r.score) for p, r in zip(parts, w.items, strict=True)) < 5e-4
    # the penalty call is not the plain search in disguise: its HF slates differ from plain ones
    plain = hf.recommend_slates(histories, n=4, num_beams=5, num_slates=3)
    ranked = [[[r.item_id for r in s.items] for s in row] for row in plain]
    assert [[ids for ids, _, _ in row] for row in got["penalty"]] != ranked
    first = {i: hf.sid_map.code(i)[0] for i in items}
    for row in got["spread"]:  # each item under its own first code
        for ids, _, _ in row:
            assert len({first[i] for i in ids}) == len(ids)
    for n, row in enumerate(got["filters"]):
        banned = set(histories[n]) | set(calls["filters"]["exclude"][n] or ())
        for ids, _, _ in row:
            assert not set(ids) & banned
    ids = hf.trie.token_ids
    levels = hf.trie.levels
    assert got["next_sid"][levels + 1 : levels + 3] == [ids.end_id, ids.begin_id]
    assert got["control"][levels + 1 : levels + 3] == [ids.end_id, hf.stop_token_id]


def test_recllm_serve_answers_slates_on_vllm(model_dir: Path, tmp_path: Path):
    """``recllm serve`` (vLLM's async engine): ``"mode": "slate"`` answers the HF slate (beam and
    greedy, with exclude_history); a sampled slate gets a 400 naming the fix."""
    from tests.serving import post, served

    hf = Recommender.from_pretrained(model_dir, engine="hf")
    history = ["item3", "item7", "item11"]
    with served(model_dir, tmp_path / "serve.log", 512) as base:
        url = base + "/v1/recommend"
        for body, kw in (
            ({"k": 4}, {"n": 4}),
            ({"k": 3, "decoding": "greedy"}, {"n": 3, "mode": "greedy"}),
            ({"k": 4, "exclude_history": True}, {"n": 4, "exclude_history": True}),
        ):
            status, answer = post(url, {"history": history, "mode": "slate", **body})
            assert status == 200, answer
            want = hf.recommend_slate(history, **kw)
            assert answer["object"] == "slate"
            assert [i["item_id"] for i in answer["items"]] == [r.item_id for r in want.items]
            assert abs(answer["score"] - want.score) < 5e-4
        assert not {i["item_id"] for i in answer["items"]} & set(history)
        status, answer = post(url, {"history": history, "mode": "slate", "decoding": "sample"})
        assert status == 400 and "Fix:" in answer["error"]["message"], answer
        assert "sampled slates run on the transformers engine only" in answer["error"]["message"]
