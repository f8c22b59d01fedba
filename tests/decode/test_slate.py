"""Slate decoding on tiny random Qwen3 models: every slate is ``n`` distinct catalog items, beam
search over slates equals brute-force scoring of every ordered slate, and the control without
the slate exclusion repeats items."""

from __future__ import annotations

import itertools

import pytest
import torch

from recllm.decode import SIDTrie
from recllm.decode.filters import ItemFilter
from recllm.decode.slate import slate_search
from tests.decode.test_decode import PROMPTS, extended_model, left_padded, random_sid_map

pytestmark = pytest.mark.usefixtures("torch_single_thread")


@pytest.fixture(scope="module")
def tiny():
    """6 items; the sharpened model (distinct scores) and an unsharpened one (for sampling)."""
    sid_map = random_sid_map((2, 3, 2), 6, seed=1)
    model, tok, token_ids = extended_model(sid_map, seed=3)
    flat, _, _ = extended_model(sid_map, seed=3, sharpen=False)
    trie = SIDTrie.from_sid_map(sid_map, token_ids)
    ids, mask = left_padded(tok, PROMPTS)
    return sid_map, model.eval(), flat.eval(), tok, trie, ids, mask


def _answer(trie, codes, slate, stop):
    """Token ids of a slate answer and the positions (in it) of the scored tokens."""
    ids = trie.token_ids
    tokens, scored = [ids.begin_id], [0] if stop is not None else []
    for item in slate:
        for level, code in enumerate(codes[item]):
            scored.append(len(tokens))
            tokens.append(int(trie.code_token_start[level]) + code)
        if stop is not None:
            scored.append(len(tokens))
        tokens.append(ids.end_id)
        if stop is not None and item is not slate[-1]:
            scored.append(len(tokens))
        tokens.append(ids.begin_id)
    tokens.pop()  # no begin marker after the last SID: the stop token (scored) or nothing
    if stop is not None:
        scored.append(len(tokens))
        tokens.append(stop)
    return tokens, scored


def brute_scores(model, tok, trie, codes, n, stop):
    """Per prompt: {ordered slate: joint log-prob}, by teacher forcing every answer unpadded
    (``model`` may be a list: an ensemble, its log-probs averaged token by token)."""
    models = model if isinstance(model, list) else [model]
    out = []
    for prompt in PROMPTS:
        text = tok.apply_chat_template([*prompt], tokenize=False, add_generation_prompt=True)
        prefix = tok(text, add_special_tokens=False)["input_ids"]
        slates = list(itertools.permutations(range(trie.num_items), n))
        seqs, scored = [], []
        for slate in slates:
            answer, pos = _answer(trie, codes, list(slate), stop)
            seqs.append(prefix + answer)
            scored.append([len(prefix) + p for p in pos])
        with torch.no_grad():
            logp = sum(
                torch.log_softmax(m(torch.tensor(seqs)).logits.float(), -1) for m in models
            ) / len(models)
        row = {}
        for b, slate in enumerate(slates):
            row[slate] = sum(float(logp[b, p - 1, seqs[b][p]]) for p in scored[b])
        out.append(row)
    return out


@pytest.mark.parametrize(("n", "stop"), [(2, True), (3, True), (3, False)])
def test_beam_over_slates_equals_brute_force(tiny, n, stop):
    """A width that holds every partial slate is exhaustive: the ranked slates and their joint
    log-probs equal teacher-forced scoring of all 6!/(6-n)! ordered slates, best first. A narrow
    beam scores its slates exactly too (it may miss the best: beam search is not exhaustive)."""
    sid_map, model, _, tok, trie, ids, mask = tiny
    stop_id = tok.eos_token_id if stop else None
    codes = [[int(c) for c in row] for row in sid_map.codes]
    brute = brute_scores(model, tok, trie, codes, n, stop_id)
    total = len(brute[0])
    got = slate_search(model, ids, mask, trie, n=n, num_beams=total, stop_token_id=stop_id)
    narrow = slate_search(model, ids, mask, trie, n=n, num_beams=4, stop_token_id=stop_id)
    for b, row in enumerate(brute):
        slates = [tuple(s) for s in got.items[b].tolist()]
        assert sorted(slates) == sorted(row)  # every ordered slate once
        want = torch.tensor([row[s] for s in slates])
        torch.testing.assert_close(got.scores[b], want, rtol=0, atol=2e-3)
        torch.testing.assert_close(got.item_scores[b].sum(-1), got.scores[b], rtol=0, atol=1e-3)
        best = max(row, key=row.get)
        assert slates[0] == best
        for slate, score in zip(narrow.items[b].tolist(), narrow.scores[b].tolist(), strict=True):
            assert score == pytest.approx(row[tuple(slate)], abs=2e-3) and score <= row[best] + 1e-3


def test_slates_are_distinct_catalog_items_and_the_control_repeats(tiny):
    """Every n up to the whole catalog, every mode, many seeds: n distinct items. Without the
    exclusion (distinct=False) greedy slates repeat an item."""
    _, model, flat, tok, trie, ids, mask = tiny
    stop = tok.eos_token_id
    for n in range(1, trie.num_items + 1):
        runs = [
            slate_search(model, ids, mask, trie, n=n, mode="greedy", stop_token_id=stop),
            slate_search(model, ids, mask, trie, n=n, num_beams=5, stop_token_id=stop),
        ]
        runs += [
            slate_search(flat, ids, mask, trie, n=n, mode="sample", num_beams=4, seed=seed)
            for seed in range(8)
        ]
        for out in runs:
            assert out.items.shape[-1] == n
            for slate in out.items.reshape(-1, n).tolist():
                assert len(set(slate)) == n and min(slate) >= 0 and max(slate) < trie.num_items
    control = slate_search(
        model, ids, mask, trie, n=3, mode="greedy", stop_token_id=stop, distinct=False
    )
    assert any(len(set(s)) < 3 for s in control.items[:, 0].tolist())
    sampled = slate_search(
        flat, ids, mask, trie, n=3, mode="sample", num_beams=8, seed=0, distinct=False
    )
    assert any(len(set(s)) < 3 for s in sampled.items.reshape(-1, 3).tolist())


def test_sampling_is_seeded_and_varies(tiny):
    _, _, flat, _, trie, ids, mask = tiny
    a = slate_search(flat, ids, mask, trie, n=3, mode="sample", num_beams=8, seed=1)
    b = slate_search(flat, ids, mask, trie, n=3, mode="sample", num_beams=8, seed=1)
    c = slate_search(flat, ids, mask, trie, n=3, mode="sample", num_beams=8, seed=2)
    assert torch.equal(a.items, b.items) and torch.equal(a.scores, b.scores)
    assert not torch.equal(a.items, c.items)
    assert len({tuple(s) for s in a.items.reshape(-1, 3).tolist()}) > 1
    assert bool((a.scores[:, :-1] >= a.scores[:, 1:]).all())  # best first


def test_item_filter_holds_across_the_slate(tiny):
    """The caller's filter and the slate exclusion act together: excluded items never appear; an
    allow-list of three gives a permutation of it; a slate longer than the free items is
    refused."""
    _, model, _, tok, trie, ids, mask = tiny
    stop = tok.eos_token_id
    filt = ItemFilter.from_items(trie, exclude=[[0, 1], None, [5]], allow=[None, [2, 3, 4], None])
    out = slate_search(
        model, ids, mask, trie, n=3, num_beams=6, stop_token_id=stop, item_filter=filt
    )
    for slate in out.items[0].tolist():
        assert not {0, 1} & set(slate) and len(set(slate)) == 3
    assert {tuple(sorted(s)) for s in out.items[1].tolist()} == {(2, 3, 4)}
    assert all(5 not in s for s in out.items[2].tolist())
    # six permutations of the allowed three, each once, and no more
    assert len({tuple(s) for s in out.items[1].tolist()}) == 6
    with pytest.raises(ValueError, match="prompt 1: its filter leaves 3 items"):
        slate_search(model, ids, mask, trie, n=4, item_filter=filt)
    with pytest.raises(ValueError, match="catalog of 6"):
        slate_search(model, ids, mask, trie, n=7)


def test_ensemble_slates_equal_brute_force(tiny):
    """Two models share one vocabulary: the exhaustive slate search scores with the mean of
    their log-probs, as sid_beam_search's ensembles do."""
    sid_map, model, flat, tok, trie, ids, mask = tiny
    codes = [[int(c) for c in row] for row in sid_map.codes]
    brute = brute_scores([model, flat], tok, trie, codes, 2, tok.eos_token_id)
    got = slate_search(
        [model, flat], ids, mask, trie, n=2, num_beams=30, stop_token_id=tok.eos_token_id
    )
    for b, row in enumerate(brute):
        slates = [tuple(s) for s in got.items[b].tolist()]
        assert sorted(slates) == sorted(row)
        want = torch.tensor([row[s] for s in slates])
        torch.testing.assert_close(got.scores[b], want, rtol=0, atol=2e-3)


def test_spread_slates_open_distinct_first_codes_exhaustively(tiny):
    """``spread=True``: every item of a slate has its own first code; the full-width beam equals
    brute force over exactly the slates whose first codes differ. The control (no spread) puts
    two items of one first code in a slate; too few first codes for n is refused."""
    sid_map, model, _, tok, trie, ids, mask = tiny
    stop = tok.eos_token_id
    codes = [[int(c) for c in row] for row in sid_map.codes]
    brute = brute_scores(model, tok, trie, codes, 2, stop)
    spread_ok = [s for s in brute[0] if codes[s[0]][0] != codes[s[1]][0]]
    got = slate_search(model, ids, mask, trie, n=2, num_beams=30, stop_token_id=stop, spread=True)
    for b, row in enumerate(brute):
        slates = [tuple(s) for s in got.items[b].tolist() if min(s) >= 0]
        assert sorted(slates) == sorted(spread_ok)
        want = torch.tensor([row[s] for s in slates])
        live = torch.isfinite(got.scores[b])
        torch.testing.assert_close(got.scores[b][live], want, rtol=0, atol=2e-3)
    plain = slate_search(model, ids, mask, trie, n=2, num_beams=30, stop_token_id=stop)
    assert any(codes[a][0] == codes[c][0] for a, c in plain.items[0].tolist())  # control
    with pytest.raises(ValueError, match="first SID codes"):
        slate_search(model, ids, mask, trie, n=3, num_beams=4, spread=True)


def _shared_first(codes, slate):
    """Items of ``slate`` whose first code an earlier item of it already has."""
    return sum(codes[j][0] == codes[i][0] for b, j in enumerate(slate) for i in slate[:b])


@pytest.mark.parametrize("n", [2, 3])
def test_diversity_penalty_ranks_exhaustively_by_log_prob_minus_the_penalties(tiny, n):
    """``diversity_penalty d``: a full-width beam returns every slate once, ordered by brute-force
    log-prob minus d per item sharing an earlier item's first code, with the scores still the
    plain log-probs. The control: d = 0 is the plain search, slate for slate, and its order
    differs from the penalised one."""
    sid_map, model, _, tok, trie, ids, mask = tiny
    stop = tok.eos_token_id
    codes = [[int(c) for c in row] for row in sid_map.codes]
    brute = brute_scores(model, tok, trie, codes, n, stop)
    total = len(brute[0])
    plain = slate_search(model, ids, mask, trie, n=n, num_beams=total, stop_token_id=stop)
    zero = slate_search(
        model, ids, mask, trie, n=n, num_beams=total, stop_token_id=stop, diversity_penalty=0.0
    )
    assert torch.equal(plain.items, zero.items) and torch.equal(plain.scores, zero.scores)
    changed = False
    for d in (0.5, 3.0):
        got = slate_search(
            model, ids, mask, trie, n=n, num_beams=total, stop_token_id=stop, diversity_penalty=d
        )
        for b, row in enumerate(brute):
            slates = [tuple(s) for s in got.items[b].tolist()]
            assert sorted(slates) == sorted(row)
            torch.testing.assert_close(
                got.scores[b], torch.tensor([row[s] for s in slates]), rtol=0, atol=2e-3
            )
            ranked = [row[s] - d * _shared_first(codes, s) for s in slates]
            assert all(a >= c - 2e-3 for a, c in itertools.pairwise(ranked))  # best first
            best = max(row, key=lambda s: row[s] - d * _shared_first(codes, s))
            assert slates[0] == best
            changed |= slates != [tuple(x) for x in plain.items[b].tolist()]
    assert changed  # the penalty reordered some prompt's slates


def test_a_large_diversity_penalty_gives_the_spread_slates_and_sampling_obeys_it(tiny):
    """A penalty far above any log-prob gap: the best slate is spread's (every first code its
    own) for every prompt, in beam and greedy mode; sampled slates never share a first code,
    where the control (no penalty) samples some that do."""
    sid_map, model, flat, tok, trie, ids, mask = tiny
    stop = tok.eos_token_id
    codes = [[int(c) for c in row] for row in sid_map.codes]
    spread = slate_search(
        model, ids, mask, trie, n=2, num_beams=30, stop_token_id=stop, spread=True
    )
    soft = slate_search(
        model, ids, mask, trie, n=2, num_beams=30, stop_token_id=stop, diversity_penalty=1e4
    )
    assert torch.equal(soft.items[:, 0], spread.items[:, 0])
    greedy = slate_search(
        model, ids, mask, trie, n=2, mode="greedy", stop_token_id=stop, diversity_penalty=1e4
    )
    assert all(_shared_first(codes, s) == 0 for s in greedy.items[:, 0].tolist())
    drawn = {"penalty": [], "control": []}
    for seed in range(6):
        for name, d in (("penalty", 1e4), ("control", 0.0)):
            out = slate_search(
                flat, ids, mask, trie, n=2, mode="sample", num_beams=8, seed=seed,
                diversity_penalty=d,
            )  # fmt: skip
            drawn[name] += out.items.reshape(-1, 2).tolist()
    assert all(_shared_first(codes, s) == 0 for s in drawn["penalty"])
    assert any(_shared_first(codes, s) > 0 for s in drawn["control"])
    with pytest.raises(ValueError, match="diversity_penalty"):
        slate_search(model, ids, mask, trie, n=2, diversity_penalty=-1.0)
