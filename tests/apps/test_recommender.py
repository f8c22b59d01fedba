"""The recommendation API on transformers: input checks and titled, ranked answers (the vLLM
engine is tested against it in tests/test_vllm_serve.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from recllm.apps.recommender import Recommender
from recllm.testing import save_tiny_recommender

pytestmark = pytest.mark.usefixtures("torch_single_thread")


@pytest.fixture(scope="module")
def hf_rec(tmp_path_factory: pytest.TempPathFactory) -> Recommender:
    path: Path = save_tiny_recommender(tmp_path_factory.mktemp("rec") / "tiny", seed=0)
    return Recommender.from_pretrained(path, engine="hf")


@pytest.mark.parametrize(
    ("history", "k", "message"),
    [
        (["no-such-item"], 5, "unknown item ids ['no-such-item']"),
        ([], 5, "history is empty"),
        (["item1"], 0, "k=0 is out of range"),
        (["item1"], 61, "k=61 is out of range"),
        (["item1"], "5", "k must be an integer"),
        ("item1", 5, "history must be a list"),
        ([["item1"]], 5, "item ids are strings"),
    ],
)
def test_recommender_rejects_bad_requests(hf_rec: Recommender, history, k, message):
    with pytest.raises(ValueError, match=r"Fix|integer|strings") as err:
        hf_rec.recommend(history, k)
    assert message in str(err.value)


def test_recommender_hf_returns_k_titled_items(hf_rec: Recommender):
    recs = hf_rec.recommend(["item3", "item7"], k=7)
    assert len(recs) == 7 and len({r.item_id for r in recs}) == 7
    assert all(r.title == f"movie {r.item_id.removeprefix('item')}" for r in recs)
    assert [r.score for r in recs] == sorted((r.score for r in recs), reverse=True)


def test_serving_refuses_another_catalog_unless_allowed(tmp_path):
    """`recllm serve --data OTHER` / `Recommender.from_pretrained(data=OTHER)`: a catalog the
    model was not trained on would put other items' titles on its answers."""
    import shutil

    from recllm.apps.recommender import check_serving_data
    from recllm.errors import UserError
    from recllm.testing import save_tiny_recommender

    model = save_tiny_recommender(tmp_path / "a", seed=0)
    same = shutil.copytree(model.parent / "data", tmp_path / "same")
    check_serving_data(model, str(same))  # the same catalog under another path: served
    small = save_tiny_recommender(tmp_path / "b", seed=0, num_items=50)
    other = str(small.parent / "data")
    with pytest.raises(UserError, match=r"another catalog \(50 items\) than the 60 items") as e:
        check_serving_data(model, other)
    assert "--allow-other-data" in str(e.value)
    check_serving_data(model, other, allow_other_data=True)  # warned, not refused
    with pytest.raises(UserError, match="another catalog"):
        Recommender.from_pretrained(model, engine="hf", data=other)
