"""The chat's ``/slate`` (issue 32, item 5): N distinct picks decoded as ONE slate through
:meth:`Recommender.recommend_slate`, the history excluded inside the constraint, with the control
(the same slate without the exclusion holds a history item), on tiny recommenders built here."""

from __future__ import annotations

import pytest

from recllm.apps.chat import ChatSession
from recllm.apps.recommender import Recommender
from recllm.testing import save_tiny_recommender

pytestmark = pytest.mark.usefixtures("torch_single_thread")


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Recommender:
    model_dir = save_tiny_recommender(tmp_path_factory.mktemp("plain") / "tiny", seed=1)
    return Recommender.from_pretrained(model_dir, engine="hf")


def _ids(items) -> list[str]:
    return [r.item_id for r in items]


def test_slate_is_n_distinct_unseen_items_decoded_as_one_slate(plain: Recommender):
    # the items this model ranks highest after item2: seen, they must not recur
    history = _ids(plain.recommend(["item2"], 50, num_beams=60))[:3]
    chat = ChatSession(plain, history, k=5)
    reply = chat.slate()  # the current k
    picks = _ids(reply.picks)
    assert reply.mode == "slate" and len(picks) == 5 and len(set(picks)) == 5
    assert not set(picks) & set(history)
    want = plain.recommend_slate(history, 5, num_beams=10, exclude_history=True)
    assert picks == _ids(want.items)
    assert reply.score == pytest.approx(want.score)
    assert f"joint log-prob {want.score:.3f}" in reply.reply
    # the control: the same slate without the exclusion holds a history item
    control = _ids(plain.recommend_slate(history, 5, num_beams=10).items)
    assert set(control) & set(history), control
    # /slate N, and the slate joins the replies: /accept takes its picks
    seven = _ids(chat.slate(7).picks)
    assert len(set(seven)) == 7 and not set(seven) & set(history)
    assert chat.replies[-1].picks[0].item_id == seven[0]
    assert chat.accept(2) == seven[1] and chat.history[-1] == seven[1]
    assert chat.k == 5  # /slate leaves /k alone


def test_slate_errors(plain: Recommender):
    chat = ChatSession(plain, [], k=5)
    with pytest.raises(ValueError, match="the history is empty; Fix"):
        chat.slate()
    chat.add("item2")
    with pytest.raises(ValueError, match="a slate holds 1 to 50 items, got 0; Fix"):
        chat.slate(0)
    with pytest.raises(ValueError, match="a slate holds 1 to 50 items, got 51; Fix"):
        chat.slate(51)
    full = ChatSession(plain, plain.sid_map.item_ids[:57], k=5)  # 60 items, 57 seen
    with pytest.raises(ValueError, match="the history leaves 3; Fix: /slate 3 or fewer"):
        full.slate(4)
    assert len(full.slate(3).picks) == 3  # the control: the 3 unseen items fit
