"""The CLI faults of issue 29 item 7, each reproduced on a tiny recommender: a think-ahead prefix
file of one split used on another, ``--max-users 0`` meaning "everyone", chat's
``--allow-other-data``, and errors without their ``Fix`` part."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest

from recllm.cli import main
from recllm.testing import save_tiny_recommender

pytestmark = pytest.mark.usefixtures("torch_single_thread")

EVAL = ["--max-users", "3", "--beams", "2", "--k", "1,2"]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, Path]:
    """Two tiny recommenders over the same 60 item ids, with other interactions."""
    root = tmp_path_factory.mktemp("faults")
    return save_tiny_recommender(root / "a", seed=0), save_tiny_recommender(root / "b", seed=1)


def _last_error(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("recllm: error: ")]
    assert len(lines) == 1, err[-3000:]
    return lines[0]


# -- a prefix file made for one split is refused on another -----------------------------------


def _record(data_fields: dict, dataset, split: str) -> dict:
    """What `recllm think-ahead` records of its data: the split and the data's fingerprint."""
    from recllm.data import DataConfig, split_dataset
    from recllm.data.fingerprint import data_fingerprint

    parts = split_dataset(dataset, DataConfig(**data_fields))
    fingerprint = data_fingerprint(parts, dataset.catalog)
    return {"split": split, "data": data_fields, "data_fingerprint": fingerprint}


def _prefix_file(model: Path, path: Path, split: str | None, fingerprint: bool = True) -> Path:
    """A think-ahead file over ``split``'s users whose prefixes hold each user's target (what a
    reasoning model that saw the target would write), recorded as the writer records it."""
    from recllm.decode.prefixes import write_prefix_file
    from recllm.eval.run import eval_examples
    from recllm.sid.sidmap import SIDMap

    sid_map = SIDMap.load(model)
    data_fields, dataset, examples = eval_examples(model, None, split or "test", 0)
    record = _record(data_fields, dataset, split or "test")
    if split is None:
        del record["split"]
    if not fingerprint:
        del record["data_fingerprint"]
    sets = [[sid_map.code(ex.target)[:1]] for ex in examples]
    users = [ex.user_id for ex in examples]
    write_prefix_file(path, users, sets, sid_map_hash=sid_map.content_hash, record=record)
    return path


def test_the_prefix_file_record_holds_split_and_the_models_fingerprint(models):
    """What `recllm think-ahead` writes of its data: the split, and the fingerprint of the data
    the model records (the same data: the same fingerprint)."""
    from recllm.eval.run import eval_examples, prefix_file_record

    a, _ = models
    fields, dataset, _ = eval_examples(a, None, "valid", 0)
    record = prefix_file_record(fields, dataset, "valid")
    recorded = json.loads((a / "recllm_vocab.json").read_text())["recommender"]
    assert record["split"] == "valid" and record["data"] == fields
    assert record["data_fingerprint"] == recorded["data_fingerprint"]


def test_eval_refuses_a_prefix_file_of_another_split(models, tmp_path, capsys):
    """Issue 29: a file made for --split test ran on --split valid. The test histories hold the
    validation target, so the prefixes leak it."""
    a, _ = models
    made_for_test = _prefix_file(a, tmp_path / "test.parquet", "test")
    out = tmp_path / "valid"
    argv = ["eval", "--model", str(a), "--split", "valid", "--prefixes", str(made_for_test)]
    assert main([*argv, *EVAL, "--out", str(out)]) == 2
    assert _last_error(capsys.readouterr().err) == (
        f"recllm: error: --prefixes {made_for_test}: was made for the test split, this "
        "evaluation is of the valid split (the test histories hold the valid targets, so its "
        "prefixes would leak them). Fix: make a prefix file for this split with `recllm "
        f"think-ahead --split valid`, or evaluate with --split test"
    )
    assert not out.exists()
    # the control: the same file on its own split runs, restricted to the prefixes
    out = tmp_path / "test"
    argv = ["eval", "--model", str(a), "--split", "test", "--prefixes", str(made_for_test)]
    assert main([*argv, *EVAL, "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics["prefix_users"] == 3 and metrics["prefix_recall"] == 1.0


def test_eval_refuses_a_prefix_file_without_its_split(models, tmp_path, capsys):
    a, _ = models
    old = _prefix_file(a, tmp_path / "old.parquet", None)
    argv = ["eval", "--model", str(a), "--prefixes", str(old), *EVAL, "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    assert _last_error(capsys.readouterr().err) == (
        f"recllm: error: --prefixes {old}: records no split, so it may hold the targets of "
        "the evaluated users. Fix: make it again with `recllm think-ahead --split test`"
    )


def test_eval_refuses_a_prefix_file_of_other_data(models, tmp_path, capsys):
    """A prefix file of data b (same item ids, same SID map) used on data a."""
    a, b = models
    from recllm.decode.prefixes import write_prefix_file
    from recllm.eval.run import eval_examples
    from recllm.sid.sidmap import SIDMap

    sid_map = SIDMap.load(a)
    fields, dataset, examples = eval_examples(b, None, "test", 0)
    path = tmp_path / "b.parquet"
    write_prefix_file(
        path,
        [ex.user_id for ex in examples],
        [[sid_map.code(sid_map.item_ids[0])[:1]] for _ in examples],
        sid_map_hash=sid_map.content_hash,
        record=_record(fields, dataset, "test"),
    )
    argv = ["eval", "--model", str(a), "--prefixes", str(path), *EVAL, "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    line = _last_error(capsys.readouterr().err)
    assert line.startswith(f"recllm: error: --prefixes {path}: was made on other data than ")
    assert line.endswith("Fix: make it with `recllm think-ahead` on the data evaluated here")


def test_an_old_prefix_file_without_fingerprint_warns_and_runs(models, tmp_path, caplog):
    a, _ = models
    old = _prefix_file(a, tmp_path / "old.parquet", "test", fingerprint=False)
    argv = ["eval", "--model", str(a), "--prefixes", str(old), *EVAL, "--out", str(tmp_path / "o")]
    assert main(argv) == 0
    assert f"{old} records no data fingerprint" in caplog.text


# -- --max-users 0 -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "record"),
    [(["reason", "generate"], "rationales.json"), (["dialogue", "generate"], "dialogues.json")],
)
def test_max_users_zero_is_refused(models, tmp_path, capsys, command, record):
    """Issue 29: `--max-users 0` processed every user, exit 0."""
    data = models[0].parent / "data"
    argv = [*command, "--data", str(data), "--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--max-users", "0"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err == (
        "recllm: error: --max-users: expected an integer >= 1, got 0. Fix: see "
        f"`recllm {' '.join(command)} --help`\n"
    )
    assert not (tmp_path / "out").exists()
    # the control: 2 users are 2 users
    assert main([*argv, "--max-users", "2"]) == 0
    written = json.loads((tmp_path / "out" / record).read_text())
    assert written["data_fingerprint"]["users"] == 2


# -- chat --data of other data ---------------------------------------------------------------


def test_chat_accepts_allow_other_data_as_its_message_says(models, monkeypatch, capsys, caplog):
    """Issue 29: chat refused other data with "pass --allow-other-data", then refused that flag.
    Data b shares a's catalog but not its interactions: a's test user is checked against it."""
    from recllm.eval.run import eval_examples

    a, b = models
    other = b.parent / "data"
    user = eval_examples(b, None, "test", 1)[2][0].user_id
    argv = ["chat", "--model", str(a), "--data", str(other), "--user", user]
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(argv) == 2
    line = _last_error(capsys.readouterr().err)
    assert line.startswith(f"recllm: error: --data {other}: not the data {a} was trained on")
    assert line.endswith("or pass --allow-other-data to score it on this data anyway")
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main([*argv, "--allow-other-data"]) == 0
    history = len(eval_examples(b, None, "test", 0)[2][0].history)
    assert f"history: {history} items; k = 5" in capsys.readouterr().out
    assert "evaluating anyway (--allow-other-data)" in caplog.text


def test_playground_accepts_allow_other_data_as_its_message_says(models, capsys):
    """Issue 29, the same fault as chat's: the playground's data check names
    --allow-other-data, so the playground takes it (library and command line)."""
    from recllm.apps.playground import Playground
    from recllm.errors import UserError

    a, b = models
    other = b.parent / "data"
    with pytest.raises(UserError, match="--allow-other-data"):
        Playground.from_pretrained(a, data=str(other))
    pg = Playground.from_pretrained(a, data=str(other), allow_other_data=True)
    assert len(pg.users) > 0  # b's test users
    with pytest.raises(SystemExit):
        main(["playground", "--help"])
    assert "--allow-other-data" in capsys.readouterr().out


# -- errors with their Fix --------------------------------------------------------------------


def test_think_ahead_depth_beyond_the_sid_levels_names_the_fix(models, tmp_path, capsys):
    a, _ = models
    thinker = shutil.copytree(a, tmp_path / "thinker")
    record = json.loads((thinker / "recllm_vocab.json").read_text())
    record["recommender"]["think"] = {"task": "reason_rec"}
    (thinker / "recllm_vocab.json").write_text(json.dumps(record))
    out = tmp_path / "p.parquet"
    argv = ["think-ahead", "--model", str(thinker), "--engine", "hf", "--out", str(out)]
    assert main([*argv, "--depth", "4"]) == 2
    assert _last_error(capsys.readouterr().err) == (
        f"recllm: error: --depth 4: the SIDs of {thinker} have 3 levels. Fix: pass --depth "
        "1 to 3 (2, the default, restricts the first two levels)"
    )
    assert not out.exists()


def test_every_error_line_has_a_fix(models, tmp_path, capsys):
    """A library message without a Fix part (as `--depth` had: "depth must be in 1..3, got 4";
    here SIDConfig's) still ends the one error line with one."""
    data = models[0].parent / "data"
    argv = ["sid", "build", "--data", str(data), "--embedding", "lm", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        "recllm: error: --embedding lm needs --text-model (a path or name). Fix: check the "
        "flags and files it names (`recllm sid --help`); -v shows where it failed\n"
    )
    # the control: a message with its own Fix is left as it is
    assert main(["sid", "stats", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.count("Fix:") == 1
