"""Item filters on vLLM (issue 32): ``recllm_exclude`` / ``recllm_allow`` per request inside the
SID processor, and ``Recommender.recommend(exclude=, allow=, exclude_history=)`` on the vLLM
engine equal to the transformers engine; sampled answers never name an excluded item, while the
same requests without the filter do (the control)."""

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
    rows = rec.recommend_batch(job["histories"], k=8, num_beams=10, **kw)
    res[name] = [[[r.item_id, r.score] for r in row] for row in rows]
prompts = [TokensPrompt(prompt_token_ids=p) for p in job["prompts"]]
def sample(extra):
    params = SamplingParams(temperature=2.0, top_k=0, max_tokens=8, n=job["draws"],
                            extra_args={"recllm_sid_only": True, **extra})
    return [[list(c.token_ids) for c in o.outputs] for o in llm.generate(prompts, params,
                                                                          use_tqdm=False)]
res["sample_filtered"] = sample({"recllm_exclude": job["exclude"]})
res["sample_allowed"] = sample({"recllm_allow": job["allow"]})
res["sample_plain"] = sample({})
print("RESULT " + json.dumps(res))
"""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_recommender(tmp_path_factory.mktemp("rec") / "tiny", seed=0)


def _item(tokens: list[int], rec: Recommender) -> str | None:
    ids, levels = rec.trie.token_ids, rec.trie.levels
    if len(tokens) < levels + 2 or tokens[0] != ids.begin_id:
        return None
    code = ids.decode(tokens[: levels + 2])
    return None if code is None else rec.sid_map.item(code)


def test_vllm_filters_equal_hf_and_never_emit_excluded_items(model_dir: Path, tmp_path: Path):
    hf = Recommender.from_pretrained(model_dir, engine="hf")
    rng = np.random.default_rng(0)
    items = hf.sid_map.item_ids
    histories = [
        [items[i] for i in rng.choice(len(items), size=int(rng.integers(2, 6)), replace=False)]
        for _ in range(4)
    ]
    plain = hf.recommend_batch(histories, k=8, num_beams=10)
    exclude = [[r.item_id for r in row[:3]] for row in plain]  # each history's own top 3
    allow = [list(items[::3]), None, list(items[1::4]), list(items[:5])]
    calls = {
        "plain": {},
        "exclude": {"exclude": exclude},
        "allow": {"allow": allow, "exclude": [None, exclude[1], None, exclude[3]]},
        "history": {"exclude_history": True},
    }
    from recllm.decode import encode_prompts

    prompts = encode_prompts(hf.tokenizer, hf.prompts(histories, 8))
    top = sorted({i for row in exclude for i in row})
    job = {
        "model_dir": str(model_dir),
        "histories": histories,
        "calls": calls,
        "prompts": prompts,
        "draws": 24,
        "exclude": top,
        "allow": list(items[:6]),
    }
    got = run_vllm_child(_CHILD, job, tmp_path, VLLM_ENV)
    for name, kw in calls.items():
        want = hf.recommend_batch(histories, k=8, num_beams=10, **kw)
        for g, w in zip(got[name], want, strict=True):
            assert [i for i, _ in g] == [r.item_id for r in w], name
            assert max(abs(s - r.score) for (_, s), r in zip(g, w, strict=True)) < 1e-4
    for n, row in enumerate(got["exclude"]):
        assert len(row) == 8 and not {i for i, _ in row} & set(exclude[n])
    for n, row in enumerate(got["history"]):
        assert not {i for i, _ in row} & set(histories[n])
    assert {i for i, _ in got["allow"][0]} <= set(allow[0])
    # sampling at temperature 2: filtered answers never name an excluded item; the control does
    filtered = [_item(t, hf) for row in got["sample_filtered"] for t in row]
    plain_draws = [_item(t, hf) for row in got["sample_plain"] for t in row]
    allowed = [_item(t, hf) for row in got["sample_allowed"] for t in row]
    assert all(i is not None for i in filtered + plain_draws + allowed)
    assert not set(filtered) & set(top)
    assert set(plain_draws) & set(top)
    assert set(allowed) <= set(job["allow"])
    assert set(plain_draws) - set(job["allow"])  # the control: unfiltered draws leave the list


def _ranked_on_vllm(model_dir, hf: Recommender, histories, tmp_path: Path, exclude, allow):
    """``recommend_batch(k=8, num_beams=10)`` on vLLM (a child process) and on HF, and a check
    that they agree: same items, scores within 1e-4. Returns the vLLM lists."""
    from recllm.decode import encode_prompts

    job = {
        "model_dir": str(model_dir),
        "histories": histories,
        "calls": {"ranked": {}},
        "prompts": encode_prompts(hf.tokenizer, hf.prompts(histories, 8)),
        "draws": 1,
        "exclude": exclude,
        "allow": allow,
    }
    got = run_vllm_child(_CHILD, job, tmp_path, VLLM_ENV)["ranked"]
    want = hf.recommend_batch(histories, k=8, num_beams=10)
    for g, w in zip(got, want, strict=True):
        pairs = [(r.item_id, round(r.score, 4)) for r in w]
        assert [i for i, _ in g] == [r.item_id for r in w], (g, pairs)
        assert max(abs(s - r.score) for (_, s), r in zip(g, w, strict=True)) < 1e-4
    return got


def test_vllm_new_item_bonus_equals_hf(model_dir: Path, tmp_path: Path):
    """The vLLM Recommender's second, allow-listed search for added items, merged after the
    bonus, equals the HF beam group (items and scores); the control without a bonus ranks
    fewer added items."""
    from recllm.data.types import Catalog
    from recllm.sid.sidmap import SIDMap
    from recllm.vocab.catalog_add import CatalogAddition, add_items_to_model

    old = SIDMap.load(model_dir / "sid_map.json")
    used = {tuple(c) for c in old.codes.tolist()}
    free = [c for c in np.ndindex(*old.codebook_sizes) if c not in used][::7][:12]
    new_ids = [f"new{i}" for i in range(len(free))]
    new_map = SIDMap(
        old.item_ids + new_ids, np.concatenate([old.codes, np.array(free)]), old.codebook_sizes
    )
    boosted = add_items_to_model(
        model_dir,
        CatalogAddition(new_map, new_ids),
        Catalog({i: {"title": f"fresh {i}"} for i in new_ids}, ("title",)),
        tmp_path / "boosted",
        new_item_bonus=1.0,
    )
    hf = Recommender.from_pretrained(boosted, engine="hf")
    histories = [[old.item_ids[i] for i in (1, 5, 9)], [old.item_ids[i] for i in (2, 30)]]
    got = _ranked_on_vllm(boosted, hf, histories, tmp_path, [old.item_ids[0]], old.item_ids[:6])
    plain = Recommender.from_pretrained(boosted, engine="hf")
    plain.fresh = None  # control: the plain search (no group, no bonus)
    control = plain.recommend_batch(histories, k=8, num_beams=10)
    count = lambda rows: sum(i.startswith("new") for row in rows for i in row)  # noqa: E731
    assert count([[i for i, _ in g] for g in got]) > count(
        [[r.item_id for r in row] for row in control]
    )


def test_vllm_hybrid_text_new_items_equal_hf(tmp_path: Path):
    """The hybrid (added items by text similarity beside a search of the trained items alone,
    ``catalog add --new-item-text-alpha``) gives the same items and scores on vLLM as on HF;
    the control: the lists hold added items, which the search alone never returns."""
    import json

    from recllm.cli import main
    from tests.decode.test_text_head import GROUPS, PER_GROUP, grouped_model

    base = grouped_model(tmp_path)
    items = tmp_path / "new.jsonl"
    items.write_text(
        "".join(
            json.dumps({"item_id": f"new-{w}", "title": f"{w} new item"}) + "\n" for w in GROUPS
        )
    )
    out = tmp_path / "hybrid"
    argv = ["catalog", "add", "--model", str(base), "--items", str(items), "--out", str(out)]
    assert main([*argv, "--new-item-text-alpha", "5", "--new-item-bonus", "0"]) == 0
    hf = Recommender.from_pretrained(out, engine="hf")
    histories = [[str(g * PER_GROUP + k) for k in range(4)] for g in range(len(GROUPS))]
    got = _ranked_on_vllm(out, hf, histories, tmp_path, ["0"], ["0", "1"])
    assert any(i.startswith("new-") for row in got for i, _ in row)  # the merge did its work
