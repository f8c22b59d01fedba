"""recllm.decode.fresh: the new items' beam group and score bonus in ``sid_beam_search``.

The new items are the ones a tiny model ranks lowest, as for items it never trained on. Checked:
the shared-prefill search equals the merge of two separate searches (the trained items' alone
through an exclude filter, the new items' alone through an allow-list), exhaustively scored; a
plain search of the same width (the control) returns none of the new items, the fresh group with
a bonus does. With the new items the model likes best and a large negative bonus, the result is
exactly the stale model's (the new items take no beam from the trained ones), where a plain
search over the whole catalog (the control) loses trained items to them.
"""

from __future__ import annotations

import pytest
import torch

from recllm.decode import SIDTrie, sid_beam_search
from recllm.decode.filters import ItemFilter
from recllm.decode.fresh import FreshItems, merge_groups
from recllm.errors import UserError
from tests.decode.test_decode import PROMPTS, extended_model, left_padded, random_sid_map

pytestmark = pytest.mark.usefixtures("torch_single_thread")


@pytest.fixture(scope="module")
def tiny():
    sid_map = random_sid_map((4, 4, 4), 24, seed=7)
    model, tok, token_ids = extended_model(sid_map, seed=5)
    trie = SIDTrie.from_sid_map(sid_map, token_ids)
    ids, mask = left_padded(tok, PROMPTS)
    # the 5 items with the worst summed rank over the prompts: the "new" ones
    new = _summed_rank(model, ids, mask, trie, None).argsort(descending=True)[:5].tolist()
    return sid_map, model, tok, trie, ids, mask, new


def _summed_rank(model, ids, mask, trie, stop):
    """Per item, its rank summed over the prompts in an exhaustive search."""
    full = sid_beam_search(model, ids, mask, trie, num_beams=trie.num_items, stop_token_id=stop)
    rank = torch.zeros(trie.num_items)
    for row in full.items.tolist():
        for r, item in enumerate(row):
            rank[item] += r
    return rank


def _merged(model, ids, mask, trie, new, bonus, beams, k, stop):
    """The reference: two separate searches, bonus on the new items, best k distinct."""
    trained = ItemFilter.from_items(trie, exclude=[new] * ids.shape[0])
    a = sid_beam_search(
        model, ids, mask, trie, num_beams=beams, stop_token_id=stop, item_filter=trained
    )
    only_new = ItemFilter.from_items(trie, allow=[new] * ids.shape[0])
    b = sid_beam_search(
        model, ids, mask, trie, num_beams=beams, stop_token_id=stop, item_filter=only_new
    )
    out = []
    for p in range(ids.shape[0]):
        cand = {}
        for res in (a, b):
            for item, score in zip(res.items[p].tolist(), res.scores[p].tolist(), strict=True):
                if item >= 0:
                    cand[item] = score + (bonus if item in new else 0.0)
        out.append(sorted(cand.items(), key=lambda kv: -kv[1])[:k])
    return out


@pytest.mark.parametrize("stop", [None, "eos"])
@pytest.mark.parametrize("bonus", [0.0, 0.4, 50.0])
def test_fresh_group_equals_two_searches_merged(tiny, stop, bonus):
    sid_map, model, tok, trie, ids, mask, new = tiny
    stop_id = None if stop is None else tok.eos_token_id
    fresh = FreshItems.from_rows(trie, new, bonus=bonus)
    got = sid_beam_search(
        model,
        ids,
        mask,
        trie,
        num_beams=3,
        num_return_sequences=3,
        stop_token_id=stop_id,
        fresh=fresh,
    )
    want = _merged(model, ids, mask, trie, new, bonus, 3, 3, stop_id)
    for p in range(len(PROMPTS)):
        assert got.items[p].tolist() == [i for i, _ in want[p]]
        torch.testing.assert_close(
            got.scores[p], torch.tensor([s for _, s in want[p]]), rtol=1e-5, atol=1e-5
        )
        codes = [tuple(c) for c in got.codes[p].tolist()]
        assert codes == [tuple(sid_map.codes[i].tolist()) for i in got.items[p].tolist()]


def test_the_control_misses_the_new_items_and_the_bonus_brings_them(tiny):
    _, model, tok, trie, ids, mask, new = tiny
    stop = tok.eos_token_id
    plain = sid_beam_search(model, ids, mask, trie, num_beams=3, stop_token_id=stop)
    assert not set(plain.items.flatten().tolist()) & set(new)  # control: none of them
    low = sid_beam_search(
        model,
        ids,
        mask,
        trie,
        num_beams=3,
        stop_token_id=stop,
        fresh=FreshItems.from_rows(trie, new, bonus=0.0),
    )
    assert torch.equal(low.items, plain.items)  # no bonus: they rank below the trained items
    high = sid_beam_search(
        model,
        ids,
        mask,
        trie,
        num_beams=3,
        stop_token_id=stop,
        fresh=FreshItems.from_rows(trie, new, bonus=50.0),
    )
    # a large bonus: the new items' own best three, in the model's order
    only_new = ItemFilter.from_items(trie, allow=[new] * len(PROMPTS))
    alone = sid_beam_search(
        model, ids, mask, trie, num_beams=3, stop_token_id=stop, item_filter=only_new
    )
    assert torch.equal(high.items, alone.items)
    torch.testing.assert_close(high.scores, alone.scores + 50.0)


def test_new_items_take_no_beam_from_the_trained_ones(tiny):
    _, model, tok, trie, ids, mask, _ = tiny
    stop = tok.eos_token_id
    # the 5 items the model ranks best: now the "new" ones
    liked = _summed_rank(model, ids, mask, trie, stop).argsort()[:5].tolist()
    stale = sid_beam_search(
        model,
        ids,
        mask,
        trie,
        num_beams=3,
        stop_token_id=stop,
        item_filter=ItemFilter.from_items(trie, exclude=[liked] * len(PROMPTS)),
    )
    got = sid_beam_search(
        model,
        ids,
        mask,
        trie,
        num_beams=3,
        stop_token_id=stop,
        fresh=FreshItems.from_rows(trie, liked, bonus=-50.0),
    )
    assert torch.equal(got.items, stale.items)
    torch.testing.assert_close(got.scores, stale.scores)
    # the control: a search over the whole catalog gives beams to the new items, and what is
    # left of the trained items is not the stale model's list
    plain = sid_beam_search(model, ids, mask, trie, num_beams=3, stop_token_id=stop)
    assert set(plain.items.flatten().tolist()) & set(liked)
    kept = [[i for i in row if i not in liked] for row in plain.items.tolist()]
    assert kept != stale.items.tolist()


def test_merge_groups_keeps_each_item_once():
    items = torch.tensor([[3, 1, -1, 1, 2]])
    codes = items[..., None].repeat(1, 1, 2)
    scores = torch.tensor([[0.1, 0.9, float("-inf"), 0.5, 0.3]])
    i, c, s = merge_groups(items, codes, scores, 4)
    assert i.tolist() == [[1, 2, 3, -1]]
    assert c[0, :3, 0].tolist() == [1, 2, 3]
    assert s[0, :3].tolist() == pytest.approx([0.9, 0.3, 0.1]) and s[0, 3] == float("-inf")


def test_fresh_items_refuse_bad_input(tiny):
    _, _, _, trie, _, _, _ = tiny
    with pytest.raises(ValueError, match="at least one"):
        FreshItems.from_rows(trie, [])
    with pytest.raises(ValueError, match="must lie in"):
        FreshItems.from_rows(trie, [10_000])
    with pytest.raises(ValueError, match="finite"):
        FreshItems.from_rows(trie, [0], bonus=float("nan"))
    with pytest.raises(UserError, match="not in the model's catalog"):
        FreshItems.from_ids(trie, ["no-such-item"])


def _text_items(**kw):
    from recllm.decode.fresh import TextNewItems

    vecs = {
        "a": [1.0, 0.0, 0.0],
        "b": [0.0, 1.0, 0.0],
        "c": [0.0, 0.0, 1.0],
        "n1": [1.0, 0.2, 0.0],  # new, near a
        "n2": [0.2, 1.0, 0.0],  # new, near b
    }
    x = torch.nn.functional.normalize(torch.tensor(list(vecs.values())), dim=-1)
    return TextNewItems(("n1", "n2"), tuple(vecs), x, kw.pop("alpha", 2.0), 0.5, **kw)


def test_text_new_items_guide_follows_the_search():
    """guide 1: the user vector is the search's best trained items', so the new item near
    them leads; the control (guide 0) ranks by the history alone."""
    found = [[("b", -0.1), ("c", -2.0)]]
    plain = _text_items().candidates([["a"]], 2, found=found)[0]
    assert [i for i, _ in plain] == ["n1", "n2"]
    guided = _text_items(guide=1.0, guide_top=1).candidates([["a"]], 2, found=found)[0]
    assert [i for i, _ in guided] == ["n2", "n1"]
    cos = torch.nn.functional.normalize(torch.tensor([0.2, 1.0, 0.0]), dim=0)[1]
    assert guided[0][1] == pytest.approx(2.0 * float(cos) + 0.5)  # user = b exactly
    # half and half: the blend of a and b, where the two new items tie
    half = _text_items(guide=0.5, guide_top=1).candidates([["a"]], 2, found=found)[0]
    assert half[0][1] == pytest.approx(half[1][1], abs=1e-6)
    with pytest.raises(ValueError, match="found lists"):
        _text_items(guide=0.5).candidates([["a"], ["b"]], 2, found=found)


def test_text_new_items_norm_top_subtracts_the_users_nearest():
    """norm_top m: the cosine minus the mean of the user's m nearest catalog items."""
    t = _text_items(norm_top=2)
    user = torch.tensor([[1.0, 0.0, 0.0]])
    sims = user @ t.vectors.T  # a: 1, n1: .98, n2: .196, b = c: 0
    base = float(sims[0].topk(2).values.mean())
    assert base == pytest.approx((1 + float(sims[0, 3])) / 2)
    got = t.scores(user)[0]
    assert got.tolist() == pytest.approx([2.0 * (float(sims[0, i]) - base) + 0.5 for i in (3, 4)])
    # control: without the base the scores are the raw cosines'
    raw = _text_items().scores(user)[0]
    assert raw.tolist() == pytest.approx([2.0 * float(sims[0, i]) + 0.5 for i in (3, 4)])
    with pytest.raises(UserError, match="norm-top"):
        _text_items(norm_top=6)
    with pytest.raises(UserError, match="guide"):
        _text_items(guide=1.5)


def test_text_new_items_max_new_caps_each_list():
    """max_new 1: one new item per history, its best; the control (no cap) gives both."""
    capped = _text_items(max_new=1).candidates([["a"], ["b"]], 5)
    assert [[i for i, _ in c] for c in capped] == [["n1"], ["n2"]]
    plain = _text_items().candidates([["a"], ["b"]], 5)
    assert [[i for i, _ in c] for c in plain] == [["n1", "n2"], ["n2", "n1"]]
    assert [c[:1] for c in plain] == capped  # the same best item, the same score
    with pytest.raises(UserError, match="max-new"):
        _text_items(max_new=-1)
