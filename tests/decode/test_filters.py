"""recllm.decode.filters: per-row exclude / allow item sets inside the SID constraint.

Checked against brute force (the trie of the admissible items alone), exhaustively on tiny
catalogs, through the HF logits processor and ``sid_beam_search``, with controls that decode the
excluded items when the filter is off.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recllm.decode import SIDLogitsProcessor, SIDTrie, sid_beam_search, sid_constraint, tails_of
from recllm.decode.filters import ItemFilter
from recllm.decode.generate import sid_generation_config
from recllm.errors import UserError
from recllm.vocab.format import SIDTokenIds
from tests.decode.helpers import code_sets
from tests.decode.test_decode import PROMPTS, extended_model, left_padded, random_sid_map

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def _draw_filters(rng, n_items, rows):
    """Per row: (exclude, allow) SID-map rows, each None or a random subset; never empty."""
    out = []
    while len(out) < rows:
        kind = rng.integers(0, 5)
        ex = al = None
        if kind in (1, 3, 4):
            ex = rng.choice(n_items, size=rng.integers(0, n_items + 1), replace=False).tolist()
        if kind in (2, 3):
            al = rng.choice(n_items, size=rng.integers(1, n_items + 1), replace=False).tolist()
        if kind == 4 and n_items > 1:  # a wide allow-list (turned into an exclusion)
            al = rng.choice(n_items, size=n_items - 1, replace=False).tolist()
        live = set(range(n_items) if al is None else al) - set(ex or [])
        if live:
            out.append((ex, al))
    return out


def _admissible(codes, ex, al):
    keep = set(range(len(codes)) if al is None else al) - set(ex or [])
    return [codes[i] for i in sorted(keep)]


def _walk(trie, filt, row, levels):
    """Every leaf reachable by walking the filtered mask from the root (exhaustive)."""
    found, stack = [], [(0, ())]
    while stack:
        node, prefix = stack.pop()
        if len(prefix) == levels:
            found.append(prefix)
            continue
        allowed = trie.allowed[node].clone()
        if filt is not None:
            allowed &= ~filt.removed_codes(torch.tensor(row), torch.tensor(node))
        for c in allowed.nonzero().flatten().tolist():
            stack.append((int(trie.child(torch.tensor(node), torch.tensor(c))), (*prefix, c)))
    return sorted(found)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=code_sets(max_items=120), seed=st.integers(0, 2**31 - 1))
def test_filtered_mask_equals_the_trie_of_the_admissible_items(data, seed):
    """Property + exhaustive parity: at every state reachable under the filter, the allowed
    codes are exactly those of the trie built from the admissible items alone; the exhaustive
    walk of the masked trie reaches exactly the admissible items (no excluded item, every
    allowed one)."""
    sizes, codes = data
    rng = np.random.default_rng(seed)
    levels = len(sizes)
    ids = SIDTokenIds(500, sizes)
    trie = SIDTrie.from_codes(codes, sizes, ids)
    rows = _draw_filters(rng, len(codes), 4)
    filt = ItemFilter.from_items(trie, [r[0] for r in rows], [r[1] for r in rows])
    tails, owner, spans = [], [], []
    for r, (ex, al) in enumerate(rows):
        items = _admissible(codes, ex, al)
        assert _walk(trie, filt, r, levels) == sorted(items)
        for span in sorted({c[:d] for c in items for d in range(levels)}):
            seq = [7, ids.begin_id] + [ids.code_id(lv, c) for lv, c in enumerate(span)]
            tails.append(tails_of(torch.tensor([seq]), levels + 1)[0])
            owner.append(r)
            spans.append((span, items))
    got = sid_constraint(
        torch.stack(tails), trie, item_filter=filt, filter_rows=torch.tensor(owner)
    ).codes
    for n, (span, items) in enumerate(spans):
        brute = SIDTrie.from_codes(items, sizes, ids)
        seq = [7, ids.begin_id] + [ids.code_id(lv, c) for lv, c in enumerate(span)]
        expect = sid_constraint(tails_of(torch.tensor([seq]), levels + 1), brute).codes[0]
        assert torch.equal(got[n], expect), (rows[owner[n]], span)
        assert {c[len(span)] for c in items if c[: len(span)] == span} == set(
            got[n].nonzero().flatten().tolist()
        )


def test_exhaustive_tiny_catalog_every_subset():
    """Every exclude set of a 6-item catalog (all 63 non-full subsets), and every allow-list:
    the masked trie reaches exactly the admissible items."""
    sizes = (2, 2, 3)
    codes = [(0, 0, 0), (0, 0, 2), (0, 1, 1), (1, 0, 0), (1, 0, 1), (1, 1, 2)]
    trie = SIDTrie.from_codes(codes, sizes)
    subsets = [[i for i in range(6) if m >> i & 1] for m in range(64)]
    proper = [s for s in subsets if len(s) < 6]
    ex = ItemFilter.from_items(trie, exclude=proper)
    for r, s in enumerate(proper):
        assert _walk(trie, ex, r, 3) == sorted(_admissible(codes, s, None))
    nonempty = [s for s in subsets if s]
    al = ItemFilter.from_items(trie, allow=nonempty)
    for r, s in enumerate(nonempty):
        assert _walk(trie, al, r, 3) == sorted(_admissible(codes, None, s))
    assert _walk(trie, None, 0, 3) == sorted(codes)  # control: the unfiltered trie


def test_filter_refuses_empty_rows_unknown_ids_and_slices():
    sid_map = random_sid_map((3, 3, 4), 12, seed=3)
    trie = SIDTrie.from_sid_map(sid_map, SIDTokenIds(0, sid_map.codebook_sizes))
    with pytest.raises(ValueError, match="row 1: its exclude / allow sets leave no catalog item"):
        ItemFilter.from_items(trie, exclude=[[0], list(range(12))])
    with pytest.raises(ValueError, match="leave no catalog item"):
        ItemFilter.from_items(trie, exclude=[[3]], allow=[[3]])
    with pytest.raises(UserError, match=r"request exclude: unknown item id 'nope'"):
        ItemFilter.from_ids(trie, exclude=[["item1", "nope"]], where="request ")
    with pytest.raises(UserError, match=r"^allow: unknown item id 'x9'"):
        ItemFilter.from_ids(trie, allow=[["x9"]])
    with pytest.raises(UserError, match=r"^allow and exclude: leave no catalog item"):
        ItemFilter.from_ids(trie, exclude=[["item2"]], allow=[["item2"]])
    filt = ItemFilter.from_ids(trie, exclude=[None, ["item1"], None, ["item4", "item5"]])
    assert filt.filtered.tolist() == [False, True, False, True]
    part = filt.slice(2, 4)
    assert part.rows == 2 and part.excluded.tolist() == [[1, 4], [1, 5]]
    assert _walk(trie, part, 1, 3) == _walk(trie, filt, 3, 3)
    assert _walk(trie, part, 0, 3) == _walk(trie, None, 0, 3)


def test_with_excluded_and_repeat_rows_grow_per_beam():
    """A slate decoder's use: one filter row per beam, each excluding its own items."""
    sid_map = random_sid_map((3, 3, 4), 20, seed=4)
    trie = SIDTrie.from_sid_map(sid_map, SIDTokenIds(0, sid_map.codebook_sizes))
    codes = [tuple(int(c) for c in row) for row in sid_map.codes]
    base = ItemFilter.from_items(trie, exclude=[[0, 1], [2]])
    beams = base.repeat_rows(3)
    assert beams.rows == 6
    for r in range(6):
        assert _walk(trie, beams, r, 3) == _walk(trie, base, r // 3, 3)
    grown = beams.with_excluded(trie, torch.tensor([0, 1, 1, 5]), torch.tensor([5, 6, 7, 8]))
    expect = {0: [0, 1, 5], 1: [0, 1, 6, 7], 2: [0, 1], 3: [2], 4: [2], 5: [2, 8]}
    for r, ex in expect.items():
        assert _walk(trie, grown, r, 3) == sorted(_admissible(codes, ex, None))
    assert grown.allows_items(torch.tensor(1), torch.tensor([6, 8])).tolist() == [False, True]
    stacked = ItemFilter.stack(trie, {2: base.slice(1, 2)}, 4)
    assert _walk(trie, stacked, 2, 3) == _walk(trie, base, 1, 3)
    assert _walk(trie, stacked, 0, 3) == _walk(trie, None, 0, 3)


# -- decoding with a model ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    sid_map = random_sid_map((4, 4, 4), 24, seed=7)
    model, tok, token_ids = extended_model(sid_map, seed=5)
    trie = SIDTrie.from_sid_map(sid_map, token_ids)
    ids, mask = left_padded(tok, PROMPTS)
    return sid_map, model, tok, trie, ids, mask


def _hf_items(model, ids, mask, trie, stop, beams, item_filter):
    cfg = sid_generation_config(
        mode="beam", levels=3, num_beams=beams, k=beams, stop_token_id=stop, pad_token_id=0
    )
    proc = SIDLogitsProcessor(trie, sid_only=True, stop_token_id=stop, item_filter=item_filter)
    out = model.generate(
        input_ids=ids, attention_mask=mask, generation_config=cfg, logits_processor=[proc]
    )
    gen = out.sequences[:, ids.shape[1] :].view(ids.shape[0], beams, -1)
    scores = out.sequences_scores.view(ids.shape[0], beams)
    codes = gen[:, :, 1:4] - trie.code_token_start
    items = trie.item_index(codes.reshape(-1, 3)).view(ids.shape[0], beams)
    return [
        [(int(i), float(s)) for i, s in zip(row, srow, strict=True) if s > -1e8]
        for row, srow in zip(items, scores, strict=True)
    ]


def test_beam_search_never_emits_excluded_items_and_matches_hf(tiny):
    """Exclude each prompt's unfiltered top 4: the control emits them, the filtered search never
    does, and equals (items and scores) the unfiltered exhaustive ranking without them; the HF
    processor agrees with sid_beam_search."""
    sid_map, model, tok, trie, ids, mask = tiny
    stop, n = tok.eos_token_id, len(sid_map)
    full = sid_beam_search(model, ids, mask, trie, num_beams=n, stop_token_id=stop)
    top4 = full.items[:, :4].tolist()
    control = sid_beam_search(model, ids, mask, trie, num_beams=6, stop_token_id=stop)
    assert all(set(c[:4]) & set(t) for c, t in zip(control.items.tolist(), top4, strict=True))
    filt = ItemFilter.from_items(trie, exclude=top4)
    got = sid_beam_search(model, ids, mask, trie, num_beams=6, stop_token_id=stop, item_filter=filt)
    exhaustive = sid_beam_search(
        model, ids, mask, trie, num_beams=n, stop_token_id=stop, item_filter=filt
    )
    for b in range(len(PROMPTS)):
        items = got.items[b].tolist()
        assert not set(items) & set(top4[b])
        assert exhaustive.items[b, : n - 4].tolist() == full.items[b, 4:].tolist()
        assert exhaustive.items[b, n - 4 :].tolist() == [-1] * 4  # dead: only n - 4 items left
        torch.testing.assert_close(exhaustive.scores[b, : n - 4], full.scores[b, 4:])
    hf = _hf_items(model, ids, mask, trie, stop, 6, filt)
    for b in range(len(PROMPTS)):
        assert [i for i, _ in hf[b]] == got.items[b].tolist()
        torch.testing.assert_close(
            torch.tensor([s for _, s in hf[b]]), got.scores[b], rtol=1e-4, atol=1e-4
        )
    hf_control = _hf_items(model, ids, mask, trie, stop, 6, None)
    assert any(set(i for i, _ in hf_control[b]) & set(top4[b]) for b in range(len(PROMPTS)))


def test_allow_list_keeps_beam_search_inside_it(tiny):
    _, model, tok, trie, ids, mask = tiny
    stop = tok.eos_token_id
    allow = [[1, 5, 9, 13, 17], [0, 2], None]
    filt = ItemFilter.from_items(trie, allow=allow, exclude=[[5], None, [0, 1, 2]])
    got = sid_beam_search(model, ids, mask, trie, num_beams=6, stop_token_id=stop, item_filter=filt)
    assert sorted(got.items[0, :4].tolist()) == [1, 9, 13, 17]
    assert got.items[0, 4:].tolist() == [-1, -1]
    assert sorted(got.items[1, :2].tolist()) == [0, 2]
    assert not {0, 1, 2} & set(got.items[2].tolist())
    assert (got.items[2] >= 0).all()
