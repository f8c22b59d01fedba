"""Text nearest neighbours: hand-made vectors and catalogs whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from recllm.baselines.text_knn import TextKNN
from recllm.data.types import Catalog

# a . b = 0.8, a . c = 0.6, a . d = 0, a . e = -1; d . b = 0.6, d . c = 0.8
VECTORS = np.array([[1, 0], [0.8, 0.6], [0.6, 0.8], [0, 1], [-1, 0]], dtype=np.float32)
IDS = ["a", "b", "c", "d", "e"]


def test_rank_by_cosine_excluding_history():
    knn = TextKNN(IDS, VECTORS, decay=0.5)
    assert knn.rank([["a"]], k=10) == [["b", "c", "d", "e"]]
    # u = a + 0.5 d: b 0.8 + 0.3 = 1.1 > c 0.6 + 0.4 = 1.0 > e -1 (a, d: history)
    assert knn.rank([["d", "a"]], k=10) == [["b", "c", "e"]]
    # the newest item weighs more: u = d + 0.5 a puts c (0.8 + 0.3) above b (0.6 + 0.4)
    assert knn.rank([["a", "d"]], k=2) == [["c", "b"]]
    assert TextKNN(IDS, VECTORS, last=1).rank([["d", "a"]]) == [["b", "c", "e"]]
    # unknown items are skipped; nothing known -> an empty list
    assert knn.rank([["zzz", "a"], ["zzz"], []], k=1) == [["b"], [], []]


def test_rank_keeps_history_when_asked():
    knn = TextKNN(IDS, VECTORS, exclude_history=False)
    assert knn.rank([["a"]], k=3) == [["a", "b", "c"]]
    # decay 1 = plain mean: b and c tie at 1.4/sqrt 2 and keep catalog order
    assert TextKNN(IDS, VECTORS, decay=1.0).rank([["a", "d"]], k=2) == [["b", "c"]]


def test_bad_arguments():
    with pytest.raises(ValueError, match="one row per item"):
        TextKNN(IDS[:3], VECTORS)
    with pytest.raises(ValueError, match="decay"):
        TextKNN(IDS, VECTORS, decay=0.0)


def test_from_catalog_tfidf_ranks_the_text_neighbour_and_new_items():
    titles = {
        "cake1": "chocolate cake recipe book",
        "cake2": "chocolate cake baking tin",
        "car1": "sports car engine oil",
        "car2": "racing car engine parts",
        "seed1": "garden flower seeds pack",
        "seed2": "garden vegetable seeds pack",
        "new": "chocolate cake frosting",  # not seen by the featurizer fit
    }
    catalog = Catalog({i: {"title": t} for i, t in titles.items()}, ("title",))
    knn = TextKNN.from_catalog(catalog, fit_ids=[i for i in titles if i != "new"], dim=4)
    ranked = knn.rank([["cake1"], ["car2"], ["seed1"], ["cake2"]], k=2)
    assert [r[0] for r in ranked[:3]] == ["cake2", "car1", "seed2"]
    # the new item, embedded with the frozen featurizer, is cake2's other neighbour
    assert set(ranked[3]) == {"cake1", "new"}
