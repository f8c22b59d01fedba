"""The session task (issue 32 item 2): history -> the next N items as N SID spans in one answer,
for chat models (rec_session) and the SID-sequence decoder (windows of max_items + N items);
built from training interactions only (with the control that builds from full sequences)."""

from __future__ import annotations

import dataclasses
import re

import pytest

from recllm.data import Catalog, Interactions
from recllm.data.splits import next_session_split
from recllm.sid.sidmap import SIDMap
from recllm.tasks import TaskBuilder, TaskConfig
from recllm.tasks.sequence import history_text, training_windows
from recllm.vocab import SID_FORMAT

N = 3
SEQS = {f"u{u}": [f"u{u}i{k}" for k in range(8 + 2 * u)] for u in range(4)}  # unique items
ITEMS = sorted({i for s in SEQS.values() for i in s})


def _builder(items=ITEMS, **task) -> TaskBuilder:
    catalog = Catalog({i: {"title": f"title {i}"} for i in items}, ("title",))
    return TaskBuilder(catalog, lambda i: f"<{i}>", TaskConfig(session_length=N, **task))


def _split():
    return next_session_split(Interactions(SEQS), session_length=N, max_history=4)


def _held_out(split) -> set[str]:
    return {i for s in split.valid_sessions + split.test_sessions for i in s.session}


def test_rec_session_row_exact():
    items = [f"i{k}" for k in range(11)]
    split = next_session_split(Interactions({"u": items[:8]}), N, 2)
    rows = list(_builder(items).rec_session(split))  # training part i0, i1: no room for 3 more
    assert rows == []
    split = next_session_split(Interactions({"u": items}), N, 2)
    rows = list(_builder(items).rec_session(split))  # training part i0..i4
    assert [r["target"] for r in rows] == ["i1", "i2"]
    assert rows[1]["prompt"][0]["content"] == (
        "A user interacted with these items, oldest first:\n<i0>\n<i1>\n"
        "Which 3 items will the user interact with next? Answer with their semantic IDs, in order."
    )
    assert rows[1]["completion"][0]["content"] == "<i2><i3><i4>"  # N spans, one answer
    assert rows[1]["task"] == "rec_session" and rows[1]["user_id"] == "u"


def test_session_prompt_is_the_rows_prompt():
    items = [f"i{k}" for k in range(11)]
    split = next_session_split(Interactions({"u": items}), N, 2)
    builder = _builder(items)
    row = list(builder.rec_session(split))[-1]
    assert builder.session_prompt(["i0", "i1"]) == row["prompt"]


def test_rec_session_answer_holds_real_sid_spans():
    catalog = Catalog({i: {"title": i} for i in ITEMS}, ("title",))
    smap = SIDMap(ITEMS, [[k % 4, k // 4] for k in range(len(ITEMS))], (4, 16))
    builder = TaskBuilder(
        catalog, lambda i: SID_FORMAT.render(smap.code(i)), TaskConfig(session_length=N)
    )
    row = next(builder.rec_session(_split()))
    answer = row["completion"][0]["content"]
    spans = re.findall(re.escape(SID_FORMAT.begin) + ".*?" + re.escape(SID_FORMAT.end), answer)
    assert len(spans) == N and "".join(spans) == answer  # back to back, nothing between


def test_rec_session_rows_hold_no_valid_or_test_item():
    split = _split()
    held = _held_out(split)
    assert len(held) == 2 * N * len(SEQS)

    def leaked(rows) -> set[str]:
        text = " ".join(r["prompt"][0]["content"] + r["completion"][0]["content"] for r in rows)
        return {i for i in held if f"<{i}>" in text}

    rows = list(_builder().rec_session(split))
    assert len(rows) == sum(max(0, len(s) - 3 * N) for s in SEQS.values())
    assert leaked(rows) == set()
    # control: the same builder on the full sequences puts every held-out item in some row
    full = dataclasses.replace(split, train=Interactions(SEQS))
    assert leaked(_builder().rec_session(full)) == held


def test_mixture_weight_turns_the_task_on():
    split = _split()
    off = _builder().train_rows(split)  # the default mixture: rec_session 0
    assert not any(r["task"] == "rec_session" for r in off)
    on = _builder(mixture={"rec_session": 1.0}).train_rows(split)
    assert {r["task"] for r in on} == {"rec_session"}
    assert len(on) == len(list(_builder().rec_session(split)))
    assert TaskConfig().mixture["rec_session"] == 0.0 and TaskConfig().session_length == 5
    with pytest.raises(ValueError, match="session_length"):
        TaskConfig(session_length=0)


def test_sequence_session_windows_from_train_only():
    split = _split()
    held = _held_out(split)
    windows = training_windows(split, max_items=2, session_length=N)
    assert max(len(w) for _, w in windows) == 2 + N
    for user, window in windows:
        seq = split.train.sequences[user]
        assert not set(window) & held
        assert window == seq[seq.index(window[0]) : seq.index(window[0]) + len(window)]
    # every training item after a user's first is a target in exactly one window
    assert sum(len(w) - 1 for _, w in windows) == sum(
        len(s) - 1 for s in split.train.sequences.values()
    )
    # session_length 1 is the next-item windows of max_items + 1 items
    assert max(len(w) for _, w in training_windows(split, 2)) == 3
    # control: windows of the full sequences hold the held-out items
    full = dataclasses.replace(split, train=Interactions(SEQS))
    assert {i for _, w in training_windows(full, 2, N) for i in w} >= held


def test_sequence_session_text_is_sid_spans():
    split = _split()
    smap = SIDMap(ITEMS, [[k % 4, k // 4] for k in range(len(ITEMS))], (4, 16))
    user, window = max(training_windows(split, 2, N), key=lambda uw: len(uw[1]))
    assert len(window) == 2 + N and window[-1] == split.train.sequences[user][-1]
    text = history_text(window, smap, None)
    assert text.count(SID_FORMAT.begin) == 2 + N
