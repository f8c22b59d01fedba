"""recllm.decode.prefixes: per-row prefix restriction (think-ahead), against brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recllm.decode import SIDLogitsProcessor, SIDTrie, sid_beam_search, sid_constraint, tails_of
from recllm.decode.prefixes import PrefixSets
from recllm.vocab.format import SIDTokenIds
from tests.decode.helpers import code_sets
from tests.decode.test_decode import (
    PROMPTS,
    brute_ensemble_scores,
    extended_model,
    hf_beams,
    left_padded,
    random_sid_map,
)

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def _draw_rows(rng, codes, depth, rows):
    """Per row: None (unrestricted) or a non-empty random subset of the catalog's P-prefixes."""
    all_prefixes = sorted({c[:depth] for c in codes})
    out = []
    for _ in range(rows):
        if rng.random() < 0.2:
            out.append(None)
            continue
        n = rng.integers(1, len(all_prefixes) + 1)
        pick = rng.choice(len(all_prefixes), size=n, replace=False)
        out.append([all_prefixes[i] for i in pick])
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=code_sets(), seed=st.integers(0, 2**31 - 1), depth_frac=st.floats(0, 1))
def test_restricted_constraint_matches_brute_force(data, seed, depth_frac):
    """Every reachable state of every row: the allowed codes are exactly those of catalog items
    under one of the row's prefixes that extend the span so far. So nothing outside the set
    is ever emitted, and no allowed continuation is ever masked."""
    sizes, codes = data
    rng = np.random.default_rng(seed)
    levels = len(sizes)
    depth = 1 + int(depth_frac * (levels - 1) + 0.5) if levels > 1 else 1
    ids = SIDTokenIds(500, sizes)
    trie = SIDTrie.from_codes(codes, sizes, ids)
    rows = _draw_rows(rng, codes, depth, 4)
    sets = PrefixSets.from_prefixes(trie, rows)
    # every (row, span) pair reachable under the restriction, at every depth
    tails, owner, spans = [], [], []
    for r, allowed in enumerate(rows):
        items = [c for c in codes if allowed is None or c[:depth] in allowed]
        for span in sorted({c[:d] for c in items for d in range(levels)}):
            seq = [7, ids.begin_id] + [ids.code_id(lv, c) for lv, c in enumerate(span)]
            tails.append(tails_of(torch.tensor([seq]), levels + 1)[0])
            owner.append(r)
            spans.append((span, items))
    got = sid_constraint(
        torch.stack(tails), trie, prefixes=sets, prefix_rows=torch.tensor(owner)
    ).codes
    for n, (span, items) in enumerate(spans):
        d = len(span)
        expect = {c[d] for c in items if c[:d] == span}
        assert set(got[n].nonzero().flatten().tolist()) == expect, (rows[owner[n]], span)


def test_prefix_sets_refuse_bad_input_and_slice():
    sizes = (3, 3, 4)
    codes = [(0, 1, 2), (1, 0, 2), (0, 2, 1), (2, 2, 3), (1, 1, 0), (0, 1, 3)]
    trie = SIDTrie.from_codes(codes, sizes)
    with pytest.raises(ValueError, match="empty prefix set"):
        PrefixSets.from_prefixes(trie, [[(0, 1)], []])
    with pytest.raises(ValueError, match="not a prefix of any catalog SID"):
        PrefixSets.from_prefixes(trie, [[(0, 1)], [(2, 0)]])
    with pytest.raises(ValueError, match="same length"):
        PrefixSets.from_prefixes(trie, [[(0, 1), (1,)]])
    sets = PrefixSets.from_prefixes(trie, [[(0, 1)], None, [(2, 2), (1, 0)]])
    tail = sets.slice(1, 3)
    assert tail.rows == 2 and tail.restricted.tolist() == [False, True]
    codes_at = torch.arange(trie.max_codes)
    root = torch.zeros(1, dtype=torch.long)
    first = tail.allowed_codes(trie, torch.tensor([1]), root, 0)[0]
    assert first[codes_at].tolist() == [False, True, True, False]  # (1,.) and (2,.)
    assert tail.allowed_codes(trie, torch.tensor([0]), root, 0)[0].tolist() == [
        True,
        True,
        True,
        False,
    ]


@pytest.mark.parametrize("stop", [False, True], ids=["codes-only", "with-stop"])
def test_restricted_beam_search_equals_exhaustive_scoring_of_allowed_items(stop):
    """With as many beams as items, the restricted search returns exactly the allowed items,
    ranked and scored as exhaustive scoring ranks them; the control (no restriction) returns
    items outside the sets."""
    sid_map = random_sid_map((4, 5, 3), 40, seed=4)
    model, tok, token_ids = extended_model(sid_map, seed=5)
    trie = SIDTrie.from_sid_map(sid_map, token_ids)
    stop_id = tok.eos_token_id if stop else None
    prefixes_of = sorted({tuple(int(x) for x in c[:2]) for c in sid_map.codes})
    rows = [prefixes_of[:3], prefixes_of[5:6] + prefixes_of[-2:]]
    sets = PrefixSets.from_prefixes(trie, rows)
    ids, mask = left_padded(tok, PROMPTS[:2])
    out = sid_beam_search(
        model, ids, mask, trie, num_beams=40, stop_token_id=stop_id, prefixes=sets
    )
    free = sid_beam_search(model, ids, mask, trie, num_beams=40, stop_token_id=stop_id)
    for b, allowed in enumerate(rows):
        keep = [i for i, c in enumerate(sid_map.codes) if tuple(int(x) for x in c[:2]) in allowed]
        one_ids, one_mask = left_padded(tok, [PROMPTS[b]])
        prompt = one_ids[0][one_mask[0].bool()].tolist()
        brute = brute_ensemble_scores([model], prompt, sid_map, token_ids, stop_id)
        order = sorted(keep, key=lambda i: -brute[i])
        items = [i for i in out.items[b].tolist() if i >= 0]
        assert items == order
        np.testing.assert_allclose(
            out.scores[b, : len(order)].numpy(), brute[order], rtol=0, atol=1e-4
        )
        assert not torch.isfinite(out.scores[b, len(order) :]).any()  # the rest are dead slots
        outside = set(free.items[b].tolist()[:10]) - set(keep)
        assert outside, "control: unrestricted, the top items include ones outside the set"


def test_restricted_processor_in_generate_equals_restricted_beam_search():
    """model.generate with the prefix-restricted processor returns the restricted beams."""
    sid_map = random_sid_map((6, 7, 8), 150, seed=1)
    model, tok, token_ids = extended_model(sid_map, seed=2)
    trie = SIDTrie.from_sid_map(sid_map, token_ids)
    prefixes_of = sorted({tuple(int(x) for x in c[:2]) for c in sid_map.codes})
    sets = PrefixSets.from_prefixes(trie, [prefixes_of[::7], prefixes_of[3::11], None])
    ids, mask = left_padded(tok, PROMPTS)
    stop = tok.eos_token_id
    ours = sid_beam_search(model, ids, mask, trie, num_beams=6, stop_token_id=stop, prefixes=sets)
    proc = SIDLogitsProcessor(trie, sid_only=True, stop_token_id=stop, prefixes=sets)
    from recllm.decode import sid_generation_config

    cfg = sid_generation_config(
        mode="beam", levels=3, num_beams=6, k=6, stop_token_id=stop, pad_token_id=0
    )
    out = model.generate(
        input_ids=ids, attention_mask=mask, generation_config=cfg, logits_processor=[proc]
    )
    gen = out.sequences[:, ids.shape[1] :].view(3, 6, -1)[:, :, 1:4] - trie.code_token_start
    hf_items = trie.item_index(gen.reshape(-1, 3)).view(3, 6)
    assert hf_items.tolist() == ours.items.tolist()
    np.testing.assert_allclose(out.sequences_scores.view(3, 6), ours.scores, atol=1e-4)
    # the unrestricted row equals plain beam search (the restriction is per row)
    plain = hf_beams(model, ids[2:], mask[2:], trie, num_beams=6, lp=1.0, stop=stop, sid_only=True)
    assert [trie.item_index(torch.tensor([c]))[0].item() for c, _ in plain[0]] == ours.items[
        2
    ].tolist()


def test_prefix_beam_search_returns_the_best_prefixes():
    """depth=2 searches the first two levels only: with beams >= prefixes it returns every
    catalog prefix ranked by summed code log-prob, exactly."""
    sid_map = random_sid_map((4, 5, 3), 40, seed=4)
    model, tok, token_ids = extended_model(sid_map, seed=5)
    trie = SIDTrie.from_sid_map(sid_map, token_ids)
    ids, mask = left_padded(tok, PROMPTS[:1])
    prefixes_of = sorted({tuple(int(x) for x in c[:2]) for c in sid_map.codes})
    out = sid_beam_search(model, ids, mask, trie, num_beams=len(prefixes_of), depth=2)
    assert out.codes.shape == (1, len(prefixes_of), 2)
    assert (out.items == -1).all()
    prompt = [*ids[0].tolist(), token_ids.begin_id]
    brute = {}
    for p in prefixes_of:
        seq = [*prompt, token_ids.code_id(0, p[0]), token_ids.code_id(1, p[1])]
        logp = torch.log_softmax(model(input_ids=torch.tensor([seq])).logits[0].float(), -1)
        n = len(prompt)
        brute[p] = float(logp[n - 1, seq[n]] + logp[n, seq[n + 1]])
    got = [tuple(c) for c in out.codes[0].tolist()]
    assert got == sorted(prefixes_of, key=lambda p: -brute[p])
    np.testing.assert_allclose(out.scores[0].numpy(), [brute[p] for p in got], atol=1e-4)
