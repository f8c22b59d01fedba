"""Incremental training (issue 31, item 4): ``--init_model`` continues a saved model with its
own weights and SID map; ``--train_since/--train_until`` and ``--replay_ratio`` pick a period's
training examples plus a seeded replay share of older ones."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

from recllm.baselines.sasrec import run_teacher
from recllm.data import DataConfig, load_rec_dataset, split_dataset
from recllm.errors import UserError
from recllm.testing import save_tiny_model
from recllm.train.period import cut_training, event_times, select_period
from recllm.vocab import load_model_with_sids
from tests.recipes.test_plum_faults import plum_configs, write_data

pytestmark = pytest.mark.usefixtures("torch_single_thread")

PARAM = "model.layers.0.mlp.down_proj.weight"


# -- period selection -------------------------------------------------------------------------


def test_select_period_keeps_the_new_rows_and_a_seeded_bounded_replay():
    times = {("u", f"i{k}"): float(k) for k in range(10)}
    users = ["u"] * 10 + [""]  # the last row: a catalog row, no time
    targets = [f"i{k}" for k in range(10)] + ["i0"]
    sel = select_period(users, targets, times, since=7.0, replay_ratio=1.0, seed=3)
    assert (sel.new, sel.replay, sel.pool) == (3, 3, 8)
    assert [k for k in sel.indices if k in (7, 8, 9)] == [7, 8, 9]  # every new row, in order
    assert sel.indices == sorted(sel.indices) and len(set(sel.indices)) == 6
    again = select_period(users, targets, times, since=7.0, replay_ratio=1.0, seed=3)
    other = select_period(users, targets, times, since=7.0, replay_ratio=1.0, seed=4)
    assert again.indices == sel.indices  # seeded
    assert other.indices != sel.indices  # and the seed matters
    # bounded: never more than the older pool, whatever the ratio
    most = select_period(users, targets, times, since=7.0, replay_ratio=100.0, seed=3)
    assert (most.replay, len(most.indices)) == (8, 11)
    none = select_period(users, targets, times, since=7.0, replay_ratio=0.0)
    assert none.indices == [7, 8, 9]
    with pytest.raises(UserError, match="--replay_ratio -1"):
        select_period(users, targets, times, since=1.0, replay_ratio=-1)


def test_cut_training_keeps_the_training_events_before_the_time(tmp_path):
    data = write_data(tmp_path / "data", 60)  # 40 users x 8 events at times 1..320
    cfg = DataConfig(data_path=str(data), max_users=None)
    split = split_dataset(load_rec_dataset(config=cfg), cfg)
    cut = cut_training(split, 100.5)
    # users 0..11 have events 1..96 (6 of 8 train under leave-one-out), user 12 events 97..100
    assert len(cut.train) == 13 and cut.train.num_interactions == 12 * 6 + 4
    assert all(t < 100.5 for ts in cut.train.timestamps.values() for t in ts)
    assert cut.valid == split.valid and cut.test == split.test  # held-out examples unchanged
    with pytest.raises(UserError, match="no training interaction happened before it"):
        cut_training(split, 0.5)


def test_event_times_hold_training_events_only(tmp_path):
    data = write_data(tmp_path / "data", 60)
    cfg = DataConfig(data_path=str(data), max_users=None)
    split = split_dataset(load_rec_dataset(config=cfg), cfg)
    times = event_times(split)
    assert len(times) == split.train.num_interactions  # each user meets an item once here
    held_out = [(e.user_id, e.target) for e in split.valid + split.test]
    assert held_out and not any(k in times for k in held_out)


# -- --init_model in the recipe ---------------------------------------------------------------


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("base") / "m", tie_word_embeddings=False)


@pytest.fixture(scope="module")
def trained(base, tmp_path_factory) -> tuple[Path, Path]:
    """A recipe-trained model (the start of an incremental run) and its data."""
    root = tmp_path_factory.mktemp("inc")
    data = write_data(root / "data", 60)
    from recllm.train.plum import run_plum

    model_dir = run_plum(*plum_configs(base, data, root / "first", "--max_steps", "1"))
    return model_dir, data


class _Snapshot(TrainerCallback):
    """The parameter at the first training step, before any update."""

    def __init__(self) -> None:
        self.before: torch.Tensor | None = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.before = model.get_parameter(PARAM).detach().clone()


def test_init_model_starts_from_the_saved_weights_and_reuses_its_sid_map(trained, tmp_path):
    from recllm.train.plum import run_plum

    start, data = trained
    saved, _, start_map = load_model_with_sids(start)
    snap = _Snapshot()
    since = "200"  # the later users' events (timestamps 1..320)
    configs = plum_configs(
        start,
        data,
        tmp_path / "inc",
        *("--init_model", str(start), "--train_since", since, "--replay_ratio", "0.5"),
        *("--max_steps", "2", "--max_train_examples", "null"),
    )
    model_dir = run_plum(*configs, callbacks=[snap])
    assert torch.equal(snap.before, saved.get_parameter(PARAM))  # started from the saved weights
    after, _, after_map = load_model_with_sids(model_dir)
    assert not torch.equal(after.get_parameter(PARAM), saved.get_parameter(PARAM))  # trained
    assert after_map.content_hash == start_map.content_hash  # the SID map reused
    assert not (tmp_path / "inc" / "sids").exists()  # no SID build
    log = json.loads((tmp_path / "inc" / "train_log.json").read_text())
    assert "warmup" not in log  # the SID rows are trained already
    period = log["period"]
    assert period["new"] > 0 and period["replay"] == round(0.5 * period["new"])
    assert log["train_examples"] == period["new"] + period["replay"]
    resolved = json.loads((tmp_path / "inc" / "resolved_config.json").read_text())
    assert resolved["init_model_sid_map"] == start_map.content_hash


def test_init_model_refuses_data_with_items_its_sid_map_lacks(trained, tmp_path):
    from recllm.train.plum import run_plum

    start, _ = trained
    wider = write_data(tmp_path / "wider", 66)  # 6 items the model never got a code for
    out = tmp_path / "inc"
    with pytest.raises(UserError) as err:
        run_plum(*plum_configs(start, wider, out, "--init_model", str(start)))
    message = str(err.value)
    assert message.startswith(f"--init_model {start}: its SID map lacks 6 item(s) of the data")
    assert "recllm catalog add --model" in message
    assert not out.exists()  # refused before any write


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (("--sid_map", "x"), "--sid_map asks for other ones"),
        (("--init_weights", "random"), "--init_weights random asks for other ones"),
    ],
)
def test_init_model_refuses_flags_that_ask_for_other_weights_or_codes(
    trained, tmp_path, extra, expected
):
    from recllm.train.plum import run_plum

    start, data = trained
    with pytest.raises(UserError, match=expected):
        run_plum(*plum_configs(start, data, tmp_path / "o", "--init_model", str(start), *extra))


def test_replay_without_a_period_is_refused(base, tmp_path):
    from recllm.train.plum import run_plum

    data = write_data(tmp_path / "data", 60)
    with pytest.raises(UserError, match="add --train_since TIME"):
        run_plum(*plum_configs(base, data, tmp_path / "o", "--replay_ratio", "0.5"))


# -- --init_model in the seqlm recipe ---------------------------------------------------------


def seqlm_configs(data: Path, out: Path, *extra: str):
    from trl import SFTConfig

    from recllm.data import DataConfig
    from recllm.sid.config import SIDConfig
    from recllm.train.recipe_args import parse_recipe_args
    from recllm.train.seqlm import SeqLMArguments

    return parse_recipe_args(
        (SeqLMArguments, DataConfig, SIDConfig, SFTConfig),
        [
            *("--config", str(Path(__file__).resolve().parents[2] / "recipes" / "seqlm.yaml")),
            *("--data_path", str(data), "--max_users", "null", "--ensemble", "1"),
            *("--codebook_size", "4", "--hidden_size", "32", "--num_heads", "2"),
            *("--intermediate_size", "64", "--per_device_train_batch_size", "8"),
            *("--warmup_steps", "0", "--learning_rate", "3e-3", "--logging_steps", "1"),
            *("--time_budget_minutes", "null", "--valid_users", "0", "--max_steps", "2"),
            *("--output_dir", str(out), "--bf16", "false", *extra),
        ],
        prog="seqlm",
    )


def test_seqlm_init_model_starts_from_the_saved_decoder_on_a_period(tmp_path):
    from recllm.train.seqlm import run_seqlm

    run_seqlm = partial(run_seqlm, teacher_provider=run_teacher)  # the YAML's teacher

    data = write_data(tmp_path / "data", 60)
    first = run_seqlm(*seqlm_configs(data, tmp_path / "first")).model_dirs[0]
    saved, _, start_map = load_model_with_sids(first)
    snap = _Snapshot()
    configs = seqlm_configs(
        data,
        tmp_path / "inc",
        *("--init_model", str(first), "--train_since", "200", "--replay_ratio", "1"),
    )
    model_dir = run_seqlm(*configs, callbacks=[snap]).model_dirs[0]
    assert torch.equal(snap.before, saved.get_parameter(PARAM))
    after, _, after_map = load_model_with_sids(model_dir)
    assert not torch.equal(after.get_parameter(PARAM), saved.get_parameter(PARAM))
    assert after_map.content_hash == start_map.content_hash
    assert not (tmp_path / "inc" / "sids").exists()
    period = json.loads((tmp_path / "inc" / "train_log.json").read_text())["period"]
    assert period["new"] > 0 and period["replay"] == min(period["new"], period["replay_pool"])


def test_seqlm_init_model_refuses_unknown_items_and_a_chat_model(trained, tmp_path):
    from recllm.train.seqlm import run_seqlm

    run_seqlm = partial(run_seqlm, teacher_provider=run_teacher)  # the YAML's teacher

    chat_model, data = trained
    with pytest.raises(UserError, match="is a chat-prompted model"):
        run_seqlm(*seqlm_configs(data, tmp_path / "o", "--init_model", str(chat_model)))
    first = run_seqlm(*seqlm_configs(data, tmp_path / "first", "--max_steps", "1")).model_dirs[0]
    wider = write_data(tmp_path / "wider", 66)
    with pytest.raises(UserError, match=r"its SID map lacks 6 item.*recllm catalog add"):
        run_seqlm(*seqlm_configs(wider, tmp_path / "o2", "--init_model", str(first)))
    assert not (tmp_path / "o2").exists()
