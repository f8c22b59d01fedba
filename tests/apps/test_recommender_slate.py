"""Recommender.recommend_slate on transformers: n distinct items in one answer, filters inside
the constraint, the slate equal to slate_search on the same prompt, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from recllm.apps.recommender import Recommender
from recllm.decode import encode_prompts, left_pad
from recllm.decode.slate import slate_search
from recllm.errors import UserError
from recllm.testing import save_tiny_recommender

pytestmark = pytest.mark.usefixtures("torch_single_thread")


@pytest.fixture(scope="module")
def hf_rec(tmp_path_factory: pytest.TempPathFactory) -> Recommender:
    path: Path = save_tiny_recommender(tmp_path_factory.mktemp("slate") / "tiny", seed=0)
    return Recommender.from_pretrained(path, engine="hf", max_k=60)


def _ids(slate):
    return [r.item_id for r in slate.items]


def test_slate_is_the_best_slate_of_distinct_items(hf_rec: Recommender):
    history = ["item3", "item7"]
    slate = hf_rec.recommend_slate(history, n=5, num_beams=6)
    assert len(set(_ids(slate))) == 5
    assert slate.score == pytest.approx(sum(r.score for r in slate.items), abs=1e-3)
    assert all(r.title for r in slate.items)
    # the same search by hand, on the prompt the Recommender builds
    enc = encode_prompts(hf_rec.tokenizer, hf_rec.prompts([history], 5))
    ids, mask = left_pad(enc, hf_rec.tokenizer.pad_token_id, torch.device("cpu"))
    raw = slate_search(
        hf_rec.backend, ids, mask, hf_rec.trie, n=5, num_beams=6, stop_token_id=hf_rec.stop_token_id
    )
    assert _ids(slate) == [hf_rec.sid_map.item_ids[i] for i in raw.items[0, 0].tolist()]
    assert slate.score == pytest.approx(float(raw.scores[0, 0]))
    greedy = hf_rec.recommend_slate(history, n=5, mode="greedy")
    assert len(set(_ids(greedy))) == 5 and greedy.score <= slate.score + 1e-4
    drawn = hf_rec.recommend_slates(
        [history], n=4, mode="sample", num_beams=6, num_slates=6, seed=3
    )
    assert len(drawn[0]) == 6 and all(len(set(_ids(s))) == 4 for s in drawn[0])
    again = hf_rec.recommend_slates(
        [history], n=4, mode="sample", num_beams=6, num_slates=6, seed=3
    )
    assert [_ids(s) for s in again[0]] == [_ids(s) for s in drawn[0]]


def test_slate_filters(hf_rec: Recommender):
    history = ["item3", "item7"]
    plain = _ids(hf_rec.recommend_slate(history, n=4))
    got = _ids(hf_rec.recommend_slate(history, n=4, exclude=plain[:2]))
    assert len(set(got)) == 4 and not set(got) & set(plain[:2])
    seen = plain[:3]
    control = _ids(hf_rec.recommend_slate(seen, n=6, num_beams=8))
    unseen = _ids(hf_rec.recommend_slate(seen, n=6, num_beams=8, exclude_history=True))
    assert set(control) & set(seen)  # the control: the history comes back without the filter
    assert len(set(unseen)) == 6 and not set(unseen) & set(seen)
    allow = ["item1", "item9", "item40"]
    assert sorted(_ids(hf_rec.recommend_slate(history, n=3, allow=allow))) == sorted(allow)
    rows = hf_rec.recommend_slates([history, ["item5"]], n=3, exclude=[["item1"], None])
    assert "item1" not in _ids(rows[0][0]) and len(rows) == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 4, "allow": ["item1", "item9", "item40"]}, "leave 3 items for history 0"),
        ({"mode": "topk"}, "mode: unknown slate mode 'topk'"),
        ({"exclude": ["ghost"]}, "exclude: unknown item id 'ghost'"),
        ({"n": 0}, "k=0 is out of range"),
    ],
)
def test_slate_errors(hf_rec: Recommender, kwargs, message):
    with pytest.raises(ValueError, match="Fix") as err:
        hf_rec.recommend_slate(["item3"], **kwargs)
    assert message in str(err.value)


def test_sampled_slate_on_vllm_says_hf_only(hf_rec: Recommender):
    on_vllm = Recommender(
        hf_rec.model_dir,
        hf_rec.tokenizer,
        hf_rec.sid_map,
        hf_rec.spec,
        hf_rec.catalog,
        engine="vllm",
        backend=None,
    )
    with pytest.raises(UserError, match="sampled slates run on the transformers") as err:
        on_vllm.recommend_slate(["item3"], n=3, mode="sample")
    assert 'engine="hf"' in str(err.value)
