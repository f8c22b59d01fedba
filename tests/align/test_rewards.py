"""Rewards (recllm.align.rewards): SIDs read from token ids, values by hand, every reward tied to
its own sample under shuffling, sampling and beams (with a position-indexed control that fails),
the TRL wrapper fed empty decoded texts, and the SASRec reward model saved, loaded and scoring
what it learned."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from recllm.align.rewards import (
    ExactHit,
    Legality,
    PrefixCredit,
    RankShaped,
    RewardExample,
    Sample,
    SASRecReward,
    SIDReader,
    WeightedSum,
    trl_reward_func,
)
from recllm.baselines.sasrec import SASRecConfig, load_sasrec, save_sasrec, train_sasrec
from recllm.sid.sidmap import SIDMap
from recllm.vocab.format import SIDTokenIds
from tests.baselines.test_sasrec import ITEMS, toy_split

IDS = SIDTokenIds(first_id=1000, codebook_sizes=(4, 4, 4))
MAP = SIDMap(
    ["a", "b", "c", "d"],
    np.array([[0, 0, 0], [0, 0, 1], [0, 1, 0], [1, 2, 3]]),
    (4, 4, 4),
)
READER = SIDReader(IDS, MAP)
EXAMPLES = {
    "u1": RewardExample(("c",), "a"),
    "u2": RewardExample(("a",), "b"),
    "u3": RewardExample(("b",), "d"),
}


def chat(code, prefix=(7, 8)):
    """A chat model's answer: some text tokens, then the SID span, then end of turn."""
    return (*prefix, *IDS.encode(code), 2)


def test_reader_reads_token_ids_of_both_answer_shapes():
    assert READER.read(chat((0, 0, 1))).item == "b"
    assert READER.read(chat((0, 0, 1), prefix=())).code == (0, 0, 1)
    bare = [IDS.code_id(lv, c) for lv, c in enumerate((1, 2, 3))]
    assert READER.read([*bare, IDS.begin_id]).item == "d"  # SID-sequence decoder
    assert READER.read(chat((3, 3, 3))).code == (3, 3, 3)  # well formed, no catalog item
    assert READER.read(chat((3, 3, 3))).item is None
    swapped = [IDS.begin_id, IDS.code_id(1, 0), IDS.code_id(0, 0), IDS.code_id(2, 0), IDS.end_id]
    assert READER.read(swapped).code is None  # levels out of order
    assert READER.read(chat((0, 0, 1))[:-2]).code is None  # no end marker
    assert READER.read([5, 6, 7]).code is None
    with pytest.raises(ValueError, match="does not match the SID map"):
        SIDReader(SIDTokenIds(1000, (4, 4)), MAP)


def beams():
    """Three users' beams of 4, ranks 1-4; u1's target at rank 2, u2's at rank 1, u3's absent;
    one illegal beam."""
    rows = {
        "u1": [(0, 1, 0), (0, 0, 0), (0, 0, 1), (1, 2, 3)],
        "u2": [(0, 0, 1), (0, 0, 0), (3, 3, 3), (0, 1, 0)],
        "u3": [(1, 2, 0), (0, 0, 0), (0, 1, 0), (0, 0, 1)],
    }
    return [
        Sample(user, chat(code), rank)
        for user, codes in rows.items()
        for rank, code in enumerate(codes, start=1)
    ]


def test_values_by_hand():
    samples = beams()
    assert ExactHit().score(samples, EXAMPLES, READER) == [0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]
    assert Legality().score(samples, EXAMPLES, READER) == [1, 1, 1, 1, 1, 1, 0, 1, 0, 1, 1, 1]
    third = 1 / 3
    assert PrefixCredit().score(samples, EXAMPLES, READER) == pytest.approx(
        [third, 1, 2 * third, 0, 1, 2 * third, 0, third, 2 * third, 0, 0, 0]
    )
    g = [1 / math.log2(r + 1) for r in (1, 2, 3, 4)]
    assert RankShaped().score(samples, EXAMPLES, READER) == pytest.approx(
        [0, g[1], 0, 0, g[0], 0, 0, 0, 0, 0, 0, 0]
    )
    penalised = RankShaped(miss_penalty=0.5).score(samples, EXAMPLES, READER)
    assert penalised[:4] == pytest.approx([-0.5 * g[0], g[1], -0.5 * g[2], -0.5 * g[3]])
    mixed = WeightedSum([(ExactHit(), 1.0), (PrefixCredit(), 0.5)], illegal=-1.0)
    got = mixed.score(samples, EXAMPLES, READER)
    assert got[1] == pytest.approx(1.5) and got[0] == pytest.approx(third / 2)
    assert got[6] == -1.0  # the illegal beam, whatever its parts scored


def position_ranked_ndcg(samples, group=4):
    """The control: rank taken from the sample's position in the batch (MiniOneRec's indexing),
    not from the sample itself."""
    out = []
    for i, s in enumerate(samples):
        hit = READER.read(s.completion_ids).item == EXAMPLES[s.example_id].target
        out.append(1 / math.log2(i % group + 2) if hit else 0.0)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_reward_stays_with_its_sample_when_shuffled(seed):
    samples = beams()
    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    shuffled = [samples[i] for i in order]
    rewards = [
        ExactHit(),
        Legality(),
        PrefixCredit(),
        RankShaped(miss_penalty=0.3),
        WeightedSum([(RankShaped(), 1.0), (PrefixCredit(), 0.2)]),
    ]
    for reward in rewards:
        before = reward.score(samples, EXAMPLES, READER)
        after = reward.score(shuffled, EXAMPLES, READER)
        assert after == [before[i] for i in order], reward.name


def test_position_indexed_control_gives_rewards_to_other_samples():
    """The control: with the rank read from the batch position, reversing the batch moves the
    reward of u1's hit (beam rank 2) elsewhere, so the shuffle test above can fail."""
    samples = beams()
    reversed_ = samples[::-1]
    before, after = position_ranked_ndcg(samples), position_ranked_ndcg(reversed_)
    assert after != before[::-1]
    real = RankShaped().score(reversed_, EXAMPLES, READER)
    assert real == RankShaped().score(samples, EXAMPLES, READER)[::-1]


def test_sampled_completions_have_no_rank():
    """Sampling: several identical completions of one prompt, no beam order. Rule rewards score
    each on its own; a rank-shaped reward refuses instead of inventing a rank."""
    samples = [
        Sample("u2", chat((0, 0, 1))),
        Sample("u2", chat((0, 0, 1))),
        Sample("u1", chat((0, 0, 0))),
    ]
    assert ExactHit().score(samples, EXAMPLES, READER) == [1, 1, 1]
    with pytest.raises(ValueError, match="needs each beam's own 1-based rank"):
        RankShaped().score(samples, EXAMPLES, READER)
    with pytest.raises(KeyError, match="'u9': no such example"):
        ExactHit().score([Sample("u9", chat((0, 0, 0)))], EXAMPLES, READER)


def test_trl_reward_func_reads_ids_not_text():
    """TRL decodes with skip_special_tokens=True: every SID is an empty string there. The
    wrapper scores the token ids and the example id column."""
    samples = beams()
    func = trl_reward_func(RankShaped(), READER, EXAMPLES)
    assert func.__name__ == "rank_shaped"
    got = func(
        prompts=["same prompt text"] * len(samples),  # identical prompts: text cannot tell users
        completions=[""] * len(samples),
        completion_ids=[list(s.completion_ids) for s in samples],
        example_id=[s.example_id for s in samples],
        rank=[s.rank for s in samples],
    )
    assert got == RankShaped().score(samples, EXAMPLES, READER)
    with pytest.raises(KeyError, match="no 'example_id' column"):
        func(prompts=[], completions=[], completion_ids=[])


def test_sasrec_reward_model_round_trip_and_learned_scores(tmp_path):
    split = toy_split()
    cfg = SASRecConfig(hidden_size=32, num_heads=2, max_len=10, epochs=30, patience=None, seed=0)
    model, _ = train_sasrec(split, ITEMS, cfg, progress=False)
    save_sasrec(model, tmp_path / "rm", meta={"trained_on": "toy train split"})
    loaded, record = load_sasrec(tmp_path / "rm")
    assert record["meta"] == {"trained_on": "toy train split"} and record["item_ids"] == ITEMS

    codes = np.array([[i // 16, (i // 4) % 4, i % 4] for i in range(len(ITEMS))])
    sid_map = SIDMap(ITEMS, codes, (2, 4, 4))
    reader = SIDReader(SIDTokenIds(1000, (2, 4, 4)), sid_map)
    ids = reader.ids
    # users who walk the catalog one item at a time: after i3 i4 i5 comes i6
    examples = {"w": RewardExample(("i3", "i4", "i5"), "i6")}
    candidates = ["i6", "i20", "i11"]
    samples = [
        Sample("w", tuple(ids.encode(sid_map.code(c))), r) for r, c in enumerate(candidates, 1)
    ]
    samples.append(Sample("w", tuple(ids.encode((1, 3, 3)))))  # no catalog item
    for rm in (SASRecReward(model), SASRecReward(loaded), SASRecReward.load(str(tmp_path / "rm"))):
        scores = rm.score(samples, examples, reader)
        assert scores[0] > max(scores[1:3])  # the learned next item scores highest
        assert scores[3] == -30.0
        assert all(s <= 0 for s in scores[:3])  # log-probabilities
    a = SASRecReward(model).score(samples, examples, reader)
    b = SASRecReward(loaded).score(samples, examples, reader)
    assert a == pytest.approx(b, abs=1e-6)
    (tmp_path / "rm" / "sasrec.json").write_text(
        (tmp_path / "rm" / "sasrec.json").read_text().replace('"i29"', '"i99"')
    )
    from recllm.errors import UserError

    with pytest.raises(UserError, match="do not match items_hash"):
        load_sasrec(tmp_path / "rm")
