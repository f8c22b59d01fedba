"""recllm.decode.text_head_fit / recllm.decode.text_head: a head on a frozen model ranks every item,
new ones included, by its text."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from recllm.cli import main
from recllm.data.types import Catalog
from recllm.decode.text_head import ItemTable, TextHead, prompt_states, top_items
from recllm.decode.text_head_fit import TextHeadConfig, _Part, fit_model_text_head, fit_text_head
from recllm.errors import UserError
from recllm.sid.quantizer import SIDQuantizer
from recllm.sid.sidmap import SIDMap
from recllm.testing import build_tiny_qwen3, build_tiny_tokenizer
from recllm.vocab import extend_vocab, save_model_with_sids

GROUPS = ["garden", "kitchen", "guitar", "camera"]
WORDS = ["small", "large", "blue", "green", "classic", "modern"]
PER_GROUP = 12


def grouped_model(d):
    """A tiny model over 4 item groups (titles name the group; each user stays in one group),
    its SIDs built from text (so it carries sid_quantizer/), recording its data in ``d``."""
    rng = np.random.default_rng(0)
    items = {}
    for g, word in enumerate(GROUPS):
        for k in range(PER_GROUP):
            items[str(g * PER_GROUP + k)] = {"title": f"{word} {rng.choice(WORDS)} item {k}"}
    inter = {}
    for u in range(120):
        g = u % len(GROUPS)
        picks = rng.choice(PER_GROUP, size=8, replace=False) + g * PER_GROUP
        inter[str(u)] = [int(x) for x in picks]
    (d / "Toy.item.json").write_text(json.dumps(items))
    (d / "Toy.inter.json").write_text(json.dumps(inter))
    sids = d / "sids"
    argv = ["sid", "build", "--data", str(d), "--levels", "2", "--codebook-size", "8"]
    assert main([*argv, "--text-dim", "8", "--no-cache", "--out", str(sids)]) == 0
    sid_map = SIDMap.load(sids)
    tok = build_tiny_tokenizer()
    model = build_tiny_qwen3(tok, tie_word_embeddings=False)
    ext = extend_vocab(model, tok, sid_map)
    g = torch.Generator().manual_seed(0)  # a wide spread of the SID rows: beam scores differ
    with torch.no_grad():  # by far more than float noise (no ties between engines)
        for w in (model.get_input_embeddings().weight, model.get_output_embeddings().weight):
            span = ext.last_id - ext.first_id + 1
            w[ext.first_id : ext.last_id + 1] = torch.randn(span, w.shape[1], generator=g)
    record = {"prompt_style": "chat", "max_history": 20, "data": {"data_path": str(d)}}
    return save_model_with_sids(
        model, tok, sid_map, d / "model", recommender=record, quantizer_dir=sids / "quantizer"
    )


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """:func:`grouped_model` and a text head fitted on it."""
    model_dir = grouped_model(tmp_path_factory.mktemp("th"))
    head, report = fit_model_text_head(model_dir, TextHeadConfig(epochs=60, patience=60))
    return model_dir, head, report


def test_fit_lowers_the_valid_loss_and_saves(fitted):
    model_dir, head, report = fitted
    assert report["train_windows"] == 120 * 3
    first = report["curve"][0]["valid_loss"]  # the head before any step
    assert report["valid_loss"] < first - 0.3, report["curve"][:5]
    assert report["valid_loss"] < report["uniform_loss"] - 0.5
    doc = json.loads((model_dir / "text_head" / "text_head.json").read_text())
    assert doc["quantizer_hash"] == SIDQuantizer.load(model_dir / "sid_quantizer").content_hash
    assert doc["fit"]["best_epoch"] == report["best_epoch"] >= 1
    assert sorted(doc["item_ids"]) == sorted(head.item_ids)


def _valid_users(model_dir):
    from recllm.data import load_rec_dataset, split_dataset
    from recllm.data.config import DataConfig
    from recllm.tasks.prompting import PromptSpec

    spec = PromptSpec.from_model_dir(model_dir)
    cfg = DataConfig(**spec.data)
    ds = load_rec_dataset(config=cfg)
    return spec, ds.catalog, split_dataset(ds, cfg).valid


def _states(model_dir, examples, catalog, spec, batch_size=8):
    from recllm.decode import encode_prompts
    from recllm.tasks.prompting import build_prompts
    from recllm.vocab import SID_FORMAT, load_model_with_sids

    model, tok, sid_map = load_model_with_sids(model_dir)
    model.eval()
    encoded = encode_prompts(tok, build_prompts(spec, examples, sid_map, catalog))
    begin = SID_FORMAT.token_ids(tok, sid_map.codebook_sizes).begin_id
    return model, encoded, begin, prompt_states(model, encoded, begin, batch_size=batch_size)


def test_new_items_are_found_by_their_text(fitted):
    model_dir, _, _ = fitted
    head = TextHead.load(model_dir)
    spec, catalog, valid = _valid_users(model_dir)
    _, _, _, states = _states(model_dir, valid, catalog, spec)
    quantizer = SIDQuantizer.load(model_dir / "sid_quantizer")
    new = {f"new-{w}": {"title": f"{w} brand new item"} for w in GROUPS}
    both = Catalog({**catalog.items, **new}, catalog.text_fields)
    table = ItemTable.build(head, quantizer, both)
    assert table.new.sum().item() == len(GROUPS)  # the new items: the head's shared bias
    group = [GROUPS[int(ex.target) // PER_GROUP] for ex in valid]

    def accuracy(t):
        with torch.no_grad():
            scores = head.scores(states, t.history_vectors([e.history for e in valid]), t)
        best = top_items(scores, t, 1, keep=t.new)
        return np.mean([b[0][0] == f"new-{g}" for b, g in zip(best, group, strict=True)])

    assert accuracy(table) >= 0.9
    # control: the same ids with their texts rotated among them: the pick follows the text
    ids = table.item_ids
    rows = table.new.nonzero().flatten().tolist()
    x = table.vectors.clone()
    x[rows] = x[rows[1:] + rows[:1]]
    assert accuracy(ItemTable(ids, x, table.head_rows)) <= 0.1


def test_save_load_round_trip_and_refusals(fitted, tmp_path):
    import shutil

    model_dir, head, _ = fitted
    loaded = TextHead.load(model_dir, hidden_size=head.query.in_features)
    a, b = head.state_dict(), loaded.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(UserError, match="hidden size"):
        TextHead.load(model_dir, hidden_size=head.query.in_features + 1)
    copy = tmp_path / "m"
    shutil.copytree(model_dir, copy)
    doc_path = copy / "text_head" / "text_head.json"
    doc = json.loads(doc_path.read_text())
    TextHead.load(copy)  # control: the copy loads
    doc_path.write_text(json.dumps({**doc, "quantizer_hash": "0" * 64}))
    with pytest.raises(UserError, match="SID quantizer"):
        TextHead.load(copy)
    shutil.rmtree(copy / "text_head")
    with pytest.raises(UserError, match="recllm catalog text-head"):
        TextHead.load(copy)


def test_prompt_states_equal_one_prompt_at_a_time(fitted):
    model_dir, _, _ = fitted
    from recllm.data.splits import Example

    spec, catalog, valid = _valid_users(model_dir)
    cut = [Example(e.user_id, e.history[: 1 + n % 6], e.target) for n, e in enumerate(valid[:12])]
    model, encoded, begin, batched = _states(model_dir, cut, catalog, spec, batch_size=5)
    assert len({len(e) for e in encoded}) > 1  # padding is exercised
    for n, seq in enumerate(encoded):
        with torch.no_grad():
            out = model(input_ids=torch.tensor([[*seq, begin]]), output_hidden_states=True)
        torch.testing.assert_close(batched[n], out.hidden_states[-1][0, -1], atol=1e-4, rtol=1e-4)


def _synthetic(n, vectors, hidden, seed):
    g = torch.Generator().manual_seed(seed)
    items, dim = vectors.shape
    targets = torch.randint(0, items, (n,), generator=g)
    states = torch.randn(n, hidden, generator=g) * 0.1
    states[:, :dim] += vectors[targets] * 3  # the state names its target's text
    return _Part(states, torch.zeros(n, dim), targets)


@pytest.mark.parametrize("pseudo", [0.2, 0.0])
def test_new_bias_is_learned_only_from_pseudo_new_items(pseudo):
    g = torch.Generator().manual_seed(0)
    vectors = torch.nn.functional.normalize(torch.randn(30, 8, generator=g), dim=-1)
    train, valid = _synthetic(600, vectors, 16, 1), _synthetic(200, vectors, 16, 2)
    ids = [f"i{k}" for k in range(30)]
    table = ItemTable.from_vectors(ids, ids, vectors.numpy())
    cfg = TextHeadConfig(
        epochs=40, patience=40, batch_size=50, pseudo_new=pseudo, history_mean=False
    )
    head, report = fit_text_head(train, valid, table, cfg)
    assert report["valid_loss"] < report["uniform_loss"] - 1.0
    if pseudo:
        assert head.new_bias.item() != 0.0
    else:  # control: no pseudo-new item, no gradient: the shared bias stays where it started
        assert head.new_bias.item() == 0.0


def test_top_items_filters_exactly():
    ids = ["a", "b", "c", "d"]
    table = ItemTable.from_vectors(["a", "b"], ids, np.eye(4, dtype=np.float32))
    assert table.new.tolist() == [False, False, True, True]
    scores = torch.tensor([[4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0]])
    got = top_items(scores, table, 2, exclude=[["a"], None], allow=[None, ["a", "b", "c"]])
    assert got == [[("b", 3.0), ("c", 2.0)], [("c", 3.0), ("b", 2.0)]]
    got = top_items(scores, table, 3, keep=table.new)
    assert got == [[("c", 2.0), ("d", 1.0)], [("d", 4.0), ("c", 3.0)]]


def test_config_errors_name_the_key():
    with pytest.raises(UserError, match="pseudo_new"):
        TextHeadConfig(pseudo_new=1.0)
    with pytest.raises(UserError, match="windows_per_user"):
        TextHeadConfig(windows_per_user=0)


def test_cli_fits_and_catalog_add_carries_the_head(fitted, tmp_path, capsys):
    import shutil

    from recllm.vocab.catalog_add import model_catalog

    model_dir, _, _ = fitted
    copy = tmp_path / "m"
    shutil.copytree(model_dir, copy)
    shutil.rmtree(copy / "text_head")
    assert main(["catalog", "text-head", "--model", str(copy), "--epochs", "3"]) == 0
    assert "360 training windows" in capsys.readouterr().out
    head = TextHead.load(copy)
    items = tmp_path / "new.jsonl"
    items.write_text(json.dumps({"item_id": "n1", "title": "guitar string set"}) + "\n")
    out = tmp_path / "m2"
    argv = ["catalog", "add", "--model", str(copy), "--items", str(items), "--out", str(out)]
    assert main(argv) == 0
    moved = TextHead.load(out)  # the head travels with the model; its items are the trained ones
    assert moved.item_ids == head.item_ids
    _spec, catalog, _ = _valid_users(out)
    table = ItemTable.build(
        moved, SIDQuantizer.load(out / "sid_quantizer"), model_catalog(out, catalog)
    )
    assert [i for i, new in zip(table.item_ids, table.new.tolist(), strict=True) if new] == ["n1"]


def test_cli_refuses_a_model_without_quantizer(fitted, tmp_path, capsys):
    import shutil

    model_dir, _, _ = fitted
    copy = tmp_path / "m"
    shutil.copytree(model_dir, copy)
    shutil.rmtree(copy / "sid_quantizer")
    assert main(["catalog", "text-head", "--model", str(copy)]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("recllm: error")]
    assert len(err) == 1 and "sid_quantizer" in err[0] and "recllm sid build" in err[0]


def test_cold_start_head_candidates_split_trained_and_new(fitted, tmp_path):
    """``text_head_candidates`` (the benchmark's rows): per user the head's best trained and best
    new items, history items left out, cached; a user without history gets none."""
    from recllm.bench.cold_start import text_head_candidates
    from recllm.bench.scoring import ScoreCache
    from recllm.data.splits import Example

    model_dir, _, _ = fitted
    _, _, valid = _valid_users(model_dir)
    new = [str(g * PER_GROUP) for g in range(len(GROUPS))]  # treated as "new" here
    users = [*valid[:6], Example("nobody", (), valid[0].target)]
    cache = ScoreCache(tmp_path / "scores")
    got = text_head_candidates(cache, "head", model_dir, users, new, depth=3)
    assert got[-1] == []
    for ex, cands in zip(users[:-1], got[:-1], strict=True):
        ids = [i for i, _ in cands]
        assert len(ids) == 6 and set(ids[3:]) <= set(new) and not set(ids[:3]) & set(new)
        assert not set(ids) & set(ex.history)
    assert (tmp_path / "scores" / "head.json").is_file()
    assert text_head_candidates(cache, "head", model_dir, users, new, depth=3) == got
