"""Constrained generation on tiny random Qwen3 models: validity, distinct beams, our beam search
against ``model.generate``, and ``generate_sids`` end to end."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import GenerationConfig, LogitsProcessorList

from recllm import testing
from recllm.data.types import Catalog
from recllm.decode import (
    DecodeOptions,
    SIDLogitsProcessor,
    SIDTrie,
    generate_sids,
    sid_beam_search,
    sid_generation_config,
)
from recllm.sid.sidmap import SIDMap
from recllm.vocab import SID_FORMAT, extend_vocab, load_model_with_sids, save_model_with_sids
from recllm.vocab.format import SIDTokenIds
from tests.decode.helpers import brute_allowed, code_sets

pytestmark = pytest.mark.usefixtures("torch_single_thread")

PROMPTS = [
    [{"role": "user", "content": "The user watched a science fiction movie. Recommend the next."}],
    [{"role": "user", "content": "Here is the purchase history: running shoes, a yoga mat."}],
    [{"role": "user", "content": "Hello!"}],
]
GHOST = -1.0e8  # HF pads beams it cannot fill with duplicates scored about -1e9


def random_sid_map(sizes: tuple[int, ...], n: int, seed: int = 0) -> SIDMap:
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(k) for k in sizes], indexing="ij"), -1)
    grid = grid.reshape(-1, len(sizes))
    codes = grid[rng.choice(len(grid), size=n, replace=False)]
    return SIDMap([f"item{k}" for k in range(n)], codes, sizes)


def sharpen_sid_rows(model, first: int, last: int, seed: int) -> None:
    """Give the SID rows a larger random spread: beam scores then differ by far more than float
    noise, so rankings are comparable exactly (tied embeddings: also the LM-head rows)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for weight in {id(w): w for w in _sid_weights(model)}.values():
            rows = last - first + 1
            weight[first : last + 1] = torch.randn(rows, weight.shape[1], generator=g) * 0.5


def _sid_weights(model):
    yield model.get_input_embeddings().weight
    if model.get_output_embeddings() is not None:
        yield model.get_output_embeddings().weight


def extended_model(sid_map: SIDMap, *, moe: bool = False, seed: int = 0, sharpen: bool = True):
    tok = testing.build_tiny_tokenizer()
    model = testing.build_tiny_qwen3(tok, moe=moe, seed=seed)
    ext = extend_vocab(model, tok, sid_map)
    if sharpen:
        sharpen_sid_rows(model, ext.first_id, ext.last_id, seed)
    return model, tok, ext.token_ids


def left_padded(tok, prompts) -> tuple[torch.Tensor, torch.Tensor]:
    texts = [
        tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts
    ]
    enc = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    width = max(map(len, enc))
    ids = torch.tensor([[tok.pad_token_id] * (width - len(e)) + e for e in enc])
    mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in enc])
    return ids, mask


def hf_beams(model, ids, mask, trie, *, num_beams, lp, stop, sid_only):
    """Per prompt: [(codes, score)] of model.generate's beams, ghosts dropped."""
    levels = trie.levels
    if sid_only:
        cfg = sid_generation_config(
            mode="beam",
            levels=levels,
            num_beams=num_beams,
            k=num_beams,
            stop_token_id=stop,
            pad_token_id=0,
            length_penalty=lp,
        )
        proc = SIDLogitsProcessor(trie, sid_only=True, stop_token_id=stop)
        offset = 1  # skip <|sid_begin|>
    else:  # prompt + <|sid_begin|>, exactly L code tokens
        cfg = sid_generation_config(
            mode="beam",
            levels=levels,
            num_beams=num_beams,
            k=num_beams,
            stop_token_id=stop,
            pad_token_id=0,
            length_penalty=lp,
        )
        cfg.max_new_tokens = levels
        begin = torch.full((ids.shape[0], 1), trie.token_ids.begin_id)
        ids, mask = torch.cat([ids, begin], 1), torch.cat([mask, torch.ones_like(begin)], 1)
        proc = SIDLogitsProcessor(trie)
        offset = 0
    out = model.generate(
        input_ids=ids, attention_mask=mask, generation_config=cfg, logits_processor=[proc]
    )
    gen = out.sequences[:, ids.shape[1] :].view(ids.shape[0], num_beams, -1)
    scores = out.sequences_scores.view(ids.shape[0], num_beams)
    result = []
    for b in range(ids.shape[0]):
        row = []
        for j in range(num_beams):
            if scores[b, j] < GHOST:
                continue
            code_ids = gen[b, j, offset : offset + levels]
            row.append((tuple((code_ids - trie.code_token_start).tolist()), float(scores[b, j])))
        result.append(row)
    return result


# -- our beam search == model.generate --------------------------------------------------------


@pytest.mark.parametrize("moe", [False, True], ids=["dense", "moe"])
def test_sid_beam_search_equals_hf_beam_search(moe):
    sid_map = random_sid_map((6, 7, 8), 150, seed=1)
    model, tok, token_ids = extended_model(sid_map, moe=moe, seed=3)
    trie = SIDTrie.from_sid_map(sid_map, token_ids)
    ids, mask = left_padded(tok, PROMPTS)
    stop = tok.eos_token_id
    for num_beams in (5, 20):
        for lp, sid_only in [(1.0, True), (0.0, False), (2.0, True)]:
            if moe and lp != 1.0:
                continue  # the MoE run checks one setting; the dense one covers the rest
            ours = sid_beam_search(
                model,
                ids,
                mask,
                trie,
                num_beams=num_beams,
                length_penalty=lp,
                stop_token_id=stop if sid_only else None,
            )
            hf = hf_beams(
                model, ids, mask, trie, num_beams=num_beams, lp=lp, stop=stop, sid_only=sid_only
            )
            for b, hf_row in enumerate(hf):
                assert len(hf_row) == num_beams
                ours_codes = [tuple(c) for c in ours.codes[b].tolist()]
                assert ours_codes == [c for c, _ in hf_row], (num_beams, lp, sid_only, b)
                np.testing.assert_allclose(
                    ours.scores[b].numpy(), [s for _, s in hf_row], rtol=0, atol=1e-4
                )
                rows = ours.items[b].tolist()
                assert len(set(rows)) == num_beams
                assert [tuple(sid_map.codes[r]) for r in rows] == ours_codes


def test_shared_prefix_and_its_cut_on_hand_made_rows():
    """Left-padded rows [0 0 7 8 9 1] / [7 8 9 2 3 4] / [0 7 8 9 5 6]: 3 tokens in common; cut,
    each row keeps its own tokens, left-padded again; a row that is all prefix keeps one."""
    from recllm.decode.beam import cut_prefix, shared_prefix_length

    ids = torch.tensor([[0, 0, 7, 8, 9, 1], [7, 8, 9, 2, 3, 4], [0, 7, 8, 9, 5, 6]])
    mask = (torch.arange(6) >= torch.tensor([[2], [0], [1]])).long()
    assert shared_prefix_length(ids, mask) == 3
    rest, rest_mask = cut_prefix(ids, mask, 3)
    assert (rest * rest_mask).tolist() == [[0, 0, 1], [2, 3, 4], [0, 5, 6]]
    assert rest_mask.tolist() == [[0, 0, 1], [1, 1, 1], [0, 1, 1]]
    same = torch.tensor([[7, 8, 9], [7, 8, 9]])
    assert shared_prefix_length(same, torch.ones_like(same)) == 2  # the last token stays
    assert shared_prefix_length(ids[:, 2:], mask[:, 2:]) == 0  # row 1 starts with 9


@pytest.mark.parametrize("moe", [False, True], ids=["dense", "moe"])
def test_a_shared_prompt_prefix_runs_once_with_the_same_answers(moe, monkeypatch):
    """A system turn common to every prompt: the prefill runs it once and expands its KV
    cache; items and scores equal a prefill of every whole prompt (control: sharing switched
    off) and model.generate's beams, with and without the stop-token scoring."""
    import recllm.decode.beam as beam

    sid_map = random_sid_map((6, 7, 8), 150, seed=1)
    model, tok, token_ids = extended_model(sid_map, moe=moe, seed=3)
    trie = SIDTrie.from_sid_map(sid_map, token_ids)
    system = {"role": "system", "content": "You recommend items. Answer with a semantic ID."}
    ids, mask = left_padded(tok, [[system, *p] for p in PROMPTS])
    assert beam.shared_prefix_length(ids, mask) >= 10
    calls = []
    model.register_forward_pre_hook(
        lambda m, a, kw: calls.append(tuple(kw["input_ids"].shape)), with_kwargs=True
    )
    for stop in (None, tok.eos_token_id):
        calls.clear()
        shared = sid_beam_search(model, ids, mask, trie, num_beams=8, stop_token_id=stop)
        assert calls[0][0] == 1 and calls[1][1] < ids.shape[1]  # prefix once, then the rest
        monkeypatch.setattr(beam, "MIN_SHARED_PREFIX", 10**6)
        calls.clear()
        whole = sid_beam_search(model, ids, mask, trie, num_beams=8, stop_token_id=stop)
        assert calls[0] == (len(PROMPTS), ids.shape[1] + 1)
        monkeypatch.undo()
        assert shared.items.tolist() == whole.items.tolist()
        torch.testing.assert_close(shared.scores, whole.scores, rtol=0, atol=1e-4)
        hf = hf_beams(
            model, ids, mask, trie, num_beams=8, lp=1.0, stop=stop, sid_only=stop is not None
        )
        assert [[tuple(c) for c in r] for r in shared.codes.tolist()] == [
            [c for c, _ in row] for row in hf
        ]


def test_sid_beam_search_with_fewer_items_than_beams_has_dead_slots():
    sid_map = random_sid_map((2, 3), 4, seed=2)
    model, tok, token_ids = extended_model(sid_map, seed=1)
    trie = SIDTrie.from_sid_map(sid_map, token_ids)
    ids, mask = left_padded(tok, PROMPTS[:2])
    ours = sid_beam_search(model, ids, mask, trie, num_beams=6, stop_token_id=tok.eos_token_id)
    hf = hf_beams(model, ids, mask, trie, num_beams=6, lp=1.0, stop=tok.eos_token_id, sid_only=True)
    for b in range(2):
        assert sorted(ours.items[b, :4].tolist()) == [0, 1, 2, 3]
        assert ours.items[b, 4:].tolist() == [-1, -1]
        assert torch.isinf(ours.scores[b, 4:]).all()
        assert [tuple(c) for c in ours.codes[b, :4].tolist()] == [c for c, _ in hf[b]]
    with pytest.raises(ValueError, match="num_beams"):
        sid_beam_search(model, ids, mask, trie, num_beams=2, num_return_sequences=3)


@torch.no_grad()
def brute_ensemble_scores(models, prompt_ids, sid_map, token_ids, stop):
    """Every catalog item's ensemble score, from one uncached forward per model and item.

    Scored tokens: the codes after ``prompt + <|sid_begin|>``; with ``stop`` also the begin
    marker, ``<|sid_end|>`` and the stop token. Averaged over models, divided by their count.
    """
    scores = []
    for codes in sid_map.codes:
        code_ids = [token_ids.code_id(level, int(c)) for level, c in enumerate(codes)]
        tail = [token_ids.begin_id, *code_ids] + ([token_ids.end_id, stop] if stop else [])
        seq = torch.tensor([prompt_ids + tail])
        scored = range(len(prompt_ids) + (0 if stop else 1), seq.shape[1])  # positions scored
        total = 0.0
        for model in models:
            logp = torch.log_softmax(model(input_ids=seq).logits[0].float(), dim=-1)
            total += sum(float(logp[t - 1, seq[0, t]]) for t in scored) / len(models)
        scores.append(total / len(scored))
    return np.array(scores)


@pytest.mark.parametrize("stop", [False, True], ids=["codes-only", "with-stop"])
def test_ensemble_beam_search_equals_exhaustive_scoring(stop):
    """Two different models decoded together: with as many beams as items the search is exact,
    so it must return the items with the best average log-probs, scored exactly so."""
    sid_map = random_sid_map((4, 5, 3), 40, seed=4)
    a, tok, token_ids = extended_model(sid_map, seed=5)
    b, _, _ = extended_model(sid_map, seed=6)
    trie = SIDTrie.from_sid_map(sid_map, token_ids)
    stop_id = tok.eos_token_id if stop else None
    for prompt in PROMPTS[:2]:
        ids, mask = left_padded(tok, [prompt])
        out = sid_beam_search([a, b], ids, mask, trie, num_beams=40, stop_token_id=stop_id)
        brute = brute_ensemble_scores([a, b], ids[0].tolist(), sid_map, token_ids, stop_id)
        order = np.argsort(-brute, kind="stable")
        assert out.items[0].tolist() == order.tolist()
        np.testing.assert_allclose(out.scores[0].numpy(), brute[order], rtol=0, atol=1e-4)
        single = sid_beam_search(a, ids, mask, trie, num_beams=40, stop_token_id=stop_id)
        assert single.items[0].tolist() != out.items[0].tolist()  # the second model counts


def test_ensemble_needs_one_vocabulary():
    sid_map = random_sid_map((4, 5), 12, seed=1)
    a, tok, token_ids = extended_model(sid_map, seed=1)
    b, _, _ = extended_model(random_sid_map((40, 60), 12, seed=1), seed=2)  # +90 rows
    trie = SIDTrie.from_sid_map(sid_map, token_ids)
    ids, mask = left_padded(tok, PROMPTS[:1])
    with pytest.raises(ValueError, match="one shared vocabulary"):
        sid_beam_search([a, b], ids, mask, trie, num_beams=4)
    with pytest.raises(ValueError, match="at least one model"):
        sid_beam_search([], ids, mask, trie, num_beams=4)


# -- property: every generated SID is an item, beams are distinct, nothing valid is masked ---


class RecordingProcessor(SIDLogitsProcessor):
    """Checks every call against the brute-force oracle while generating."""

    def __init__(self, trie, codes, **kwargs):
        super().__init__(trie, **kwargs)
        self.codes = codes
        self.calls = 0

    def __call__(self, input_ids, scores):
        out = super().__call__(input_ids, scores)
        finite = torch.isfinite(out)
        # Beam search feeds log-probs in which nothing is -inf before masking.
        for row in range(input_ids.shape[0]):
            expected = brute_allowed(
                input_ids[row].tolist(),
                self.codes,
                self.trie.token_ids,
                scores.shape[1],
                sid_only=self.sid_only,
                stop_token_id=self.stop_token_id,
            )
            got = set(finite[row].nonzero().flatten().tolist())
            assert got == expected
        self.calls += 1
        return out


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    data=code_sets(max_items=120),
    num_beams=st.integers(1, 50),
    k_frac=st.floats(0.0, 1.0),
    seed=st.integers(0, 1000),
)
def test_generation_is_always_a_catalog_item(data, num_beams, k_frac, seed):
    sizes, codes = data
    text_vocab = testing.TINY_VOCAB_SIZE
    ids = SIDTokenIds(text_vocab, sizes)
    model = testing.build_tiny_qwen3(text_vocab + ids.num_tokens, seed=seed)
    sharpen_sid_rows(model, ids.first_id, ids.last_id, seed)
    trie = SIDTrie.from_codes(codes, sizes, ids)
    item_of = {c: r for r, c in enumerate(codes)}
    levels, stop, pad = len(sizes), 2, 0
    rng = np.random.default_rng(seed)
    prompts = [rng.integers(3, 300, int(rng.integers(1, 12))).tolist() for _ in range(2)]
    width = max(map(len, prompts))
    input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    k = max(1, round(k_frac * num_beams))

    def run(mode, **kw):
        cfg = sid_generation_config(
            mode=mode, levels=levels, stop_token_id=stop, pad_token_id=pad, **kw
        )
        proc = RecordingProcessor(trie, codes, sid_only=True, stop_token_id=stop)
        out = model.generate(
            input_ids=input_ids,
            attention_mask=mask,
            generation_config=cfg,
            logits_processor=LogitsProcessorList([proc]),
        )
        assert proc.calls == levels + 3
        gen = out.sequences[:, width:]
        found = []
        for row in gen.tolist():
            code = ids.decode(row[: levels + 2])
            assert code is not None and code in item_of, row
            assert row[levels + 2] == stop
            found.append(item_of[code])
        return out, found

    # Beam search: k distinct items (all reachable ones when the catalog is smaller).
    out, found = run("beam", num_beams=num_beams, k=k)
    # (one beam runs as greedy search: no sequence scores, and no ghost beams)
    scores = getattr(out, "sequences_scores", torch.zeros(2 * k)).view(2, k).tolist()
    for p in range(2):
        row = found[p * k : (p + 1) * k]
        real = [f for f, s in zip(row, scores[p], strict=True) if s > GHOST]
        assert len(real) == len(set(real)) == min(k, len(codes))
    # Greedy and seeded sampling: every sequence is an item.
    run("greedy")
    torch.manual_seed(seed)
    _, sampled = run("sample", k=3)
    assert len(sampled) == 6


def test_free_text_spans_are_constrained_and_text_is_free():
    """Without sid_only the model writes free text; every span it opens (in the prompt or in its
    own text, where a bias makes the begin marker frequent) walks the trie, checked at every step
    against the oracle."""
    sid_map = random_sid_map((4, 4), 9, seed=5)
    model, tok, token_ids = extended_model(sid_map, seed=2, sharpen=False)
    trie = SIDTrie.from_sid_map(sid_map, token_ids)
    codes = [tuple(c) for c in sid_map.codes.tolist()]
    ids, mask = left_padded(tok, PROMPTS)
    begin = torch.full((3, 1), token_ids.begin_id)
    ids, mask = torch.cat([ids, begin], 1), torch.cat([mask, torch.ones_like(begin)], 1)
    proc = RecordingProcessor(trie, codes)

    def open_more_spans(input_ids, scores):  # runs before ours: free text opens many spans
        scores = scores.clone()
        scores[:, token_ids.begin_id] += 5.0
        return scores

    cfg = GenerationConfig(do_sample=True, max_new_tokens=24, top_k=0, pad_token_id=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            generation_config=cfg,
            logits_processor=LogitsProcessorList([open_more_spans, proc]),
        )
    spans = 0
    for row in out[:, ids.shape[1] - 1 :].tolist():
        assert token_ids.decode(row[:4]) in codes  # the span opened by the prompt
        text = tok.decode(row)
        parsed = SID_FORMAT.parse(text, sid_map.codebook_sizes)
        assert all(sid_map.item(c) is not None for c in parsed.codes)
        for bad in parsed.invalid:  # only free-text SID tokens, or a span cut at the end
            free = bad.reason.startswith(("code tokens outside", "<|sid_end|> without"))
            assert free or (bad.reason == "missing <|sid_end|>" and bad.end == len(text)), bad
        spans += len(parsed.codes)
    assert spans > 3  # the model opened spans of its own


def test_prompt_with_unknown_sid_prefix_raises():
    sid_map = SIDMap(["a", "b"], np.array([[0, 0], [0, 1]]), (3, 3))
    model, _, token_ids = extended_model(sid_map)
    trie = SIDTrie.from_sid_map(sid_map, token_ids)
    ids = torch.tensor([[5, 6, token_ids.begin_id, token_ids.code_id(0, 2)]])
    cfg = sid_generation_config(mode="greedy", levels=2, stop_token_id=2, pad_token_id=0)
    with pytest.raises(ValueError, match="not a prefix of any catalog SID"):
        model.generate(
            input_ids=ids, generation_config=cfg, logits_processor=[SIDLogitsProcessor(trie)]
        )


# -- generate_sids ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_sampling_model(tmp_path_factory):
    """A model directory whose generation_config.json asks for sampling and penalties."""
    sid_map = random_sid_map((5, 6, 7), 60, seed=4)
    model, tok, token_ids = extended_model(sid_map, seed=5)
    out = save_model_with_sids(model, tok, sid_map, tmp_path_factory.mktemp("m") / "model")
    path = out / "generation_config.json"
    doc = json.loads(path.read_text())
    doc.update(
        do_sample=True,
        temperature=0.7,
        top_k=3,
        top_p=0.5,
        repetition_penalty=1.5,
        num_beams=1,
        # A field generate_sids' own config leaves unset: it must not leak in either.
        suppress_tokens=list(token_ids.level_ids(0))[:2],
    )
    path.write_text(json.dumps(doc))
    return out, sid_map


def test_generate_sids_beam_ignores_the_models_sampling_config(saved_sampling_model):
    directory, sid_map = saved_sampling_model
    model, tok, _ = load_model_with_sids(directory, sid_map=sid_map)
    assert model.generation_config.do_sample is True
    trie = SIDTrie.from_sid_map(sid_map, SID_FORMAT.token_ids(tok, sid_map.codebook_sizes))
    titles = {f"item{k}": f"title {k}" for k in range(0, 60, 2)}
    opts = DecodeOptions(k=10, num_beams=12, batch_size=2)
    hf = generate_sids(model, tok, PROMPTS, sid_map, opts, trie=trie, titles=titles)
    assert model.generation_config.do_sample is True  # restored
    again = generate_sids(model, tok, PROMPTS, sid_map, opts, trie=trie, titles=titles)
    fast = dataclasses.replace(opts, engine="sid_beam")
    ours = generate_sids(model, tok, PROMPTS, sid_map, fast, trie=trie, titles=titles)
    assert hf == again  # deterministic: beam search, not sampling
    for h, o in zip(hf, ours, strict=True):
        assert len(h) == 10 and len({r.item_id for r in h}) == 10
        assert [r.item_id for r in h] == [r.item_id for r in o]
        np.testing.assert_allclose([r.score for r in h], [r.score for r in o], atol=1e-4)
        assert [r.score for r in h] == sorted((r.score for r in h), reverse=True)
        for r in h:
            assert r.title == titles.get(r.item_id)
    # Scores are sequence log-probs of begin + codes + end + stop over L + 3 = 6 tokens.
    assert all(r.score < 0 for recs in hf for r in recs)


def test_generate_sids_greedy_and_sample(saved_sampling_model):
    directory, sid_map = saved_sampling_model
    model, tok, _ = load_model_with_sids(directory, sid_map=sid_map)
    catalog = Catalog({f"item{k}": {"title": f"movie {k}"} for k in range(60)}, ("title",))
    greedy = generate_sids(
        model, tok, PROMPTS, sid_map, DecodeOptions(k=1, mode="greedy"), titles=catalog
    )
    beam1 = generate_sids(model, tok, PROMPTS, sid_map, DecodeOptions(k=1, num_beams=1))
    assert [g[0].item_id for g in greedy] == [b[0].item_id for b in beam1]
    for g, b in zip(greedy, beam1, strict=True):
        assert g[0].title == catalog.title(g[0].item_id)
        # greedy sums the log-probs; 1-beam search divides them by the length L + 3
        assert g[0].score / 6 == pytest.approx(b[0].score, abs=1e-5)
    sample = DecodeOptions(k=8, mode="sample", seed=7)
    s1 = generate_sids(model, tok, PROMPTS, sid_map, sample)
    s2 = generate_sids(model, tok, PROMPTS, sid_map, sample)
    assert s1 == s2
    for recs in s1:
        assert 1 <= len(recs) <= 8 and len({r.item_id for r in recs}) == len(recs)
        assert all(r.item_id in sid_map for r in recs)
    with pytest.raises(ValueError, match="greedy"):
        DecodeOptions(k=2, mode="greedy")
    with pytest.raises(ValueError, match="num_beams"):
        DecodeOptions(k=5, num_beams=3)
