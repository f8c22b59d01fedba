"""Unconstrained evaluation: the control that gives the constrained invalid rate of 0 a meaning.

Without the SID trie a model may answer with garbage or with a well-formed SID that names no
catalog item; both must count as invalid, read from the generated token ids. A model that knows
the answer format but not the catalog yet (a few training steps) gives an invalid rate strictly
between 0 and 1 unconstrained, 0 constrained, and its valid answers carry the same items, scores
and order as the constrained beam.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recllm import testing
from recllm.data.splits import Example
from recllm.data.types import Catalog
from recllm.decode import DecodeOptions, SIDTrie, encode_prompts, generate_sids
from recllm.decode.answers import _parse_free
from recllm.eval.run import PromptSpec, build_prompts, evaluate_recommender
from recllm.sid.sidmap import SIDMap
from recllm.vocab import extend_vocab

pytestmark = pytest.mark.usefixtures("torch_single_thread")

SIZES = (4, 4)
N_ITEMS = 10  # of 16 possible code pairs: 6 well-formed SIDs name no item


def sid_map() -> SIDMap:
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(*[np.arange(k) for k in SIZES], indexing="ij"), -1)
    codes = grid.reshape(-1, len(SIZES))[rng.choice(16, size=N_ITEMS, replace=False)]
    return SIDMap([f"i{k}" for k in range(N_ITEMS)], codes, SIZES)


def catalog() -> Catalog:
    return Catalog(
        {f"i{k}": {"title": f"film {k}"} for k in range(N_ITEMS)}, text_fields=("title",)
    )


def examples() -> list[Example]:
    return [
        Example(f"u{u}", tuple(f"i{(u + j) % N_ITEMS}" for j in range(3)), f"i{(u + 3) % N_ITEMS}")
        for u in range(4)
    ]


def extended_model(smap: SIDMap):
    tok = testing.build_tiny_tokenizer()
    model = testing.build_tiny_qwen3(tok)
    ext = extend_vocab(model, tok, smap)
    return model, tok, ext.token_ids


def teach_format(model, tok, token_ids, smap, prompts, targets, steps: int = 50) -> None:
    """A few full-batch steps on ``prompt -> SID + stop``: the model learns the answer format,
    not yet the catalog (its beams mix catalog SIDs with malformed answers)."""
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    pairs = [
        (p, [*token_ids.encode(smap.code(t)), tok.eos_token_id])
        for p, t in zip(encode_prompts(tok, prompts), targets, strict=True)
    ]
    model.train()
    for _ in range(steps):
        loss = sum(
            model(input_ids=torch.tensor([p + a]), labels=torch.tensor([[-100] * len(p) + a])).loss
            for p, a in pairs
        ) / len(pairs)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def test_answers_are_read_from_token_ids():
    smap = sid_map()
    _, tok, ids = extended_model(smap)
    trie = SIDTrie.from_sid_map(smap, ids)
    stop = tok.eos_token_id
    known = [int(c) for c in smap.code("i3")]
    catalog_codes = {tuple(int(c) for c in smap.code(i)) for i in smap.item_ids}
    unknown = next(
        (a, b) for a in range(4) for b in range(4) if (a, b) not in catalog_codes
    )  # a well-formed SID of no item
    text = tok("hello", add_special_tokens=False)["input_ids"][0]
    rows = [
        [*ids.encode(known), stop],  # valid
        [*ids.encode(unknown), stop],  # not in catalog
        [*ids.encode(known), text],  # does not stop after the SID
        [ids.begin_id, ids.code_id(1, known[1]), ids.code_id(0, known[0]), ids.end_id, stop],
        [text, *ids.encode(known)],  # text before the SID
        [stop, stop, stop, stop, stop],  # stops at once (the padding of a finished row)
    ]
    got_rows, why = _parse_free(torch.tensor(rows), ids, trie, stop)
    assert got_rows == [smap.item_ids.index("i3"), -1, -1, -1, -1, -1]
    assert why == [None, "not in catalog", "malformed", "malformed", "malformed", "malformed"]
    # a bare SID (sid_sequence models): no stop token needed, the length decides
    bare_rows, bare_why = _parse_free(torch.tensor([ids.encode(known)]), ids, trie, None)
    assert bare_rows == [smap.item_ids.index("i3")] and bare_why == [None]


def test_unconstrained_invalid_rate_is_measured_and_constrained_is_zero():
    smap, cat, exs = sid_map(), catalog(), examples()
    model, tok, ids = extended_model(smap)
    spec = PromptSpec(style="chat", max_history=3)
    run = dict(beams=8, ks=(4, 8), batch_size=4, progress=False)

    # A random model never writes a SID on its own: every unconstrained answer is invalid.
    free = evaluate_recommender(model, tok, smap, exs, spec, cat, constrained=False, **run)
    bound = evaluate_recommender(model, tok, smap, exs, spec, cat, **run)
    assert free.metrics["invalid_rate"] == 1.0 and free.metrics["constrained"] is False
    assert all(r == [None] * 8 for r in free.ranked)
    assert bound.metrics["invalid_rate"] == 0.0 and bound.metrics["constrained"] is True

    # Taught the format only: some answers are catalog SIDs, some are not.
    prompts = build_prompts(spec, exs, smap, cat)
    teach_format(model, tok, ids, smap, prompts, [ex.target for ex in exs])
    free = evaluate_recommender(model, tok, smap, exs, spec, cat, constrained=False, **run)
    bound = evaluate_recommender(model, tok, smap, exs, spec, cat, **run)
    assert 0.0 < free.metrics["invalid_rate"] < 1.0, free.ranked
    assert bound.metrics["invalid_rate"] == 0.0
    assert all(len(r) == 8 for r in free.ranked)  # invalid answers keep their rank slots

    # The valid answers are the constrained beam's items: same scores, same order.
    free_recs = generate_sids(
        model, tok, prompts, smap, DecodeOptions(k=8, constrained=False, batch_size=4)
    )
    exact = generate_sids(model, tok, prompts, smap, DecodeOptions(k=N_ITEMS, batch_size=4))
    n_valid = 0
    for free_row, exact_row in zip(free_recs, exact, strict=True):
        score = {r.item_id: r.score for r in exact_row}
        valid = [r for r in free_row if r.item_id is not None]
        n_valid += len(valid)
        order = [r.item_id for r in exact_row]
        positions = [order.index(r.item_id) for r in valid]
        assert positions == sorted(positions)
        for r in valid:
            assert r.score == pytest.approx(score[r.item_id], abs=1e-4)
    assert n_valid > 0


def test_unconstrained_needs_one_transformers_model():
    smap, cat, exs = sid_map(), catalog(), examples()
    model, tok, _ = extended_model(smap)
    spec = PromptSpec(style="chat", max_history=3)
    with pytest.raises(ValueError, match="unconstrained evaluation decodes one model"):
        evaluate_recommender(
            [model, model], tok, smap, exs, spec, cat, beams=2, ks=(2,), constrained=False
        )
    with pytest.raises(ValueError, match="engine='generate' for constrained=False"):
        DecodeOptions(k=1, engine="sid_beam", constrained=False)
