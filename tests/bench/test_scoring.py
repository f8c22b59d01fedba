"""recllm.bench.scoring: a model scored on fixed users once; the cache is reused only for the
same model files, users and settings."""

from __future__ import annotations

import json

import pytest

from recllm.bench.scoring import ScoreCache, Scorer, digest, model_fingerprint
from recllm.testing import save_tiny_recommender


def test_cache_hit_returns_the_stored_result_without_computing_and_a_new_key_recomputes(tmp_path):
    cache = ScoreCache(tmp_path / "eval")
    calls = []

    def compute():
        calls.append(1)
        return {"recall@10": 0.5, "ranks": (1, 0)}

    first = cache.get_or_compute("row", {"model": "m1", "beams": 20}, compute)
    assert first == {"recall@10": 0.5, "ranks": [1, 0]}  # as a later read returns it
    again = cache.get_or_compute("row", {"model": "m1", "beams": 20}, compute)
    assert again == first and len(calls) == 1  # a hit: not computed again
    cache.get_or_compute("row", {"model": "m2", "beams": 20}, compute)
    assert len(calls) == 2  # another model: computed again
    cache.get_or_compute("row", {"model": "m2", "beams": 10}, compute)
    assert len(calls) == 3  # other settings: computed again
    stored = json.loads((tmp_path / "eval" / "row.json").read_text())
    assert stored["key"] == {"model": "m2", "beams": 10}


def test_a_failed_computation_leaves_no_file(tmp_path):
    cache = ScoreCache(tmp_path)

    def boom():
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError):
        cache.get_or_compute("row", {"k": 1}, boom)
    assert not cache.path("row").exists()


def test_digest_is_stable_and_sees_every_value():
    from recllm.decode.think import ThinkOptions

    a = digest({"think": ThinkOptions(1, 8, 0.0, 1.0, 0), "prefixes": {"u1": [(1, 2)]}})
    assert a == digest({"prefixes": {"u1": [[1, 2]]}, "think": ThinkOptions(1, 8, 0.0, 1.0, 0)})
    assert a != digest({"think": ThinkOptions(2, 8, 1.0, 1.0, 0), "prefixes": {"u1": [(1, 2)]}})


def test_scorer_scores_once_and_rescores_a_retrained_model(tmp_path):
    model_dir = save_tiny_recommender(tmp_path / "tiny")
    from recllm.eval.run import eval_examples

    _, dataset, users = eval_examples(model_dir, None, "test", 12)
    scorer = Scorer(users, dataset.catalog, ScoreCache(tmp_path / "eval"), beams=5, ks=(1, 5))
    first = scorer.score("start", model_dir)
    assert len(first.ranks) == 12 and all(0 <= r <= 5 for r in first.ranks)
    # the figures are the ranks' figures
    assert first.figures["recall@5"] == pytest.approx(sum(r > 0 for r in first.ranks) / 12)
    assert first.figures["recall@1"] == pytest.approx(sum(r == 1 for r in first.ranks) / 12)
    assert first.figures["invalid_rate"] == 0.0

    # a hit returns what is stored (marked here), without scoring again
    path = tmp_path / "eval" / "start.json"
    stored = json.loads(path.read_text())
    stored["result"]["figures"]["marker"] = "stored"
    path.write_text(json.dumps(stored))
    assert scorer.score("start", model_dir).figures["marker"] == "stored"
    # control: another beam width is another key, scored again
    wider = Scorer(users, dataset.catalog, ScoreCache(tmp_path / "eval"), beams=6, ks=(1, 5))
    assert "marker" not in wider.score("start", model_dir).figures

    # the same name after the model was retrained into the same directory: scored again
    path.write_text(json.dumps(stored))
    before = model_fingerprint(model_dir)
    save_tiny_recommender(tmp_path / "tiny", seed=3)
    assert model_fingerprint(model_dir) != before
    fresh = scorer.score("start", model_dir)
    assert "marker" not in fresh.figures and len(fresh.ranks) == 12


def test_fingerprint_leaves_the_text_head_out(tmp_path):
    from recllm.bench.scoring import model_fingerprint

    (tmp_path / "config.json").write_text("{}")
    before = model_fingerprint(tmp_path)
    (tmp_path / "text_head").mkdir()
    (tmp_path / "text_head" / "text_head.json").write_text("{}")
    assert model_fingerprint(tmp_path) == before  # a fitted head changes no SID decoding result
    (tmp_path / "config.json").write_text('{"a": 1}')
    assert model_fingerprint(tmp_path) != before  # control: a model file does count
