"""The dialogue task (recllm.tasks.dialogue): golden turns, steering that is true of the pick,
training-split-only targets, determinism across processes, and the reply's SID-then-newline
shape that ranking relies on (real Qwen3 tokenizer)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from recllm.data import Catalog, Interactions, leave_one_out
from recllm.tasks import TaskBuilder, TaskConfig
from recllm.tasks.dialogue import (
    Conversation,
    DialogueTurn,
    Steer,
    build_conversations,
    conversation_messages,
    dialogue_prompt,
    item_tags,
    reply_stop_token,
)

CATALOG = Catalog(
    {
        "1": {"title": "Toy Story", "genre": "Animation Children", "year": "1995"},
        "2": {"title": "Heat", "genre": "Action Crime", "year": "1995"},
        "3": {"title": "Fargo", "genre": "Crime Comedy", "year": "1996"},
        "4": {"title": "Babe", "genre": "Comedy", "year": "1995"},
        "5": {"title": "Clerks", "genre": "Comedy", "year": "1994"},
        "6": {"title": "Scream", "genre": "Horror", "year": "1996"},
    },
    ("title", "genre", "year"),
)


def sid(item: str) -> str:
    return f"<|sid_begin|><a_{item}><b_0><|sid_end|>"


def builder(**cfg) -> TaskBuilder:
    return TaskBuilder(CATALOG, sid, TaskConfig(**cfg))


#: A mixture of the dialogue task alone.
DIALOGUE_ONLY = {
    "dialogue": 1.0,
    "rec": 0.0,
    "behaviour": 0.0,
    "catalog_sid_to_title": 0.0,
    "catalog_title_to_sid": 0.0,
}


def test_facets_and_labels():
    b = builder(facet_labels={"genre": "genre", "year": "year"})
    assert [(f.name, f.splitter) for f in b.facets()] == [("genre", "words"), ("year", "whole")]
    tags = item_tags(CATALOG, b.facets(), "3")
    assert [(s.facet, s.tag) for s in tags] == [
        ("genre", "Crime"),
        ("genre", "Comedy"),
        ("year", "1996"),
    ]


def test_golden_two_turn_conversation():
    b = builder(facet_labels={"genre": "genre"})
    conv = Conversation(
        "u",
        ("1", "2", "4"),
        (
            DialogueTurn("open", "5", steer=Steer("genre", "genre", "Comedy")),
            DialogueTurn("more", "3", like="2", steer=Steer("genre", "genre", "Comedy")),
        ),
    )
    messages = conversation_messages(b, conv)
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[0]["content"] == (
        "Here are items I liked, oldest first:\n"
        f"{sid('1')} Toy Story\n{sid('2')} Heat\n{sid('4')} Babe\n"
        "Can you suggest something with genre Comedy?"
    )
    # the asked-for tag is said once; no other tag of Clerks is shared by 2 history items
    assert messages[1]["content"] == f"{sid('5')}\nClerks: it has the genre Comedy you asked for."
    assert messages[2]["content"] == (
        "Thanks. I'd like something like Heat, but with genre Comedy."
    )
    # reasons count what the user has seen, Clerks included: Crime in Heat only (1) is not
    # enough; Comedy is the steer
    assert messages[3]["content"] == f"{sid('3')}\nFargo: it has the genre Comedy you asked for."
    plain = conversation_messages(
        b, Conversation("u", ("1", "4", "5"), (DialogueTurn("open", "3"),))
    )
    assert plain[0]["content"].endswith(f"{sid('5')} Clerks\nWhat should I try next?")
    assert plain[1]["content"] == f"{sid('3')}\nFargo: genre Comedy as in 2 of your items."


def test_teacher_words_replace_the_built_ones():
    b = builder()
    conv = Conversation(
        "u",
        ("1",),
        (DialogueTurn("open", "4", text="Something light, please.", note="A gentle farm comedy."),),
    )
    user, assistant = (m["content"] for m in conversation_messages(b, conv))
    assert user.endswith(f"{sid('1')} Toy Story\nSomething light, please.")
    assert assistant == f"{sid('4')}\nBabe: A gentle farm comedy."


def test_conversations_steer_truthfully_and_use_training_items_only():
    seqs = {f"u{n}": [str(1 + (n + k) % 6) for k in range(7)] for n in range(12)}
    split = leave_one_out(Interactions(seqs))
    convs = build_conversations(split, CATALOG, per_user=3, max_turns=2, steer_share=1.0)
    assert len(convs) == 12 * 3
    facets = builder().facets()
    kinds = set()
    for conv in convs:
        train = split.train.sequences[conv.user_id]
        t = len(conv.history)
        assert list(conv.history) == train[:t]  # a prefix of the training sequence
        for j, turn in enumerate(conv.turns):
            assert turn.pick == train[t + j]  # the next training items, never valid/test
            assert turn.kind == ("open" if j == 0 else "more")
            tags = {(s.facet, s.tag) for s in item_tags(CATALOG, facets, turn.pick)}
            if turn.steer is not None:
                assert (turn.steer.facet, turn.steer.tag) in tags  # steering says the truth
            if turn.like is not None:
                assert turn.like in (*conv.history, *(x.pick for x in conv.turns[:j]))
                like_tags = {(s.facet, s.tag) for s in item_tags(CATALOG, facets, turn.like)}
                assert like_tags & tags  # "like X": X shares a facet with the pick
                if turn.steer is not None:
                    assert (turn.steer.facet, turn.steer.tag) not in like_tags  # "but with"
            kinds.add("like" if turn.like else "steer" if turn.steer else "plain")
    assert kinds == {"like", "steer"}  # steer_share=1: every turn steers, both ways occur
    none = build_conversations(split, CATALOG, per_user=3, steer_share=0.0)
    assert all(t.steer is None and t.like is None for c in none for t in c.turns)


def test_rows_in_the_mixture():
    seqs = {f"u{n}": [str(1 + (n + k) % 6) for k in range(5)] for n in range(4)}
    split = leave_one_out(Interactions(seqs))
    b = builder(mixture=DIALOGUE_ONLY)
    rows = b.train_rows(split)
    # per user: train = 3 items -> positions 1, 2 -> conversations of 2 and 1 turns -> 3 rows
    assert len(rows) == 4 * 3 and {r["task"] for r in rows} == {"dialogue"}
    for r in rows:
        roles = [m["role"] for m in r["prompt"]]
        assert roles == ["user", "assistant", "user"][: len(roles)] and roles[-1] == "user"
        assert r["completion"][0]["content"].startswith(sid(r["target"]) + "\n")


def _conversations_json(seed: str) -> str:
    code = (
        "import json; from tests.tasks.test_dialogue import CATALOG; "
        "from recllm.data import Interactions, leave_one_out; "
        "from recllm.tasks.dialogue import build_conversations; "
        "seqs = {f'u{n}': [str(1 + (n * 5 + k) % 6) for k in range(8)] for n in range(20)}; "
        "c = build_conversations(leave_one_out(Interactions(seqs)), CATALOG, per_user=2); "
        "print(json.dumps([x.to_dict() for x in c], sort_keys=True))"
    )
    env = {**os.environ, "PYTHONHASHSEED": seed}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    return out.stdout


def test_deterministic_across_processes():
    """Same data and seed -> the same conversations in processes with different string hashing
    (set order differs between them)."""
    a, b = _conversations_json("1"), _conversations_json("2")
    assert a == b and len(json.loads(a)) == 40
    restored = [Conversation.from_dict(d) for d in json.loads(a)]
    assert [c.to_dict() for c in restored] == json.loads(a)


def test_dialogue_prompt_asks_for_the_next_pick():
    b = builder()
    first = dialogue_prompt(b, ("1", "2"), request=DialogueTurn("open", "", text="Anything funny?"))
    assert [m["role"] for m in first] == ["user"]
    assert first[0]["content"].endswith(f"{sid('2')} Heat\nAnything funny?")
    later = dialogue_prompt(
        b,
        ("1", "2"),
        turns=[DialogueTurn("open", "4")],
        request=DialogueTurn("more", "", steer=Steer("genre", "genre", "Horror")),
    )
    assert [m["role"] for m in later] == ["user", "assistant", "user"]
    assert later[1]["content"].startswith(sid("4") + "\nBabe")
    assert later[2]["content"] == "Thanks. Can you suggest something with genre Horror?"


@pytest.mark.parametrize("which", ["tiny", "qwen3"])
def test_reply_sid_span_is_followed_by_the_newline_token(which, tiny_tokenizer, request):
    """Ranking a reply's SID span stops at the token after it: that must be the one new-line
    token whatever title follows, in the tokenizer a real model uses (SID tokens added as
    recllm.vocab.extend_vocab adds them)."""
    import copy

    from tokenizers import AddedToken

    from recllm.vocab import SID_FORMAT

    base = tiny_tokenizer if which == "tiny" else request.getfixturevalue("qwen3_tokenizer")
    tok = copy.deepcopy(base)
    sizes = (2, 2)
    tok.add_tokens(
        [AddedToken(t, special=False, normalized=False) for t in SID_FORMAT.tokens(sizes)]
    )
    newline = reply_stop_token(tok)
    ids = SID_FORMAT.token_ids(tok, sizes)
    for title in ("Toy Story", "(500) Days of Summer", "  spaced", "\tTabbed", "Émile", "1984"):
        text = SID_FORMAT.render((0, 1)) + "\n" + title + ": why."
        enc = tok(text, add_special_tokens=False)["input_ids"]
        at = enc.index(ids.end_id)
        assert enc[at + 1] == newline, (title, tok.convert_ids_to_tokens(enc[: at + 3]))


def test_cli_writes_the_conversations_the_builder_makes(tmp_path):
    """`recllm dialogue generate --source metadata`: the dataset holds exactly the
    conversations of build_conversations on the model's split, facet labels from the flag."""
    from recllm.cli import main
    from recllm.data import load_rec_dataset, split_dataset
    from recllm.data.config import DataConfig
    from recllm.tasks.dialogue import load_dialogues
    from recllm.tasks.prompting import PromptSpec
    from recllm.testing import save_tiny_recommender

    model = save_tiny_recommender(tmp_path / "tiny", dialogue=True)
    out = tmp_path / "dlg"
    argv = ["dialogue", "generate", "--model-dir", str(model), "--per-user", "2", "--out", str(out)]
    assert main([*argv, "--facet-labels", "genre=kind"]) == 0
    convs, record = load_dialogues(out)
    cfg = DataConfig(**PromptSpec.from_model_dir(model).data)
    data = load_rec_dataset(config=cfg)
    labelled = TaskBuilder(data.catalog, str, TaskConfig(facet_labels={"genre": "kind"}))
    want = build_conversations(
        split_dataset(data, cfg), data.catalog, per_user=2, facets=labelled.facets()
    )
    assert [c.to_dict() for c in convs] == [c.to_dict() for c in want]
    assert record["settings"]["facet_labels"] == {"genre": "kind"}
    assert record["conversations"] == len(want) and record["source"] == "metadata"
    assert main(argv) == 2  # the output exists: refused without --overwrite


def test_training_refuses_conversations_of_other_data(tmp_path):
    from recllm.errors import UserError
    from recllm.tasks.dialogue import write_dialogues
    from recllm.train.plum import _load_dialogues

    seqs = {f"u{n}": [str(1 + (n + k) % 6) for k in range(5)] for n in range(4)}
    split = leave_one_out(Interactions(seqs))
    convs = build_conversations(split, CATALOG)
    write_dialogues(convs, tmp_path / "d", {"data_fingerprint": {"other": 1}}, source="metadata")
    with pytest.raises(UserError, match="was made from other data than this run's"):
        _load_dialogues(str(tmp_path / "d"), split, CATALOG)


def test_given_conversations_replace_the_built_ones(tmp_path):
    """--dialogues DIR: the training rows are the dataset's conversations (teacher words kept)."""
    from recllm.tasks.dialogue import load_dialogues, write_dialogues

    seqs = {f"u{n}": [str(1 + (n + k) % 6) for k in range(5)] for n in range(4)}
    split = leave_one_out(Interactions(seqs))
    conv = Conversation("u1", ("1", "2"), (DialogueTurn("open", "3", text="Got any crime?"),))
    write_dialogues([conv], tmp_path / "d", {}, source="teacher", teacher="t")
    b = builder(mixture=DIALOGUE_ONLY)
    b.dialogues, _ = load_dialogues(tmp_path / "d")
    rows = b.train_rows(split)
    assert len(rows) == 1 and rows[0]["prompt"][0]["content"].endswith("Heat\nGot any crime?")
    assert rows[0]["completion"][0]["content"].startswith(sid("3") + "\nFargo")
