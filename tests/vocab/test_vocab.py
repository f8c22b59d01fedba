"""recllm.vocab: the SID token format, vocabulary extension, and model directories with SID maps."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import AddedToken

from recllm import testing
from recllm.data.types import Catalog
from recllm.errors import UserError
from recllm.sid.sidmap import SIDMap
from recllm.vocab import (
    CONFIG_HASH_ATTR,
    SID_FORMAT,
    InvalidSID,
    SIDFormat,
    SIDTokenIds,
    VocabMismatchError,
    check_vocab,
    extend_vocab,
    load_model_with_sids,
    read_vocab_record,
    save_model_with_sids,
)
from recllm.vocab.checkpoint import load_tokenizer_with_sids

pytestmark = pytest.mark.usefixtures("torch_single_thread")

SIZES = (3, 3, 4)
N_SID = 2 + sum(SIZES)  # 12 tokens
TINY = testing.TINY_VOCAB_SIZE  # 512: the tiny tokenizer's length and first SID id
QWEN3_ROWS = 151_936  # config.vocab_size of real Qwen3 checkpoints (> len(tokenizer))

# Items and their codes; "i4" is in the map but not in the catalog, and code 0 at level 2 belongs
# to i4 only, so item_text init must fall back to the mean row for <c_0>.
CODES = {
    "i0": (0, 1, 2),
    "i1": (1, 0, 2),
    "i2": (0, 2, 1),
    "i3": (2, 2, 3),
    "i4": (1, 1, 0),
}
TITLES = {
    "i0": "space travel movie",
    "i1": "quiet drama",
    "i2": "yoga mat",
    "i3": "running shoes",
}


def make_sid_map(codes: dict[str, tuple[int, ...]] = CODES, sizes=SIZES) -> SIDMap:
    return SIDMap(list(codes), np.array(list(codes.values()), dtype=np.int64), sizes)


def make_catalog() -> Catalog:
    return Catalog({i: {"title": t} for i, t in TITLES.items()}, ("title",))


def fresh(*, moe: bool = False, tied: bool = True):
    """A new tiny tokenizer and model: extension mutates both, so fixtures cannot be shared."""
    tok = testing.build_tiny_tokenizer()
    return tok, testing.build_tiny_qwen3(tok, moe=moe, tie_word_embeddings=tied)


def fresh_qwen3_tokenizer():
    tok = testing.load_qwen3_tokenizer()
    if tok is None:
        pytest.skip("real Qwen3 tokenizer not found (<shared>/tokenizers/qwen3)")
    return tok


# -- format ------------------------------------------------------------------------------------


def test_tokens_fixed_order_and_count():
    assert SID_FORMAT.tokens((3, 2)) == [
        "<|sid_begin|>",
        "<|sid_end|>",
        "<a_0>",
        "<a_1>",
        "<a_2>",
        "<b_0>",
        "<b_1>",
    ]
    assert len(SID_FORMAT.tokens((256, 256, 256))) == 2 + 768
    assert len(SID_FORMAT.tokens(SIZES)) == N_SID


def test_at_most_26_levels():
    assert SID_FORMAT.code_token(25, 7) == "<z_7>"
    assert len(SID_FORMAT.tokens((1,) * 26)) == 28
    with pytest.raises(ValueError, match="at most 26"):
        SID_FORMAT.tokens((1,) * 27)
    with pytest.raises(ValueError, match="at most 26"):
        SID_FORMAT.code_token(26, 0)


def test_format_rejects_bad_markers():
    with pytest.raises(ValueError, match="distinct"):
        SIDFormat("<s>", "<s>")
    with pytest.raises(ValueError, match="code token"):
        SIDFormat("<a_1>", "</s>")


def test_render_and_parse_round_trip():
    assert SID_FORMAT.render((12, 3, 200)) == "<|sid_begin|><a_12><b_3><c_200><|sid_end|>"
    sizes = (256, 256, 256)
    codes = [(12, 3, 200), (0, 0, 0), (255, 255, 255)]
    text = (
        f"You watched {SID_FORMAT.render(codes[0])}, so try {SID_FORMAT.render(codes[1])}"
        f" or\n{SID_FORMAT.render(codes[2])}."
    )
    parsed = SID_FORMAT.parse(text, sizes)
    assert parsed.ok
    assert parsed.codes == codes
    assert [text[s:e] for s, e in parsed.spans] == [SID_FORMAT.render(c) for c in codes]
    assert SID_FORMAT.parse("no ids here", sizes).codes == []


B, E = "<|sid_begin|>", "<|sid_end|>"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"{B}<b_1><a_2><c_3>{E}", "wrong level order: <b_1> at position 0, expected <a_N>"),
        (f"{B}<a_1><c_2><b_3>{E}", "wrong level order: <c_2> at position 1, expected <b_N>"),
        (f"{B}<a_1><b_2>{E}", "wrong length: 2 level tokens, expected 3"),
        (f"{B}<a_1><b_2><c_3><d_0>{E}", "wrong length: 4 level tokens, expected 3"),
        (f"{B}{E}", "wrong length: 0 level tokens, expected 3"),
        (f"{B}<a_1><b_2><c_4>{E}", "code 4 at level 2 is outside [0, 4)"),
        (f"{B}<a_3><b_0><c_0>{E}", "code 3 at level 0 is outside [0, 3)"),
        (f"{B}<a_01><b_0><c_0>{E}", "non-canonical code token <a_01> (leading zero)"),
        (f"{B}<a_1> <b_2><c_3>{E}", "unexpected text between the markers: '<a_1> <b_2><c_3>'"),
    ],
)
def test_parse_reports_malformed_span(text: str, expected: str):
    parsed = SID_FORMAT.parse(f"pick {text} now", SIZES)
    assert parsed.codes == []
    assert parsed.invalid == [InvalidSID(5, 5 + len(text), text, expected)]
    assert not parsed.ok


def test_parse_missing_end_marker():
    text = f"x {B}<a_1><b_2><c_3> and {B}<a_0><b_0><c_0>{E} then {B}<a_2>"
    parsed = SID_FORMAT.parse(text, SIZES)
    assert parsed.codes == [(0, 0, 0)]
    first = text.index(B)
    second = text.index(B, first + 1)
    last = text.rindex(B)
    assert parsed.invalid == [
        InvalidSID(first, second, text[first:second], "missing <|sid_end|>"),
        InvalidSID(last, len(text), f"{B}<a_2>", "missing <|sid_end|>"),
    ]


def test_parse_stray_end_marker_and_bare_codes():
    text = f"{E} then <a_1><b_2><c_3> and <a_0>, {B}<a_0><b_1><c_2>{E}"
    parsed = SID_FORMAT.parse(text, SIZES)
    assert parsed.codes == [(0, 1, 2)]
    assert [(i.text, i.reason) for i in parsed.invalid] == [
        (E, "<|sid_end|> without <|sid_begin|>"),
        ("<a_1><b_2><c_3>", "code tokens outside <|sid_begin|>...<|sid_end|>"),
        ("<a_0>", "code tokens outside <|sid_begin|>...<|sid_end|>"),
    ]
    for bad in parsed.invalid:
        assert text[bad.start : bad.end] == bad.text


def test_sid_token_ids_arithmetic():
    ids = SIDTokenIds(100, (3, 2))
    assert (ids.begin_id, ids.end_id, ids.last_id, ids.num_tokens) == (100, 101, 106, 7)
    assert ids.all_ids() == range(100, 107)
    assert ids.code_ids() == range(102, 107)
    assert ids.level_ids(0) == range(102, 105)
    assert ids.level_ids(1) == range(105, 107)
    assert ids.code_id(1, 1) == 106
    assert [ids.level_code(t) for t in range(99, 108)] == [
        None,
        None,
        None,
        (0, 0),
        (0, 1),
        (0, 2),
        (1, 0),
        (1, 1),
        None,
    ]
    assert ids.encode((2, 1)) == [100, 104, 106, 101]
    assert ids.decode([100, 104, 106, 101]) == (2, 1)
    assert ids.decode([100, 105, 104, 101]) is None  # levels swapped
    assert ids.decode([100, 104, 101]) is None  # too short
    with pytest.raises(ValueError, match=r"outside \[0, 2\)"):
        ids.code_id(1, 2)


# -- extension ---------------------------------------------------------------------------------


def test_extend_tied_dense_mean():
    tok, model = fresh()
    sid_map = make_sid_map()
    old = model.get_input_embeddings().weight.detach().clone()
    assert old.shape == (TINY, 64)

    ext = extend_vocab(model, tok, sid_map)

    assert ext.num_added_tokens == N_SID
    assert (ext.first_id, ext.last_id, ext.begin_id, ext.end_id) == (512, 523, 512, 513)
    assert tok.convert_tokens_to_ids(SID_FORMAT.tokens(SIZES)) == list(range(512, 524))
    assert ext.level_ids(0).tolist() == [514, 515, 516]
    assert ext.level_ids(1).tolist() == [517, 518, 519]
    assert ext.level_ids(2).tolist() == [520, 521, 522, 523]
    assert ext.ids().tolist() == list(range(512, 524))
    assert (ext.tokenizer_len_before, ext.tokenizer_len_after) == (512, 524)
    assert (ext.embedding_rows_before, ext.embedding_rows_after) == (512, 576)  # 524 -> x64
    assert ext.resized and ext.tied and ext.init == "mean"
    assert ext.sid_map_hash == sid_map.content_hash

    emb = model.get_input_embeddings().weight
    assert emb.shape == (576, 64)
    assert model.config.vocab_size == 576
    assert model.get_output_embeddings().weight is emb  # still tied after the resize
    assert torch.equal(emb[:TINY], old)  # pre-existing rows bit-identical
    mean = old.float().mean(0)
    assert torch.equal(emb[512:524], mean.expand(N_SID, -1))
    assert getattr(model.config, CONFIG_HASH_ATTR) == sid_map.content_hash

    logits = model(torch.tensor([[5, 512, 515, 518, 521, 513]])).logits
    assert logits.shape == (1, 6, 576)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("moe", [False, True], ids=["dense", "moe"])
def test_extend_untied_initialises_lm_head(moe: bool):
    tok, model = fresh(moe=moe, tied=False)
    old_in = model.get_input_embeddings().weight.detach().clone()
    old_out = model.get_output_embeddings().weight.detach().clone()
    assert not torch.equal(old_in, old_out)

    ext = extend_vocab(model, tok, make_sid_map())

    assert not ext.tied
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    assert head is not emb
    assert emb.shape == head.shape == (576, 64)
    assert torch.equal(emb[:TINY], old_in)
    assert torch.equal(head[:TINY], old_out)
    assert torch.equal(emb[512:524], old_in.float().mean(0).expand(N_SID, -1))
    assert torch.equal(head[512:524], old_out.float().mean(0).expand(N_SID, -1))
    logits = model(torch.tensor([[5, 512, 514, 517, 520, 513]])).logits
    assert logits.shape == (1, 6, 576)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_item_text_init_matches_hand_computed_means(tied: bool):
    tok, model = fresh(tied=tied)
    old_in = model.get_input_embeddings().weight.detach().clone()
    old_out = model.get_output_embeddings().weight.detach().clone()
    sid_map = make_sid_map()

    ext = extend_vocab(model, tok, sid_map, init="item_text", catalog=make_catalog())
    assert ext.init == "item_text"

    def expected(weight: torch.Tensor, level: int, code: int) -> torch.Tensor:
        ids = [
            t
            for item, c in CODES.items()
            if c[level] == code and item in TITLES
            for t in tok.encode(TITLES[item], add_special_tokens=False)
        ]
        if not ids:
            return weight.float().mean(0)
        return weight[ids].float().mean(0)

    # Level 0 code 0 pools the tokens of "space travel movie" and "yoga mat".
    assert len(tok.encode("space travel movie yoga mat", add_special_tokens=False)) > 2
    checks = [(old_in, model.get_input_embeddings().weight)]
    if not tied:
        checks.append((old_out, model.get_output_embeddings().weight))
    for old, new in checks:
        assert torch.equal(new[:TINY], old)
        mean = old.float().mean(0)
        assert torch.equal(new[ext.begin_id], mean)
        assert torch.equal(new[ext.end_id], mean)
        for level, k in enumerate(SIZES):
            for code in range(k):
                row = new[ext.token_ids.code_id(level, code)]
                torch.testing.assert_close(row, expected(old, level, code), rtol=1e-6, atol=1e-7)
        # <c_0> belongs only to i4, which has no text: mean row, exactly.
        assert torch.equal(new[ext.token_ids.code_id(2, 0)], mean)
        # Codes with text differ from the mean and from each other.
        assert not torch.equal(new[ext.token_ids.code_id(0, 0)], mean)
        assert not torch.equal(new[ext.token_ids.code_id(0, 0)], new[ext.token_ids.code_id(0, 1)])
    if tied:
        assert model.get_output_embeddings().weight is model.get_input_embeddings().weight


def test_item_text_needs_catalog():
    tok, model = fresh()
    with pytest.raises(ValueError, match="catalog="):
        extend_vocab(model, tok, make_sid_map(), init="item_text")
    assert len(tok) == TINY  # refused before touching anything


def test_rendered_sid_is_single_tokens_tiny_tokenizer():
    tok, model = fresh()
    ext = extend_vocab(model, tok, make_sid_map())
    _check_tokenization(tok, ext.token_ids, (2, 1, 3))


def _check_tokenization(tok, ids: SIDTokenIds, code: tuple[int, ...]) -> None:
    sid = SID_FORMAT.render(code)
    expected = ids.encode(code)
    assert tok.encode(sid, add_special_tokens=False) == expected
    assert tok.convert_ids_to_tokens(expected) == [
        "<|sid_begin|>",
        *(SID_FORMAT.code_token(lv, c) for lv, c in enumerate(code)),
        "<|sid_end|>",
    ]
    for text in (f"I liked{sid}and more", f"watched {sid}.", f"{sid}\n{sid}"):
        enc = tok.encode(text, add_special_tokens=False)
        hits = [i for i in range(len(enc)) if enc[i : i + len(expected)] == expected]
        assert len(hits) == text.count(sid)
        # Kept by skip_special_tokens=True: they are normal added tokens.
        assert tok.decode(enc, skip_special_tokens=True) == text
        assert SID_FORMAT.parse(tok.decode(enc, skip_special_tokens=True), ids.codebook_sizes).codes
    messages = [
        {"role": "user", "content": f"I watched {sid}. What next?"},
        {"role": "assistant", "content": sid},
    ]
    chat = tok.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    hits = [i for i in range(len(chat)) if chat[i : i + len(expected)] == expected]
    assert len(hits) == 2
    decoded = tok.decode(chat, skip_special_tokens=True)
    assert SID_FORMAT.parse(decoded, ids.codebook_sizes).codes == [code, code]


def test_real_qwen3_tokenizer_resize_past_config_vocab():
    """len(tokenizer)=151,669 < config rows 151,936: 770 tokens outgrow the rows -> resize."""
    tok = fresh_qwen3_tokenizer()
    assert len(tok) == testing.QWEN3_LEN
    model = testing.build_tiny_qwen3(QWEN3_ROWS)
    old = model.get_input_embeddings().weight.detach().clone()
    sizes = (256, 256, 256)
    rng = np.random.default_rng(0)
    codes = np.unique(rng.integers(0, 256, size=(50, 3)), axis=0)
    sid_map = SIDMap([f"i{k}" for k in range(len(codes))], codes, sizes)

    ext = extend_vocab(model, tok, sid_map)

    assert ext.num_added_tokens == 770
    assert (ext.first_id, ext.last_id) == (151_669, 152_438)
    assert (ext.embedding_rows_before, ext.embedding_rows_after) == (QWEN3_ROWS, 152_448)
    assert 152_448 % 64 == 0
    emb = model.get_input_embeddings().weight
    assert torch.equal(emb[: testing.QWEN3_LEN], old[: testing.QWEN3_LEN])
    # The mean is over the tokenizer's own rows, not over the config's unused padding rows.
    mean = old[: testing.QWEN3_LEN].float().mean(0)
    assert torch.equal(emb[151_669:152_439], mean.expand(770, -1))
    _check_tokenization(tok, ext.token_ids, (12, 3, 200))
    assert model(torch.tensor([[40, 151_669, 152_438]])).logits.shape == (1, 3, 152_448)


def test_real_qwen3_tokenizer_small_map_fits_without_resize():
    tok = fresh_qwen3_tokenizer()
    model = testing.build_tiny_qwen3(QWEN3_ROWS)
    old = model.get_input_embeddings().weight.detach().clone()
    sid_map = make_sid_map()

    ext = extend_vocab(model, tok, sid_map)

    assert (ext.first_id, ext.last_id) == (151_669, 151_680)
    assert not ext.resized
    assert model.get_input_embeddings().weight.shape[0] == QWEN3_ROWS  # never shrunk
    emb = model.get_input_embeddings().weight
    assert torch.equal(emb[:151_669], old[:151_669])
    assert torch.equal(emb[151_681:], old[151_681:])  # rows past the tokenizer untouched
    assert torch.equal(emb[151_669:151_681], old[:151_669].float().mean(0).expand(N_SID, -1))
    _check_tokenization(tok, ext.token_ids, (2, 0, 3))


def test_extend_twice_same_map_is_noop():
    tok, model = fresh()
    sid_map = make_sid_map()
    extend_vocab(model, tok, sid_map, init="item_text", catalog=make_catalog())
    with torch.no_grad():
        model.get_input_embeddings().weight[512:524] += 1.0  # "trained" rows
    snapshot = model.get_input_embeddings().weight.detach().clone()

    again = extend_vocab(model, tok, make_sid_map())  # equal content, new object

    assert again.init is None and again.num_added_tokens == 0 and not again.resized
    assert (again.first_id, again.last_id) == (512, 523)
    assert len(tok) == 524
    assert torch.equal(model.get_input_embeddings().weight, snapshot)


def test_extend_twice_different_map_refused():
    tok, model = fresh()
    first = make_sid_map()
    extend_vocab(model, tok, first)

    # Same codebook sizes, other codes: same tokens, but the rows mean something else.
    other = make_sid_map({**CODES, "i4": (2, 0, 0)})
    with pytest.raises(VocabMismatchError) as err:
        extend_vocab(model, tok, other)
    assert first.content_hash in str(err.value) and other.content_hash in str(err.value)

    for sizes in [(3, 3, 5), (3, 3, 3), (3, 3)]:
        bigger_or_smaller = SIDMap(["x"], np.zeros((1, len(sizes)), dtype=np.int64), sizes)
        with pytest.raises(VocabMismatchError, match="cannot extend"):
            extend_vocab(model, tok, bigger_or_smaller)
    assert len(tok) == 524 and model.get_input_embeddings().weight.shape[0] == 576


def test_extended_tokenizer_with_base_model_initialises_rows():
    tok, model = fresh()
    sid_map = make_sid_map()
    extend_vocab(model, tok, sid_map)
    base = testing.build_tiny_qwen3(TINY, seed=1)  # a fresh model, tokenizer already extended
    old = base.get_input_embeddings().weight.detach().clone()

    ext = extend_vocab(base, tok, sid_map)

    assert ext.num_added_tokens == 0 and ext.init == "mean" and ext.embedding_rows_after == 576
    emb = base.get_input_embeddings().weight
    assert torch.equal(emb[:TINY], old)
    assert torch.equal(emb[512:524], old.float().mean(0).expand(N_SID, -1))


def test_check_vocab_refuses_missing_and_special_tokens():
    tok = testing.build_tiny_tokenizer()
    sid_map = make_sid_map()
    with pytest.raises(VocabMismatchError, match="lacks 12 of 12 SID tokens"):
        check_vocab(tok, sid_map)

    tok.add_tokens(
        [AddedToken(t, special=True) for t in SID_FORMAT.tokens(SIZES)], special_tokens=True
    )
    with pytest.raises(VocabMismatchError, match="special tokens"):
        check_vocab(tok, sid_map)

    shuffled = testing.build_tiny_tokenizer()
    tokens = SID_FORMAT.tokens(SIZES)
    shuffled.add_tokens([tokens[1], tokens[0], *tokens[2:]])
    with pytest.raises(VocabMismatchError, match="contiguous"):
        check_vocab(shuffled, sid_map)


# -- save / load -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tok, model = fresh(tied=False)
    sid_map = make_sid_map()
    extend_vocab(model, tok, sid_map, init="item_text", catalog=make_catalog())
    out = tmp_path_factory.mktemp("vocab") / "model"
    assert save_model_with_sids(model, tok, sid_map, out) == out
    torch.save(model.state_dict(), out.parent / "state.pt")
    return out


def test_save_writes_record(saved_dir: Path):
    names = {p.name for p in saved_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "sid_map.json"} <= names
    assert "recllm_vocab.json" in names
    assert not [p for p in saved_dir.parent.iterdir() if p.name.startswith(".model.")]  # no temp
    record = read_vocab_record(saved_dir)
    versions = record.pop("versions")
    assert set(versions) >= {"recllm", "transformers", "torch"}
    # every file saved with the record, so a deleted one is reported by name
    assert record.pop("files") == sorted(names - {"recllm_vocab.json"})
    assert record == {
        "format": "recllm.vocab/1",
        "sid_map_hash": make_sid_map().content_hash,
        "token_format": {
            "begin": "<|sid_begin|>",
            "end": "<|sid_end|>",
            "code_token": "<{letter}_{code}>, letter a = level 0",
            "order": "begin, end, then level by level, code by code (contiguous ids)",
        },
        "levels": 3,
        "codebook_sizes": [3, 3, 4],
        "num_sid_tokens": 12,
        "first_sid_token_id": 512,
        "last_sid_token_id": 523,
        "tokenizer_len": 524,
        "embedding_rows": 576,
    }
    config = json.loads((saved_dir / "config.json").read_text())
    assert config[CONFIG_HASH_ATTR] == make_sid_map().content_hash


def test_load_round_trip(saved_dir: Path):
    model, tok, sid_map = load_model_with_sids(saved_dir)
    assert sid_map.content_hash == make_sid_map().content_hash
    assert len(tok) == 524
    assert tok.convert_tokens_to_ids(SID_FORMAT.tokens(SIZES)) == list(range(512, 524))
    state = torch.load(saved_dir.parent / "state.pt")
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, state[name]), name
    code = sid_map.code("i3")
    ids = tok.encode(f"next: {SID_FORMAT.render(code)}", add_special_tokens=False)
    assert model(torch.tensor([ids])).logits.shape == (1, len(ids), 576)

    # Passing the same map explicitly is fine and returns that object.
    explicit = make_sid_map()
    assert load_model_with_sids(saved_dir, sid_map=explicit)[2] is explicit


def test_load_refuses_other_sid_map(saved_dir: Path):
    other = make_sid_map({**CODES, "i4": (2, 0, 0)})
    with pytest.raises(VocabMismatchError) as err:
        load_model_with_sids(saved_dir, sid_map=other)
    message = str(err.value)
    assert make_sid_map().content_hash in message and other.content_hash in message
    assert "Fix:" in message


def test_load_refuses_tokenizer_without_sid_tokens(saved_dir: Path, tmp_path: Path):
    broken = tmp_path / "broken"
    shutil.copytree(saved_dir, broken)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (broken / name).unlink()
    testing.build_tiny_tokenizer().save_pretrained(broken)
    with pytest.raises(VocabMismatchError, match="lacks 12 of 12 SID tokens"):
        load_model_with_sids(broken)


@pytest.mark.parametrize("tokenizer_only", [False, True])
def test_deleted_tokenizer_files_are_named(saved_dir: Path, tmp_path: Path, tokenizer_only: bool):
    """Issue 15: deleted tokenizer files read as "the tokenizer lacks 12 of 12 SID tokens"
    (transformers silently built some other tokenizer); the files are named now."""
    broken = tmp_path / "broken"
    shutil.copytree(saved_dir, broken)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (broken / name).unlink()
    load = load_tokenizer_with_sids if tokenizer_only else load_model_with_sids
    with pytest.raises(UserError) as err:
        load(broken)
    assert str(err.value) == (
        f"{broken}: incomplete model directory: the tokenizer files tokenizer.json, "
        "tokenizer_config.json missing. Fix: restore the files saved together by "
        "save_model_with_sids (copy the whole directory), or train and save the model again"
    )


def test_missing_weights_are_named(saved_dir: Path, tmp_path: Path):
    """Issue 15: a model dir without weights ended in transformers' OSError traceback."""
    broken = tmp_path / "broken"
    shutil.copytree(saved_dir, broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(UserError, match=r"the model weights model\.safetensors missing\. Fix:"):
        load_model_with_sids(broken)
    # engines that read the weights themselves (vLLM) only need the tokenizer and SID map
    tok, sid_map = load_tokenizer_with_sids(broken)
    assert len(tok) == 524 and sid_map.content_hash == make_sid_map().content_hash


def test_directory_saved_before_the_file_list_is_checked_by_pattern(
    saved_dir: Path, tmp_path: Path
):
    from recllm.vocab.checkpoint import check_model_dir

    broken = tmp_path / "old"
    shutil.copytree(saved_dir, broken)
    record = json.loads((broken / "recllm_vocab.json").read_text())
    del record["files"]
    (broken / "recllm_vocab.json").write_text(json.dumps(record))
    assert check_model_dir(broken)["sid_map_hash"] == make_sid_map().content_hash
    (broken / "tokenizer.json").unlink()
    (broken / "model.safetensors").unlink()
    with pytest.raises(UserError) as err:
        check_model_dir(broken)
    assert "the tokenizer files tokenizer.json; the model weights model.safetensors missing" in (
        str(err.value)
    )


@pytest.mark.parametrize("case", ["missing", "file", "corrupt_record"])
def test_unusable_model_directory_is_a_user_error(saved_dir: Path, tmp_path: Path, case: str):
    target = {"missing": tmp_path / "nope", "file": saved_dir / "config.json"}.get(case)
    if target is None:
        target = tmp_path / "copy"
        shutil.copytree(saved_dir, target)
        text = (target / "recllm_vocab.json").read_text()
        (target / "recllm_vocab.json").write_text(text[: len(text) // 2])
    expected = {
        "missing": "no such model directory",
        "file": "a file, not a directory",
        "corrupt_record": "the file is truncated or corrupt, not valid JSON",
    }[case]
    with pytest.raises(UserError, match=expected):
        load_model_with_sids(target)


def test_load_refuses_replaced_sid_map_file(saved_dir: Path, tmp_path: Path):
    broken = tmp_path / "broken"
    shutil.copytree(saved_dir, broken)
    make_sid_map({**CODES, "i4": (2, 0, 0)}).save(broken)
    with pytest.raises(VocabMismatchError, match="was replaced after saving"):
        load_model_with_sids(broken)


def test_load_refuses_directory_without_record(tmp_path: Path):
    testing.save_tiny_model(tmp_path / "plain")
    with pytest.raises(VocabMismatchError, match=r"recllm_vocab\.json not found"):
        load_model_with_sids(tmp_path / "plain")


def test_save_refuses_mismatch(tmp_path: Path):
    tok, model = fresh()
    sid_map = make_sid_map()
    extend_vocab(model, tok, sid_map)
    other = make_sid_map({**CODES, "i4": (2, 0, 0)})
    with pytest.raises(VocabMismatchError, match=other.content_hash):
        save_model_with_sids(model, tok, other, tmp_path / "out")
    base_tok, base_model = fresh()
    with pytest.raises(VocabMismatchError, match="lacks"):
        save_model_with_sids(base_model, base_tok, sid_map, tmp_path / "out")
    assert not (tmp_path / "out").exists()
