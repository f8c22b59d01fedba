"""Chat sessions (recllm.apps.chat) and free text with SID spans (recllm.decode.text), on tiny
random recommenders built here: picks are catalog items ranked exactly as a reply's SID span
scores, the reply names the top pick, spans resolve, and the span constraint has a control."""

from __future__ import annotations

import pytest
import torch

from recllm.apps.chat import ChatSession
from recllm.apps.recommender import Recommender
from recllm.decode.text import generate_text, resolve_spans
from recllm.tasks.dialogue import reply_stop_token
from recllm.testing import save_tiny_recommender
from recllm.vocab import SID_FORMAT

pytestmark = pytest.mark.usefixtures("torch_single_thread")


@pytest.fixture(scope="module")
def talk(tmp_path_factory: pytest.TempPathFactory) -> Recommender:
    model_dir = save_tiny_recommender(tmp_path_factory.mktemp("dlg") / "tiny", dialogue=True)
    return Recommender.from_pretrained(model_dir, engine="hf")


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Recommender:
    model_dir = save_tiny_recommender(tmp_path_factory.mktemp("plain") / "tiny", seed=1)
    return Recommender.from_pretrained(model_dir, engine="hf")


def _brute_force(rec: Recommender, prompt: list[dict], stop: int, k: int) -> list[str]:
    """Every catalog item scored as the reply's first tokens: log p(SID span + stop token |
    prompt), one forward pass per item; the best k."""
    from recllm.decode import encode_prompts

    ids = encode_prompts(rec.tokenizer, [prompt])[0]
    token_ids = SID_FORMAT.token_ids(rec.tokenizer, rec.sid_map.codebook_sizes)
    scores = {}
    with torch.no_grad():
        for item in rec.sid_map.item_ids:
            answer = [*token_ids.encode(rec.sid_map.code(item)), stop]
            full = torch.tensor([ids + answer])
            logp = rec.backend(input_ids=full).logits[0].float().log_softmax(-1)
            pos = range(len(ids) - 1, len(ids) - 1 + len(answer))
            scores[item] = sum(float(logp[p, t]) for p, t in zip(pos, answer, strict=True))
    return sorted(scores, key=lambda i: -scores[i])[:k]


def test_dialogue_turns_rank_the_reply_span_and_name_the_top_pick(talk: Recommender):
    chat = ChatSession(talk, ["item3", "item7", "item12"], k=5)
    assert chat.dialogue
    first = chat.ask("Something with genre Horror, please.")
    assert first.mode == "dialogue" and len(first.picks) == 5
    assert len({p.item_id for p in first.picks}) == 5
    assert all(p.item_id in talk.sid_map for p in first.picks)
    # the reply opens with the top pick's SID span and a new line; the span resolves exactly
    top = first.picks[0].item_id
    # then the pick's catalog title, as training wrote it (the model's words follow)
    assert first.reply.startswith(
        SID_FORMAT.render(talk.sid_map.code(top)) + "\n" + talk.catalog.title(top)
    )
    assert first.spans[0].match == "exact" and first.spans[0].item_id == top
    assert all(s.match == "exact" for s in first.spans)  # any span it wrote is a catalog SID
    prompt = chat.messages[:1]
    assert prompt[0]["content"].endswith("movie 12\nSomething with genre Horror, please.")
    # ranked as the reply's first tokens score: SID span + new line (exhaustive search)
    stop = reply_stop_token(talk.tokenizer)
    wide = talk.recommend_prompts([prompt], 5, num_beams=len(talk.sid_map), stop_token_id=stop)
    assert [p.item_id for p in wide[0]] == _brute_force(talk, prompt, stop, 5)
    # a second turn continues the talk: user, assistant, then the new request
    second = chat.ask("Another one?")
    assert [m["role"] for m in chat.messages] == ["user", "assistant"] * 2
    assert chat.messages[2]["content"] == "Another one?"
    assert second.mode == "dialogue" and second.picks


def test_accept_grows_the_history_and_opens_a_new_talk(talk: Recommender):
    chat = ChatSession(talk, ["item1"], k=3)
    with pytest.raises(ValueError, match="nothing to accept yet"):
        chat.accept(1)
    reply = chat.ask("")
    item = chat.accept(2)
    assert item == reply.picks[1].item_id and chat.history == ["item1", item]
    assert chat.messages == []  # the next ask opens with the grown history
    assert item not in [p.item_id for p in chat.ask("again").picks]  # never a seen item
    with pytest.raises(ValueError, match="pick 4 does not exist; Fix: choose 1 to 3"):
        chat.accept(4)
    chat.ask("more")
    assert "movie 1\n" in chat.messages[0]["content"]
    assert talk.catalog.title(item) in chat.messages[0]["content"]


def test_bad_requests_are_clear(talk: Recommender, plain: Recommender):
    chat = ChatSession(talk, k=3)
    with pytest.raises(ValueError, match="the history is empty; Fix"):
        chat.ask("hello")
    with pytest.raises(ValueError, match="unknown item ids"):
        chat.add("no-such-item")
    with pytest.raises(ValueError, match="k must be an integer from 1 to"):
        chat.set_k(0)
    with pytest.raises(ValueError, match="was not trained to think"):
        chat.set_think(True)
    assert [i for i, _ in chat.search("movie 1")][:2] == ["item1", "item10"]
    assert chat.search("   ") == []


def test_a_model_without_dialogues_answers_from_the_history(plain: Recommender):
    chat = ChatSession(plain, ["item2", "item5"], k=4)
    assert not chat.dialogue
    reply = chat.ask("something scary")
    assert reply.mode == "history" and "not trained on conversations" in reply.reply
    # the history's best unseen items: excluded inside the constraint, a fixed beam of 10
    unseen = plain.recommend(["item2", "item5"], 4, num_beams=10, exclude_history=True)
    assert [p.item_id for p in reply.picks] == [p.item_id for p in unseen]
    assert len(reply.picks) == 4 and not {"item2", "item5"} & {p.item_id for p in reply.picks}


@pytest.mark.parametrize("mode", ["history", "dialogue"])
def test_top_3_is_the_start_of_top_5_and_never_seen(plain: Recommender, talk: Recommender, mode):
    """Issue 32: the beam width does not depend on k, and seen items are excluded inside the
    constraint, so /k 3 shows the first 3 of /k 5 for the same history; the control (seen
    items not excluded) ranks a seen item, so the exclusion is what keeps them out."""
    rec = plain if mode == "history" else talk
    everything = [p.item_id for p in rec.recommend(["item2"], 50, num_beams=60)]
    history = everything[:3]  # the items this model ranks highest: seen, they must not recur
    chat = ChatSession(rec, history, k=5)
    assert chat.dialogue == (mode == "dialogue")
    five = [p.item_id for p in chat.ask("more like these").picks]
    chat.set_k(3)
    chat.messages = []  # the same turn again
    three = [p.item_id for p in chat.ask("more like these").picks]
    assert len(five) == 5 and three == five[:3]
    assert not set(five) & set(history)
    if mode == "history":
        control = [p.item_id for p in rec.recommend(history, 5, num_beams=10)]
        assert set(control) & set(history)
        # the control of the width: the old chat ranked 2k and dropped seen items; its top 3
        # was not the start of its top 5 for this history
        old = {k: [p.item_id for p in rec.recommend(history, 2 * k)] for k in (3, 5)}
        old = {k: [i for i in v if i not in history][:k] for k, v in old.items()}
        assert old[3] != old[5][:3]


def test_free_text_spans_are_catalog_sids_only_when_constrained(talk: Recommender):
    """Sampled free text after an opened SID span: constrained, every span is a catalog SID;
    the control without the constraint writes invalid ones."""
    begin = SID_FORMAT.begin
    prompts = [[{"role": "user", "content": f"name an item {n}"}] for n in range(24)]
    counts = {}
    for constrained in (True, False):
        texts = generate_text(
            talk.backend,
            talk.tokenizer,
            prompts,
            talk.trie,
            prefill=[begin] * len(prompts),
            max_new_tokens=12,
            temperature=1.5,
            constrained=constrained,
            seed=0,
        )
        views = [v for t in texts for v in resolve_spans(begin + t, talk.sid_map, talk.catalog)]
        counts[constrained] = (sum(v.match != "exact" for v in views), len(views))
    assert counts[True][0] == 0 and counts[True][1] >= len(prompts)
    assert counts[False][0] > 0, counts


def test_resolve_spans_exact_prefix_and_invalid(talk: Recommender):
    sm = talk.sid_map
    code = sm.code("item4")
    exact = SID_FORMAT.render(code)
    free = next(
        (code[0], code[1], c)
        for c in range(sm.codebook_sizes[2])
        if sm.item((code[0], code[1], c)) is None
    )
    text = f"try {exact} or {SID_FORMAT.render(free)} or <|sid_begin|><b_1><|sid_end|> done"
    views = resolve_spans(text, sm, talk.catalog)
    assert [v.match for v in views] == ["exact", "prefix", "invalid"]
    assert (views[0].item_id, views[0].title, views[0].label) == ("item4", "movie 4", "movie 4")
    assert views[1].depth == 2 and views[1].item_id in sm.items_with_prefix(code[:2])
    assert views[1].label.startswith("~") and "prefix match: 2 levels" in views[1].label
    assert text[views[2].start : views[2].end] == "<|sid_begin|><b_1><|sid_end|>"
    assert views[2].label.startswith("invalid SID (wrong level order")
