"""``recllm recommend`` (issue 32, "the CLI" entry of item 3) on a tiny recommender: its slates
and rankings equal :class:`Recommender`'s for the same input (items, order and scores), in JSON
and as a table, and bad input is one line naming the flag and the fix, before the model loads."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from recllm.apps.recommender import Recommender
from recllm.cli import main
from recllm.cli.recommend import user_history
from recllm.testing import save_tiny_recommender
from recllm.vocab import SID_FORMAT

pytestmark = pytest.mark.usefixtures("torch_single_thread")

HISTORY = ["item3", "item7"]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_recommender(tmp_path_factory.mktemp("rec") / "tiny", seed=0)


@pytest.fixture(scope="module")
def rec(model: Path) -> Recommender:
    return Recommender.from_pretrained(model, engine="hf", max_k=60)


def _run(capsys, model: Path, *flags: str) -> dict:
    capsys.readouterr()
    assert main(["recommend", "--model", str(model), "--json", *flags]) == 0
    return json.loads(capsys.readouterr().out)


def _same(got: list[dict], want, rec: Recommender) -> None:
    assert [r["item_id"] for r in got] == [r.item_id for r in want]
    assert [r["position"] for r in got] == list(range(1, len(want) + 1))
    assert [r["title"] for r in got] == [r.title for r in want]
    assert [r["score"] for r in got] == pytest.approx([r.score for r in want], abs=1e-5)
    sids = [SID_FORMAT.render(rec.sid_map.code(r.item_id)) for r in want]
    assert [r["sid"] for r in got] == sids


@pytest.mark.parametrize(
    ("flags", "kwargs"),
    [
        (["--slate", "5"], {"n": 5}),
        (
            ["--slate", "4", "--exclude-history", "--beams", "6"],
            dict(n=4, exclude_history=True, num_beams=6),
        ),
        (
            ["--slate", "5", "--slate-mode", "greedy", "--exclude", "item6"],
            dict(n=5, mode="greedy", exclude=["item6"]),
        ),
        (
            ["--slate", "3", "--slate-mode", "sample", "--seed", "4", "--temperature", "2"],
            dict(n=3, mode="sample", seed=4, temperature=2.0),
        ),
        (["--slate", "5", "--slate-spread"], dict(n=5, spread=True)),
        (["--slate", "5", "--slate-diversity-penalty", "2"], dict(n=5, diversity_penalty=2.0)),
    ],
)
def test_cli_slate_equals_recommend_slate(capsys, model: Path, rec: Recommender, flags, kwargs):
    got = _run(capsys, model, "--history", ",".join(HISTORY), *flags)
    want = rec.recommend_slate(HISTORY, **{"seed": 0, **kwargs})
    assert got["object"] == "slate" and got["n"] == kwargs["n"]
    assert got["mode"] == kwargs.get("mode", "beam") and got["history"] == HISTORY
    assert got["score"] == pytest.approx(want.score, abs=1e-5)
    _same(got["items"], want.items, rec)
    ids = [r["item_id"] for r in got["items"]]
    assert len(set(ids)) == kwargs["n"]
    if kwargs.get("exclude_history"):
        assert not set(ids) & set(HISTORY)
    if kwargs.get("spread"):  # each item under its own first code; the plain slate is not
        firsts = [rec.sid_map.code(i)[0] for i in ids]
        assert len(set(firsts)) == len(firsts)
        plain = rec.recommend_slate(HISTORY, n=5)
        assert len({rec.sid_map.code(r.item_id)[0] for r in plain.items}) < 5
    if kwargs.get("diversity_penalty"):
        assert got["diversity_penalty"] == kwargs["diversity_penalty"]


def test_cli_ranking_and_table(capsys, model: Path, rec: Recommender):
    got = _run(capsys, model, "--history", "item3", "item7", "--k", "4")  # space-separated too
    assert got["object"] == "ranking" and got["k"] == 4
    _same(got["items"], rec.recommend(HISTORY, 4), rec)
    # the table: a header, one row per item in answer order, the joint log-prob under it
    assert (
        main(["recommend", "--model", str(model), "--history", "item3,item7", "--slate", "3"]) == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    slate = rec.recommend_slate(HISTORY, 3)
    assert lines[0].split() == ["#", "item", "title", "SID", "score"]
    for n, (line, r) in enumerate(zip(lines[1:4], slate.items, strict=True), 1):
        sid = SID_FORMAT.render(rec.sid_map.code(r.item_id))
        assert line.split() == [str(n), r.item_id, *r.title.split(), sid, f"{r.score:.4f}"]
    assert lines[4] == f"slate of 3 distinct items (beam): joint log-prob {slate.score:.4f}"


def test_cli_user_history(capsys, model: Path, rec: Recommender):
    history = user_history(str(model), None, "u3")
    got = _run(capsys, model, "--user", "u3", "--slate", "4", "--exclude-history")
    assert got["history"] == history
    want = rec.recommend_slate(history, 4, exclude_history=True)
    _same(got["items"], want.items, rec)


@pytest.mark.parametrize(
    ("flags", "line"),
    [
        (["--history", "item3,ghost", "--slate", "3"], "--history: unknown item ids ['ghost']"),
        (
            ["--history", "item3", "--slate", "61"],
            "--slate 61: asks for more items than the catalog's 60. Fix: ask for --slate <= 60",
        ),
        (["--history", "item3", "--k", "61"], "--k 61: asks for more items than the catalog's 60"),
        (
            ["--history", "item3", "--allow", "item1,item2", "--slate", "3"],
            "--slate 3: only 2 items are left after",
        ),
        (
            ["--history", "item3", "--exclude", "nope", "--slate", "3"],
            "--exclude: unknown item ids ['nope']",
        ),
        (
            ["--history", "item3", "--slate", "3", "--slate-mode", "sample", "--engine", "vllm"],
            "--slate-mode sample: sampled slates run on the transformers engine only",
        ),
        (
            ["--history", "item3", "--slate-mode", "greedy"],
            "--slate-mode: applies to slates only. Fix: add --slate N",
        ),
        (["--history", "item3", "--k", "3", "--slate", "3"], "--k 3: a slate's size is --slate N"),
        (["--slate", "3"], "--history / --user: no history to recommend from. Fix: pass --history"),
        (["--user", "nobody", "--slate", "3"], "--user nobody: is not a test user"),
        (["--history", "item3", "--slate", "0"], "--slate: expected an integer >= 1, got 0"),
    ],
)
def test_bad_input_is_one_line_naming_the_flag(capsys, caplog, model: Path, flags, line):
    caplog.set_level(logging.INFO)
    capsys.readouterr()
    try:
        code = main(["recommend", "--model", str(model), *flags])
    except SystemExit as e:  # argparse's own refusal of a value
        code = e.code
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if ln.startswith("recllm: error: ")]
    assert code == 2 and len(errors) == 1, err[-2000:]
    assert errors[0].startswith(f"recllm: error: {line}") and "Fix: " in errors[0], errors[0]
    assert not [r for r in caplog.records if "Loaded model" in r.getMessage()]  # before loading


def test_the_load_is_logged(caplog, capsys, model: Path):
    """Control of the check above: a good request logs the model's load."""
    caplog.set_level(logging.INFO)
    _run(capsys, model, "--history", "item3", "--slate", "2")
    assert [r for r in caplog.records if "Loaded model" in r.getMessage()]
