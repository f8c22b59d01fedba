"""recllm.decode.trie: trie tables, span state and masks, exact and against a brute-force oracle."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recllm.decode import (
    SIDLogitsProcessor,
    SIDTrie,
    allowed_token_mask,
    constrain_scores,
    sid_constraint,
    span_state,
    tails_of,
)
from recllm.sid.sidmap import SIDMap
from recllm.vocab.format import SIDTokenIds
from tests.decode.helpers import brute_allowed, code_sets

SIZES = (3, 3, 4)
CODES = [(0, 1, 2), (1, 0, 2), (0, 2, 1), (2, 2, 3), (1, 1, 0), (0, 1, 3)]
IDS = SIDTokenIds(100, SIZES)  # begin 100, end 101, level 0: 102-104, 1: 105-107, 2: 108-111
B, E = IDS.begin_id, IDS.end_id
VOCAB = 120
STOP = 2


def tok(level: int, code: int) -> int:
    return IDS.code_id(level, code)


def test_tables_hand_computed():
    trie = SIDTrie.from_codes(CODES, SIZES, IDS)
    # depth 1: (0) (1) (2); depth 2: (0,1) (0,2) (1,0) (1,1) (2,2); depth 3: the six leaves.
    assert trie.level_starts == (0, 1, 4, 9, 15)
    assert (trie.num_nodes, trie.num_internal, trie.num_items) == (15, 9, 6)
    assert trie.allowed.tolist() == [
        [True, True, True, False],  # root
        [False, True, True, False],  # (0)
        [True, True, False, False],  # (1)
        [False, False, True, False],  # (2)
        [False, False, True, True],  # (0,1)
        [False, True, False, False],  # (0,2)
        [False, False, True, False],  # (1,0)
        [True, False, False, False],  # (1,1)
        [False, False, False, True],  # (2,2)
    ]
    # Leaves in code order: (0,1,2) (0,1,3) (0,2,1) (1,0,2) (1,1,0) (2,2,3) -> input rows.
    assert trie.leaf_item.tolist() == [0, 5, 2, 1, 4, 3]
    assert trie.child(
        torch.tensor([0, 0, 1, 4, 4, 3]), torch.tensor([2, 3, 1, 3, 0, 2])
    ).tolist() == [
        3,
        -1,
        4,
        10,
        -1,
        8,
    ]
    queries = torch.tensor([*CODES, (2, 2, 2), (0, 0, 0)])
    assert trie.item_index(queries).tolist() == [0, 1, 2, 3, 4, 5, -1, -1]


def test_from_sid_map_keeps_item_ids_and_checks_layout():
    sid_map = SIDMap([f"i{k}" for k in range(len(CODES))], np.array(CODES), SIZES)
    trie = SIDTrie.from_sid_map(sid_map, IDS)
    row = int(trie.item_index(torch.tensor([[2, 2, 3]]))[0])
    assert trie.item_id(row) == "i3"
    with pytest.raises(ValueError, match="codebook sizes"):
        SIDTrie.from_sid_map(sid_map, SIDTokenIds(100, (3, 3, 5)))


@pytest.mark.parametrize(
    ("codes", "match"),
    [
        ([(0, 1, 2), (0, 1, 2)], "duplicate SID"),
        ([(0, 3, 0)], "outside"),
        ([(0, 1)], "shape"),
        ([], "shape"),
    ],
)
def test_from_codes_rejects(codes, match):
    with pytest.raises(ValueError, match=match):
        SIDTrie.from_codes(codes, SIZES, IDS)


def test_span_state_and_constraint_hand_computed():
    trie = SIDTrie.from_codes(CODES, SIZES, IDS)
    tails = torch.tensor(
        [
            [5, 6, 7, B],  # just opened
            [6, 7, B, tok(0, 0)],  # depth 1 at (0)
            [7, B, tok(0, 0), tok(1, 1)],  # depth 2 at (0,1)
            [B, tok(0, 0), tok(1, 1), tok(2, 3)],  # complete: end forced
            [tok(0, 0), tok(1, 1), tok(2, 3), E],  # closed
            [1, 2, 3, 4],  # free text
            [-1, -1, -1, B],  # short sequence
            [E, STOP, 0, 0],  # padding after a finished answer
        ]
    )
    state = span_state(tails, trie)
    assert state.in_span.tolist() == [True, True, True, True, False, False, True, False]
    assert state.depth.tolist() == [0, 1, 2, 3, 0, 0, 0, 0]
    assert state.node.tolist() == [0, 1, 4, 10, 0, 0, 0, 0]
    assert not state.off_trie.any()

    def allowed(**kwargs) -> list[list[int]]:
        mask = allowed_token_mask(sid_constraint(tails, trie, **kwargs), trie, VOCAB)
        return [row.nonzero().flatten().tolist() for row in mask]

    everything = list(range(VOCAB))
    assert allowed() == [
        [102, 103, 104],
        [106, 107],
        [110, 111],
        [E],
        everything,
        everything,
        [102, 103, 104],
        everything,
    ]
    assert allowed(sid_only=True, stop_token_id=STOP) == [
        [102, 103, 104],
        [106, 107],
        [110, 111],
        [E],
        [STOP],
        [B],
        [102, 103, 104],
        [B],
    ]


def test_constrain_scores_keeps_allowed_values_and_frees_free_rows():
    trie = SIDTrie.from_codes(CODES, SIZES, IDS)
    tails = torch.tensor([[6, 7, B, tok(0, 0)], [1, 2, 3, 4], [tok(0, 0), tok(1, 1), tok(2, 3), E]])
    scores = torch.randn(3, VOCAB, generator=torch.Generator().manual_seed(0))
    constraint = sid_constraint(tails, trie, sid_only=False)
    out = constrain_scores(scores, constraint, trie)
    mask = allowed_token_mask(constraint, trie, VOCAB)
    assert torch.equal(torch.isfinite(out), mask)
    assert torch.equal(out[mask], scores[mask])
    assert torch.equal(out[1], scores[1])  # free text untouched
    assert torch.equal(scores, torch.randn(3, VOCAB, generator=torch.Generator().manual_seed(0)))


def test_off_trie_span_raises_or_masks_everything():
    trie = SIDTrie.from_codes(CODES, SIZES, IDS)
    cases = [
        [7, B, tok(0, 2), tok(1, 0)],  # (2, 0) is no prefix
        [7, 8, B, tok(1, 0)],  # level-1 token at level 0
        [7, 8, B, 9],  # plain text inside a span
    ]
    for tails in cases:
        t = torch.tensor([tails])
        with pytest.raises(ValueError, match="not a prefix of any catalog SID"):
            sid_constraint(t, trie)
        constraint = sid_constraint(t, trie, check=False)
        assert not allowed_token_mask(constraint, trie, VOCAB).any()
    with pytest.raises(ValueError, match="stop_token_id"):
        sid_constraint(torch.tensor([[1, 2, 3, 4]]), trie, sid_only=True)


def test_tails_of_pads_short_sequences():
    ids = torch.tensor([[5, 6], [7, 8]])
    assert tails_of(ids, 4).tolist() == [[-1, -1, 5, 6], [-1, -1, 7, 8]]
    assert tails_of(torch.arange(6).view(1, 6), 3).tolist() == [[3, 4, 5]]


def test_trie_to_device_is_noop_on_same_device():
    trie = SIDTrie.from_codes(CODES, SIZES, IDS)
    assert trie.to("cpu") is trie
    assert trie.to(torch.device("cpu")).device.type == "cpu"


# -- property tests: processor masks == brute force -------------------------------------------


def _reachable_sequences(
    rng: np.random.Generator,
    codes: list[tuple[int, ...]],
    ids: SIDTokenIds,
    vocab_free: int,
    pad: int,
    count: int,
    *,
    sid_only: bool,
    stop: int,
) -> list[list[int]]:
    """Token sequences the constraint can produce: free text (with whole SIDs in it), open spans
    at every depth, finished answers, left padding, and sequences shorter than the window."""
    levels = ids.levels
    out = []
    for _ in range(count):
        kind = rng.integers(0, 5)
        seq = [pad] * int(rng.integers(0, 3)) + [
            int(t) for t in rng.integers(3, vocab_free, int(rng.integers(0, 4)))
        ]
        if kind == 0 and not sid_only:  # free text with a whole SID inside
            code = codes[rng.integers(len(codes))]
            seq += ids.encode(code) + [int(t) for t in rng.integers(3, vocab_free, 2)]
        elif kind in (1, 2):  # open span at a random depth
            code = codes[rng.integers(len(codes))]
            depth = int(rng.integers(0, levels + 1))
            seq += ids.encode(code)[: 1 + depth]
        elif kind == 3:  # finished answer (+ stop token, + padding)
            code = codes[rng.integers(len(codes))]
            seq += ids.encode(code)
            if rng.random() < 0.5:
                seq += [stop] + [pad] * int(rng.integers(0, 2))
        elif kind == 4 and rng.random() < 0.5:  # text that ends in the stop token
            seq += [stop]
        out.append(seq if seq else [pad])
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=code_sets(), sid_only=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_processor_mask_matches_brute_force(data, sid_only, seed):
    sizes, codes = data
    vocab_free = 40  # token ids 0..39 are "text"; SID tokens follow
    ids = SIDTokenIds(vocab_free, sizes)
    vocab = ids.last_id + 1 + 5  # a few rows past the SID block, like padded embeddings
    pad, stop = 0, 1
    trie = SIDTrie.from_codes(codes, sizes, ids)
    rng = np.random.default_rng(seed)
    seqs = _reachable_sequences(rng, codes, ids, vocab_free, pad, 24, sid_only=sid_only, stop=stop)
    width = max(len(s) for s in seqs)
    batch = torch.tensor([[pad] * (width - len(s)) + s for s in seqs])  # left padded
    scores = torch.randn(len(seqs), vocab, generator=torch.Generator().manual_seed(seed % 1000))
    proc = SIDLogitsProcessor(trie, sid_only=sid_only, stop_token_id=stop)
    out = proc(batch, scores)
    inplace = SIDLogitsProcessor(trie, sid_only=sid_only, stop_token_id=stop, inplace=True)
    written = scores.clone()
    assert inplace(batch, written) is written
    assert torch.equal(written, out)
    for row, seq in enumerate(seqs):
        padded = [pad] * (width - len(seq)) + seq
        expected = brute_allowed(padded, codes, ids, vocab, sid_only=sid_only, stop_token_id=stop)
        got = set(torch.isfinite(out[row]).nonzero().flatten().tolist())
        assert got == expected, (padded, sorted(got), sorted(expected))
        assert torch.equal(
            out[row][torch.isfinite(out[row])], scores[row][torch.isfinite(out[row])]
        )


@settings(max_examples=100, deadline=None)
@given(data=code_sets())
def test_walk_finds_every_item_and_only_items(data):
    sizes, codes = data
    trie = SIDTrie.from_codes(codes, sizes)
    assert trie.item_index(torch.tensor(codes)).tolist() == list(range(len(codes)))
    # Allowed children per node == distinct next codes, counted by brute force.
    prefixes = {c[:d] for c in codes for d in range(len(sizes))}
    assert trie.num_internal == len(prefixes)
    assert int(trie.allowed.sum()) == trie.num_nodes - 1
    rng = np.random.default_rng(len(codes))
    other = {tuple(int(rng.integers(k)) for k in sizes) for _ in range(50)} - set(codes)
    if other:
        assert (trie.item_index(torch.tensor(sorted(other))) == -1).all()
