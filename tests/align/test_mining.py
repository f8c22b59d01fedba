"""Beam mining (recllm.align.mining) on a tiny chat recommender: constrained beams only, rewards
recomputed independently from the items, each pair policy's choice, the TRL preference format,
and an atomic save with provenance; the unconstrained control emits non-catalog SIDs."""

from __future__ import annotations

import json

import pytest

from recllm.align.mining import (
    MiningConfig,
    load_preferences,
    mine_preferences,
    mining_examples,
    save_preferences,
)
from recllm.align.rewards import ExactHit, PrefixCredit, WeightedSum
from recllm.data import DataConfig, load_rec_dataset, split_dataset
from recllm.decode import DecodeOptions, generate_sids
from recllm.tasks.prompting import PromptSpec, build_prompts
from recllm.testing import save_tiny_recommender
from recllm.vocab import SID_FORMAT, load_model_with_sids


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    model_dir = save_tiny_recommender(tmp_path_factory.mktemp("mine") / "rec")
    model, tok, sid_map = load_model_with_sids(model_dir)
    spec = PromptSpec.from_model_dir(model_dir)
    cfg = DataConfig(**spec.data)
    dataset = load_rec_dataset(config=cfg)
    split = split_dataset(dataset, cfg)
    return model, tok, sid_map, spec, dataset, split


def prefix_credit(sid_map, item, target):
    a, b = sid_map.code(item), sid_map.code(target)
    n = 0
    while n < len(a) and a[n] == b[n]:
        n += 1
    return n / len(a)


def test_training_part_only(tiny):
    *_, split = tiny
    examples = mining_examples(split, 3)
    assert len(examples) == len(split.train.sequences)
    for ex in examples:
        seq = split.train.sequences[ex.user_id]
        assert ex.target == seq[-1] and ex.history == tuple(seq[:-1][-3:])
    test_targets = {(e.user_id, e.target) for e in split.test}
    assert not test_targets & {(e.user_id, e.target) for e in examples if e.target}


def test_best_vs_worst_pairs_from_constrained_beams(tiny, tmp_path):
    model, tok, sid_map, spec, dataset, split = tiny
    examples = mining_examples(split, 20)
    reward = WeightedSum([(ExactHit(), 1.0), (PrefixCredit(), 0.5)])
    ds = mine_preferences(
        model,
        tok,
        sid_map,
        examples,
        spec,
        dataset.catalog,
        reward,
        MiningConfig(beams=6),
        provenance={"round": 1},
    )
    assert 0 < len(ds) <= len(examples)
    targets = {e.user_id: e.target for e in examples}
    for row in ds:
        items, rewards = row["beam_items"], row["beam_rewards"]
        assert len(items) == len(set(items)) == 6 and all(i in sid_map for i in items)
        expected = [
            float(i == targets[row["example_id"]]) + 0.5 * prefix_credit(sid_map, i, row["target"])
            for i in items
        ]
        assert rewards == pytest.approx(expected)  # each beam's own reward, by its item
        assert row["chosen_reward"] == max(rewards) > row["rejected_reward"] == min(rewards)
        assert items[row["chosen_rank"] - 1] == row["chosen_item"]
        assert items[row["rejected_rank"] - 1] == row["rejected_item"]
        # TRL's conversational preference format: the rec template's assistant turn
        sid = SID_FORMAT.render(sid_map.code(row["chosen_item"]))
        assert row["chosen"] == [{"role": "assistant", "content": sid}]
        assert row["prompt"][0]["role"] == "user"
    meta = json.loads(ds.info.description)
    assert meta["round"] == 1 and meta["beams_scored"] == 6 * len(examples)
    assert meta["sid_map_hash"] == sid_map.content_hash

    out = save_preferences(ds, tmp_path / "prefs")
    again, record = load_preferences(out)
    assert again.to_list() == ds.to_list() and record == meta
    save_preferences(ds.select(range(1)), out)  # replaces the old one whole
    assert len(load_preferences(out)[0]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prefs"]  # no temporaries left


def test_pair_policies(tiny):
    model, tok, sid_map, spec, dataset, split = tiny
    examples = mining_examples(split, 20)[:12]
    args = (model, tok, sid_map, examples, spec, dataset.catalog, PrefixCredit())
    sft_like = mine_preferences(*args, MiningConfig(beams=5, pair_policy="target_vs_best"))
    assert len(sft_like) == len(examples)
    for row in sft_like:
        assert row["chosen_item"] == row["target"] != row["rejected_item"]
        assert row["rejected_item"] == next(i for i in row["beam_items"] if i != row["target"])
    rand = mine_preferences(*args, MiningConfig(beams=5, pair_policy="best_vs_random", seed=3))
    again = mine_preferences(*args, MiningConfig(beams=5, pair_policy="best_vs_random", seed=3))
    assert rand.to_list() == again.to_list()  # seeded
    for row in rand:
        assert row["chosen_reward"] == max(row["beam_rewards"]) > row["rejected_reward"]
    with pytest.raises(ValueError, match="pair_policy 'x' is not one of"):
        MiningConfig(pair_policy="x")


def test_unconstrained_control_emits_non_catalog_sids(tiny):
    """The control for mining's 0 invalid beams: the same untrained model without the trie."""
    model, tok, sid_map, spec, dataset, split = tiny
    prompts = build_prompts(spec, mining_examples(split, 20)[:8], sid_map, dataset.catalog)
    free = generate_sids(
        model, tok, prompts, sid_map, DecodeOptions(k=4, constrained=False, engine="generate")
    )
    assert sum(r.item_id is None for row in free for r in row) > 0
