"""scripts/incremental.py on a tiny model and data set: the stale, incremental and retrained
models train on their periods, are ranked on the same last-period users, and the last line is
one JSON object of the figures."""

from __future__ import annotations

import json

import pytest

from recllm.bench.incremental import last_period_users, temporal_periods
from recllm.data import DataConfig, load_rec_dataset, split_dataset
from recllm.testing import save_tiny_model
from tests.recipes.test_plum_faults import write_data
from tests.scripts.running import ROOT, run_script


def test_periods_cut_the_training_period_and_users_are_each_ones_first_test_event(tmp_path):
    data = write_data(tmp_path / "data", 60)  # 40 users x 8 events at times 1..320
    cfg = DataConfig(data_path=str(data), split="temporal", valid_ratio=0.02, test_ratio=0.1)
    split = split_dataset(load_rec_dataset(config=cfg), cfg)
    last = max(t for ts in split.train.timestamps.values() for t in ts)
    periods = temporal_periods(split, 40 / 86400)  # the last 40 seconds
    assert periods.t_update == last - 40
    assert periods.base_events + periods.update_events == split.train.num_interactions
    assert periods.update_events == 41  # events t_update..last, one per second
    users = last_period_users(split, 0)
    assert len({e.user_id for e in users}) == len(users) == len({e.user_id for e in split.test})
    assert last_period_users(split, 2, seed=1) == last_period_users(split, 2, seed=1)
    assert len(last_period_users(split, 2, seed=1)) == 2


@pytest.mark.slow  # ~20 s: three tiny trainings and rankings
def test_three_rows_on_the_same_users(tmp_path):
    data = write_data(tmp_path / "data", 60)
    base = save_tiny_model(tmp_path / "base", tie_word_embeddings=False)
    recipe = ["--model_name_or_path", str(base), "--data_path", str(data), "--bf16", "false"]
    recipe += ["--codebook_size", "8", "--max_steps", "2", "--per_device_train_batch_size", "8"]
    recipe += ["--logging_steps", "1", "--max_users", "null"]
    out = tmp_path / "inc"
    proc, summary = run_script(
        "incremental.py",
        *("--config", str(ROOT / "recipes" / "quickstart.yaml")),
        *("--update-days", str(40 / 86400), "--replay-ratio", "1", "--out", str(out)),
        *recipe,
        cwd=tmp_path,
    )
    rows = summary["rows"]
    assert set(rows) == {"stale", "incremental", "scratch", "popular"}
    names = ["stale", "incremental", "scratch"]
    for name in names:
        assert 0 <= rows[name]["ndcg@10"] <= rows[name]["recall@10"] <= 1
        assert rows[name]["minutes"] >= 0
    period = rows["incremental"]["period"]
    assert period["new"] > 0 and period["replay"] == min(period["new"], period["replay_pool"])
    assert rows["incremental"]["train_examples"] == period["new"] + period["replay"]
    assert "period" not in rows["stale"]  # the data cut at the update, not a selection
    assert rows["scratch"]["train_examples"] > rows["stale"]["train_examples"]
    assert summary["users"] > 0 and summary["periods"]["update_events"] == 41
    assert json.loads((out / "summary.json").read_text())["rows"] == rows
    table = proc.stdout.strip().splitlines()[-6:-1]  # header, three rows, most-popular
    assert [line.split()[0] for line in table] == ["model", *names, "popular"]
