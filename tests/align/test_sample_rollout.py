"""GRPO's sampled rollouts on transformers: the constrained samples ``generate_sids`` draws with
one :class:`~recllm.decode.DecodeOptions`, seeded per call, each a catalog item."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from recllm.align.grpo import constrained_rollout, rollout_seed
from recllm.align.mining import mining_examples
from recllm.data import DataConfig, load_rec_dataset, split_dataset
from recllm.decode import DecodeOptions, encode_prompts, generate_sids
from recllm.tasks.prompting import PromptSpec, build_prompts
from recllm.testing import save_tiny_recommender
from recllm.vocab import SID_FORMAT, load_model_with_sids

pytestmark = pytest.mark.usefixtures("torch_single_thread")

GROUP = 4


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    model_dir = save_tiny_recommender(tmp_path_factory.mktemp("roll") / "rec")
    model, tok, sid_map = load_model_with_sids(model_dir)
    spec = PromptSpec.from_model_dir(model_dir)
    cfg = DataConfig(**spec.data)
    dataset = load_rec_dataset(config=cfg)
    examples = mining_examples(split_dataset(dataset, cfg), 20)[:3]
    prompts = build_prompts(spec, examples, sid_map, dataset.catalog)
    trainer = SimpleNamespace(
        num_generations=GROUP,
        num_generations_eval=GROUP,
        model=model,
        accelerator=SimpleNamespace(unwrap_model=lambda m: m, is_main_process=True),
        processing_class=tok,
        state=SimpleNamespace(global_step=0),
    )
    return model, tok, sid_map, spec, prompts, trainer


def test_sampled_rollouts_are_seeded_catalog_items(setup):
    model, tok, sid_map, spec, prompts, trainer = setup
    model.train()  # the trainer's state: the rollout must decode in eval mode and restore it
    repeated = [p for p in prompts for _ in range(GROUP)]
    first = constrained_rollout(sid_map, spec, mode="sample", batch_size=2, seed=3)
    out = first(repeated, trainer)
    assert model.training
    # what the rollout decodes: constrained samples, seeded with seed + call number
    want = generate_sids(
        model, tok, prompts, sid_map, DecodeOptions(k=GROUP, mode="sample", seed=3, batch_size=2)
    )
    token_ids = SID_FORMAT.token_ids(tok, sid_map.codebook_sizes)
    stop = tok.eos_token_id
    assert all(c[-1] == stop for c in out["completion_ids"])  # SID span + the stop token
    expect = []
    for row in want:
        items = [r.item_id for r in row]
        assert items and None not in items
        expect += [items[min(j, len(items) - 1)] for j in range(GROUP)]
    expect_codes = [tuple(sid_map.code(i)) for i in expect]
    got_codes = [tuple(token_ids.decode(c[:-1])) for c in out["completion_ids"]]
    assert got_codes == expect_codes
    assert out["rank"] == [None] * len(repeated)
    assert out["prompt_ids"][::GROUP] == encode_prompts(tok, prompts)
    # a fresh rollout with the same seed draws the same; its second call at the same step draws
    # anew, seeded rollout_seed(3, 0, 1)
    again = constrained_rollout(sid_map, spec, mode="sample", batch_size=2, seed=3)
    assert again(repeated, trainer)["completion_ids"] == out["completion_ids"]
    second = again(repeated, trainer)["completion_ids"]
    assert second != out["completion_ids"]
    plus_one = generate_sids(
        model,
        tok,
        prompts,
        sid_map,
        DecodeOptions(k=GROUP, mode="sample", seed=rollout_seed(3, 0, 1), batch_size=2),
    )
    assert [tuple(token_ids.decode(c[:-1])) for c in second[::GROUP]] == [
        tuple(sid_map.code(row[0].item_id)) for row in plus_one
    ]


def test_a_resumed_run_draws_what_the_uninterrupted_run_drew(setup):
    """The seed of a call follows the trainer's step, not the process's call count: a rollout
    function made afresh after a resume at step 7 draws what the run that never stopped drew
    at step 7 (with the call-count seed of before, it drew step 0's samples again)."""
    _, _, sid_map, spec, prompts, trainer = setup
    repeated = [p for p in prompts for _ in range(GROUP)]
    steps = iter([0, 0, 3, 7])
    state = SimpleNamespace(global_step=0)
    run = SimpleNamespace(**{**vars(trainer), "state": state})
    uninterrupted = constrained_rollout(sid_map, spec, mode="sample", batch_size=2, seed=3)
    drawn = {}
    for step in steps:
        state.global_step = step
        drawn.setdefault(step, uninterrupted(repeated, run)["completion_ids"])
    resumed = constrained_rollout(sid_map, spec, mode="sample", batch_size=2, seed=3)
    state.global_step = 7
    assert resumed(repeated, run)["completion_ids"] == drawn[7]
    assert drawn[7] != drawn[0]  # the control: steps draw differently
