"""Recommender.recommend(exclude=, allow=, exclude_history=) on transformers: the filters act
inside the constraint (k admissible items come back), with controls and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from recllm.apps.recommender import Recommender
from recllm.errors import UserError
from recllm.testing import save_tiny_recommender

pytestmark = pytest.mark.usefixtures("torch_single_thread")


@pytest.fixture(scope="module")
def hf_rec(tmp_path_factory: pytest.TempPathFactory) -> Recommender:
    path: Path = save_tiny_recommender(tmp_path_factory.mktemp("rec") / "tiny", seed=0)
    return Recommender.from_pretrained(path, engine="hf", max_k=60)


def _ids(recs):
    return [r.item_id for r in recs]


def test_exclude_and_exclude_history_give_k_admissible_items(hf_rec: Recommender):
    history = ["item3", "item7"]
    everything = _ids(hf_rec.recommend(history, k=len(hf_rec.sid_map), num_beams=60))
    plain = _ids(hf_rec.recommend(history, k=8, num_beams=10))
    drop = plain[:3]
    got = _ids(hf_rec.recommend(history, k=8, num_beams=10, exclude=drop))
    assert len(got) == 8 and not set(got) & set(drop)
    # with every item in the beam the filtered ranking is the full ranking without them
    wide = _ids(hf_rec.recommend(history, k=20, num_beams=57, exclude=drop))
    assert wide == [i for i in everything if i not in drop][:20]
    # history items: the control (no filter) ranks them, exclude_history never does
    seen = [i for i in everything[:4]]
    control = _ids(hf_rec.recommend(seen, k=12, num_beams=60))
    assert set(control) & set(seen)
    unseen = _ids(hf_rec.recommend(seen, k=12, num_beams=12, exclude_history=True))
    assert len(unseen) == 12 and not set(unseen) & set(seen)


def test_allow_list_and_batches(hf_rec: Recommender):
    allow = ["item1", "item2", "item30", "item44"]
    got = _ids(hf_rec.recommend(["item3"], k=4, allow=allow))
    assert sorted(got) == sorted(allow)
    fewer = _ids(hf_rec.recommend(["item3"], k=4, allow=allow, exclude=["item2"]))
    assert sorted(fewer) == ["item1", "item30", "item44"]  # only 3 admissible items
    rows = hf_rec.recommend_batch(
        [["item3"], ["item5"]], k=3, exclude=[["item1"], None], allow=[None, allow]
    )
    assert "item1" not in _ids(rows[0]) and len(rows[0]) == 3
    assert set(_ids(rows[1])) <= set(allow)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"exclude": ["item1", "nope"]}, "exclude: unknown item id 'nope'"),
        ({"allow": ["x"]}, "allow: unknown item id 'x'"),
        ({"allow": ["item1"], "exclude": ["item1"]}, "leave no catalog item"),
        ({"exclude": "item1"}, "exclude: must be a list of item ids"),
        ({"think": True, "exclude_history": True}, "not applied to thinking"),
    ],
)
def test_filter_errors_name_the_key_and_id(hf_rec: Recommender, kwargs, message):
    with pytest.raises(UserError, match="Fix") as err:
        hf_rec.recommend(["item3"], k=3, **kwargs)
    assert message in str(err.value)


def test_every_item_excluded_is_refused(hf_rec: Recommender):
    everything = list(hf_rec.sid_map.item_ids)
    with pytest.raises(UserError, match="exclude: leave no catalog item"):
        hf_rec.recommend(everything[:5], k=3, exclude=everything[5:], exclude_history=True)
