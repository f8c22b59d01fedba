"""Task builders: golden rendered prompts, mixture arithmetic, training-split-only texts."""

from __future__ import annotations

import pytest

from recllm.data import Catalog, Example, Interactions, leave_one_out
from recllm.tasks import TaskBuilder, TaskConfig, TaskRenderer

CATALOG = Catalog(
    {
        "1": {"title": "Toy Story", "genre": "Animation"},
        "2": {"title": "Heat", "genre": "Action"},
        "3": {"title": "Fargo", "genre": "Crime"},
        "4": {"title": "Babe", "genre": ""},
        "5": {"title": "Clerks", "genre": "Comedy"},
    },
    ("title", "genre"),
)


def sid(item: str) -> str:
    return f"<|sid_begin|><a_{item}><b_0><|sid_end|>"


def builder(**cfg) -> TaskBuilder:
    return TaskBuilder(CATALOG, sid, TaskConfig(**cfg))


def test_rec_golden():
    row = next(builder().rec([Example("u", ("1", "2"), "3")]))
    assert row["prompt"] == [
        {
            "role": "user",
            "content": "A user interacted with these items, oldest first:\n"
            "<|sid_begin|><a_1><b_0><|sid_end|>\n"
            "<|sid_begin|><a_2><b_0><|sid_end|>\n"
            "Which item will the user interact with next? Answer with its semantic ID.",
        }
    ]
    assert row["completion"] == [
        {"role": "assistant", "content": "<|sid_begin|><a_3><b_0><|sid_end|>"}
    ]
    assert (row["task"], row["user_id"], row["target"]) == ("rec", "u", "3")


def test_rec_with_titles_golden():
    row = next(builder(rec_history_titles=True).rec([Example("u", ("1",), "3")]))
    assert (
        row["prompt"][0]["content"].splitlines()[1]
        == "<|sid_begin|><a_1><b_0><|sid_end|> Toy Story"
    )


def test_compact_history_golden_for_every_recommendation_template():
    """``rec_history_markers: false``: the history's code tokens back to back (no markers, no
    line per item), the answer still a marked SID; the same in the reasoning and session
    prompts. With titles, one item per line again."""
    b = builder(rec_history_markers=False, session_length=2)
    row = next(b.rec([Example("u", ("1", "2"), "3")]))
    assert row["prompt"][0]["content"] == (
        "A user interacted with these items, oldest first:\n<a_1><b_0><a_2><b_0>\n"
        "Which item will the user interact with next? Answer with its semantic ID."
    )
    assert row["completion"][0]["content"] == "<|sid_begin|><a_3><b_0><|sid_end|>"
    session = b.session_prompt(["1", "2"])[0]["content"].splitlines()
    assert session[1] == "<a_1><b_0><a_2><b_0>"
    reason = b.renderer.example(
        "reason_rec",
        history=[b.item("1")],
        target=b.item("2"),
        rationale="r",
        **b.history_style,
    )
    assert reason["prompt"][0]["content"].splitlines()[1:3] == [
        "<a_1><b_0>",
        "Which item will the user interact with next? Think about the user's tastes first, "
        "then answer with its semantic ID.",
    ]
    titled = builder(rec_history_markers=False, rec_history_titles=True)
    lines = next(titled.rec([Example("u", ("1", "2"), "3")]))["prompt"][0]["content"]
    assert lines.splitlines()[1:3] == ["<a_1><b_0> Toy Story", "<a_2><b_0> Heat"]


def test_behaviour_golden():
    split = leave_one_out(Interactions({"u": ["1", "2", "3", "4", "5", "1"]}))  # train: 1 2 3 4
    rows = list(builder().behaviour(split))
    assert len(rows) == 1
    assert rows[0]["prompt"][0]["content"] == (
        "Here is the beginning of a user's history, oldest first, each item as its semantic ID "
        "and title:\n<|sid_begin|><a_1><b_0><|sid_end|> Toy Story\n"
        "<|sid_begin|><a_2><b_0><|sid_end|> Heat\nContinue the history."
    )
    assert rows[0]["completion"][0]["content"] == (
        "<|sid_begin|><a_3><b_0><|sid_end|> Fargo\n<|sid_begin|><a_4><b_0><|sid_end|> Babe"
    )


def test_catalog_golden():
    b = builder()
    r1 = next(b.catalog_task("catalog_sid_to_title"))
    assert (
        r1["prompt"][0]["content"]
        == "What is the title of the item with semantic ID <|sid_begin|><a_1><b_0><|sid_end|>?"
    )
    assert r1["completion"][0]["content"] == "Toy Story"
    r2 = next(b.catalog_task("catalog_title_to_sid"))
    assert r2["prompt"][0]["content"] == 'What is the semantic ID of the item titled "Toy Story"?'
    assert r2["completion"][0]["content"] == "<|sid_begin|><a_1><b_0><|sid_end|>"
    r3 = list(b.catalog_task("catalog_sid_to_text"))[3]
    assert r3["completion"][0]["content"] == "title: Babe"


def test_training_texts_use_training_interactions_only():
    seqs = {"u": ["1", "2", "3", "4", "5"], "v": ["2", "3", "4"]}
    split = leave_one_out(Interactions(seqs))  # train u: 1 2 3 ; v: 2
    b = builder(mixture={"rec": 1.0, "behaviour": 1.0})
    rows = b.train_rows(split)
    held_out = {"4", "5"}  # u's valid/test targets; v's are 3 and 4
    texts = " ".join(r["prompt"][0]["content"] + r["completion"][0]["content"] for r in rows)
    assert "<a_5>" not in texts and "Clerks" not in texts
    rec_targets = sorted(r["target"] for r in rows if r["task"] == "rec")
    assert rec_targets == ["2", "3"]  # u: 1->2, 1 2->3 ; v has a single training item
    assert not held_out & {r["target"] for r in rows}


def test_mixture_multipliers_exact():
    split = leave_one_out(Interactions({"u": ["1", "2", "3", "4", "5"]}))
    rows = builder(
        mixture={"catalog_sid_to_title": 2.0, "catalog_title_to_sid": 0.4, "rec": 0.0}
    ).train_rows(split)
    counts = {t: sum(r["task"] == t for r in rows) for t in {r["task"] for r in rows}}
    assert counts == {"catalog_sid_to_title": 10, "catalog_title_to_sid": 2}
    again = builder(
        mixture={"catalog_sid_to_title": 2.0, "catalog_title_to_sid": 0.4, "rec": 0.0}
    ).train_rows(split)
    assert rows == again  # seeded


def test_build_datasets():
    split = leave_one_out(Interactions({"u": ["1", "2", "3", "4", "5"], "v": ["5", "4", "3"]}))
    dd = builder().build(split)
    assert set(dd) == {"train", "valid", "test"}
    assert dd["test"]["target"] == ["5", "3"] and dd["valid"]["target"] == ["4", "4"]
    assert dd["test"][0]["prompt"][0]["content"].count("<|sid_begin|>") == 4


def test_missing_template_and_blocks(tmp_path):
    (tmp_path / "rec.jinja").write_text("{% block user %}hi{% endblock %}")
    r = TaskRenderer(tmp_path)
    with pytest.raises(ValueError, match=r"missing block\(s\) \['assistant'\]"):
        r.render("rec")
    with pytest.raises(FileNotFoundError, match="no template for task 'behaviour'"):
        r.render("behaviour")


def test_undefined_variable_fails_loudly(tmp_path):
    (tmp_path / "rec.jinja").write_text(
        "{% block user %}{{ nope }}{% endblock %}{% block assistant %}x{% endblock %}"
    )
    with pytest.raises(Exception, match="'nope' is undefined"):
        TaskRenderer(tmp_path).render("rec")


def test_unknown_task_in_mixture():
    with pytest.raises(ValueError, match="unknown task"):
        TaskConfig(mixture={"rek": 1.0})
