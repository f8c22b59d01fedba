"""SASRec: network invariants on a toy catalog, evaluation against a brute-force ranking, and a
short real training run on MovieLens-100K that must beat popularity."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import replace

import pytest
import torch

from recllm.baselines.sasrec import (
    SASRec,
    SASRecConfig,
    _windows,
    evaluate_sasrec,
    score_histories,
    train_sasrec,
)
from recllm.data import DataConfig, Interactions, load_rec_dataset, split_dataset
from recllm.data.splits import leave_one_out
from recllm.eval.metrics import RankingMetrics

ITEMS = [f"i{n}" for n in range(30)]


def toy_split(users: int = 40, seed: int = 0):
    """Users who walk the catalog in steps of 1 or 2 items: a learnable next-item pattern."""
    g = torch.Generator().manual_seed(seed)
    seqs = {}
    for u in range(users):
        start, step = int(torch.randint(0, 30, (1,), generator=g)), 1 + u % 2
        length = 4 + int(torch.randint(0, 8, (1,), generator=g))
        seqs[f"u{u}"] = [ITEMS[(start + step * t) % 30] for t in range(length)]
    return leave_one_out(Interactions(seqs))


def test_config_errors():
    with pytest.raises(
        ValueError, match=r"hidden_size \(30\) must be divisible by num_heads \(4\)"
    ):
        SASRecConfig(hidden_size=30, num_heads=4)
    with pytest.raises(ValueError, match="dropout must lie in"):
        SASRecConfig(dropout=1.0)
    with pytest.raises(ValueError, match="max_len must be >= 1"):
        SASRecConfig(max_len=0)
    with pytest.raises(ValueError, match="time_budget_minutes must be > 0"):
        SASRecConfig(time_budget_minutes=0)


def test_windows_predict_each_item_once():
    w = _windows([[1, 2, 3, 4, 5, 6, 7], [8, 9], [10]], max_len=3)
    assert w.tolist() == [[4, 5, 6, 7], [1, 2, 3, 4], [0, 0, 8, 9]]
    real = (w[:, 1:] > 0) & (w[:, :-1] > 0)  # what SASRec.loss trains on
    targets = sorted(w[:, 1:][real].tolist())
    assert targets == [2, 3, 4, 5, 6, 7, 9]  # every item after the first, once


def test_causal_and_padding_invariant():
    torch.manual_seed(0)
    model = SASRec(ITEMS, SASRecConfig(hidden_size=16, num_heads=2, max_len=8)).eval()
    with torch.no_grad():
        a = model.encode(torch.tensor([[0, 0, 3, 4, 5, 6]]))
        b = model.encode(torch.tensor([[0, 0, 3, 4, 5, 9]]))
        # Changing the last item leaves the earlier positions untouched (causal).
        assert torch.allclose(a[0, :5], b[0, :5], atol=1e-6)
        assert not torch.allclose(a[0, 5], b[0, 5])
        # More left padding changes nothing: positions count back from the latest item.
        for seq in ([3, 4, 5, 6], [0, 0, 0, 0, 3, 4, 5, 6]):
            c = model.encode(torch.tensor([seq]))
            assert torch.allclose(a[0, -1], c[0, -1], atol=1e-5)
        assert torch.isfinite(model.encode(torch.zeros(2, 4, dtype=torch.long))).all()


def test_evaluation_matches_brute_force_ranking():
    split = toy_split()
    cfg = SASRecConfig(hidden_size=16, num_heads=2, max_len=10, epochs=3, patience=None, seed=1)
    model, _ = train_sasrec(split, ITEMS, cfg, progress=False)
    got = evaluate_sasrec(model, split, "test", ks=(1, 5, 10), batch_size=7)
    scores = score_histories(model, [e.history for e in split.test])
    recall = {k: 0.0 for k in (1, 5, 10)}
    ndcg = {k: 0.0 for k in (1, 5, 10)}
    for row, e in zip(scores, split.test, strict=True):
        rank = 1 + int((row > row[ITEMS.index(e.target)]).sum())
        for k in recall:
            recall[k] += (rank <= k) / len(split.test)
            ndcg[k] += (1 / math.log2(rank + 1) if rank <= k else 0.0) / len(split.test)
    for k in recall:
        assert got[f"recall@{k}"] == pytest.approx(recall[k], abs=1e-12)
        assert got[f"ndcg@{k}"] == pytest.approx(ndcg[k], abs=1e-12)
    assert got["users"] == len(split.test) and got["invalid_rate"] == 0.0
    # With seen items removed, no ranked list holds an item of its user's history.
    excluded = evaluate_sasrec(model, split, "test", ks=(10,), exclude_history=True)
    assert excluded["users"] == len(split.test)
    metrics = RankingMetrics(ITEMS)
    for e, row in zip(split.test, scores, strict=True):
        row = row.clone()
        row[[ITEMS.index(i) for i in e.history]] = -math.inf
        metrics.add([ITEMS[j] for j in row.topk(10).indices.tolist()], e.target)
    assert excluded["recall@10"] == metrics.compute((10,))["recall@10"]


def test_seeded_training_is_deterministic():
    split = toy_split()
    cfg = SASRecConfig(hidden_size=16, num_heads=2, max_len=10, epochs=2, patience=None, seed=3)
    state = torch.random.get_rng_state()
    m1, h1 = train_sasrec(split, ITEMS, cfg, progress=False)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is untouched
    m2, h2 = train_sasrec(split, ITEMS, cfg, progress=False)
    assert [h["loss"] for h in h1] == [h["loss"] for h in h2]
    for (name, p1), p2 in zip(m1.state_dict().items(), m2.state_dict().values(), strict=True):
        assert torch.equal(p1, p2), name
    _, h3 = train_sasrec(split, ITEMS, replace(cfg, seed=4), progress=False)
    assert [h["loss"] for h in h3] != [h["loss"] for h in h1]


def popularity_metrics(split, catalog, examples, k: int = 10) -> dict[str, float | int]:
    """Everyone gets the K items most frequent in the training interactions."""
    counts = Counter(i for seq in split.train.sequences.values() for i in seq)
    top = [i for i, _ in counts.most_common(k)]
    metrics = RankingMetrics(catalog)
    for e in examples:
        metrics.add(top, e.target)
    return metrics.compute((k,))


def test_beats_popularity_on_ml100k(shared_data, torch_single_thread):
    # Five epochs take about 17 s on one quiet core (a fixed count, not a time budget, so that the
    # figures do not depend on the machine's load).
    dataset = load_rec_dataset(shared_data / "ml-100k")
    split = split_dataset(dataset, DataConfig(max_history=50))
    pop = popularity_metrics(split, dataset.catalog, split.valid)
    assert pop["recall@10"] == pytest.approx(0.0382, abs=1e-4)
    cfg = SASRecConfig(
        max_len=50, dropout=0.1, learning_rate=3e-3, batch_size=64, epochs=5, patience=None
    )
    model, history = train_sasrec(split, dataset.catalog, cfg, progress=False)
    assert len(history) == 5 and all(math.isfinite(h["loss"]) for h in history)
    assert history[-1]["loss"] < history[0]["loss"] - 0.5
    valid = evaluate_sasrec(model, split, "valid", ks=(10,))
    assert valid["ndcg@10"] == max(h["valid_ndcg@10"] for h in history)  # best epoch restored
    # About 0.10 against popularity's 0.038.
    assert valid["recall@10"] > 2 * pop["recall@10"], (valid, pop, history)
    assert valid["coverage@10"] > 5 * pop["coverage@10"]
