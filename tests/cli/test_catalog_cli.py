"""``recllm catalog add`` through the CLI's main(): new items join a trained model's map with
its weights unchanged; faults (no quantizer, known ids, no text, other format) are one line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recllm.cli import main
from recllm.sid.sidmap import SIDMap
from recllm.testing import build_tiny_qwen3, build_tiny_tokenizer
from recllm.vocab import extend_vocab, load_model_with_sids, save_model_with_sids
from recllm.vocab.catalog_add import read_added_items

WORDS = ["red", "blue", "steel", "wood", "drill", "saw", "tape", "glue", "lamp", "cable"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    rng = np.random.default_rng(0)
    d = tmp_path_factory.mktemp("cc")
    items = {str(i): {"title": " ".join(rng.choice(WORDS, 3)) + f" model {i}"} for i in range(60)}
    inter = {str(u): [int(x) for x in rng.choice(60, size=5, replace=False)] for u in range(40)}
    (d / "Toy.item.json").write_text(json.dumps(items))
    (d / "Toy.inter.json").write_text(json.dumps(inter))
    sids = d / "sids"
    argv = ["sid", "build", "--data", str(d), "--levels", "2", "--codebook-size", "12"]
    assert main([*argv, "--text-dim", "8", "--no-cache", "--out", str(sids)]) == 0
    sid_map = SIDMap.load(sids)
    tok = build_tiny_tokenizer()
    model = build_tiny_qwen3(tok, tie_word_embeddings=False)
    extend_vocab(model, tok, sid_map)
    model_dir = save_model_with_sids(model, tok, sid_map, d / "model")  # no sid_quantizer/
    return sids, model_dir


def _error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("recllm: error: ")]
    assert len(lines) == 1, err[-2000:]
    return lines[0]


def _items(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_catalog_add_end_to_end(trained, tmp_path, capsys):
    sids, model_dir = trained
    items = _items(
        tmp_path / "new.jsonl",
        [{"item_id": f"n{k}", "title": f"{WORDS[k]} lamp"} for k in range(5)],
    )
    out = tmp_path / "m2"
    base = ["catalog", "add", "--model", str(model_dir), "--items", str(items)]
    # an older model without the quantizer: the fix names --sids
    assert main([*base, "--out", str(out)]) == 2
    line = _error(capsys)
    assert "sid_quantizer" in line and "--sids DIR" in line
    assert not out.exists()
    assert main([*base, "--out", str(out), "--sids", str(sids)]) == 0
    old, new = SIDMap.load(model_dir), SIDMap.load(out)
    assert f"5 new items added to {len(old)}" in capsys.readouterr().out
    assert new.item_ids == old.item_ids + [f"n{k}" for k in range(5)]
    np.testing.assert_array_equal(new.codes[: len(old)], old.codes)
    assert (out / "model.safetensors").read_bytes() == (
        model_dir / "model.safetensors"
    ).read_bytes()
    assert (out / "sid_quantizer" / "quantizer.json").is_file()
    assert read_added_items(out).items["n3"]["title"] == "wood lamp"
    load_model_with_sids(out)
    # the quantizer travelled: a second add needs no --sids
    more = _items(tmp_path / "more.jsonl", [{"item_id": "m1", "title": "red saw"}])
    out3 = tmp_path / "m3"
    assert (
        main(["catalog", "add", "--model", str(out), "--items", str(more), "--out", str(out3)]) == 0
    )
    assert SIDMap.load(out3).item_ids[-1] == "m1"
    assert list(read_added_items(out3).items) == [*(f"n{k}" for k in range(5)), "m1"]


@pytest.mark.parametrize(
    ("name", "content", "expect"),
    [
        ("known.jsonl", '{"item_id": "3", "title": "x"}\n', "refuse"),
        ("notext.jsonl", '{"item_id": "z1", "title": ""}\n', "text"),
        ("items.xlsx", "x", "format"),
    ],
)
def test_catalog_add_faults(trained, tmp_path, capsys, name, content, expect):
    sids, model_dir = trained
    f = tmp_path / name
    f.write_text(content)
    argv = ["catalog", "add", "--model", str(model_dir), "--items", str(f), "--sids", str(sids)]
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    assert expect in _error(capsys).lower()
    assert not (tmp_path / "o").exists()


def test_saved_model_carries_its_quantizer_only_for_its_map(trained, tmp_path, capsys):
    sids, _ = trained
    sid_map = SIDMap.load(sids)
    tok = build_tiny_tokenizer()
    model = build_tiny_qwen3(tok, tie_word_embeddings=False)
    extend_vocab(model, tok, sid_map)
    q = sids / "quantizer"
    m = save_model_with_sids(model, tok, sid_map, tmp_path / "m", quantizer_dir=q)
    assert (m / "sid_quantizer" / "quantizer.json").read_bytes() == (
        q / "quantizer.json"
    ).read_bytes()
    items = _items(tmp_path / "n.jsonl", [{"item_id": "n1", "title": "blue tape"}])
    argv = ["catalog", "add", "--model", str(m), "--items", str(items)]
    assert main([*argv, "--out", str(tmp_path / "m2")]) == 0  # no --sids needed
    # control: a quantizer of another SID map is not copied
    other = SIDMap(sid_map.item_ids[:-1], sid_map.codes[:-1], sid_map.codebook_sizes)
    tok2 = build_tiny_tokenizer()
    model2 = build_tiny_qwen3(tok2, tie_word_embeddings=False)
    extend_vocab(model2, tok2, other)
    m3 = save_model_with_sids(model2, tok2, other, tmp_path / "m3", quantizer_dir=q)
    assert not (m3 / "sid_quantizer").exists()


def test_catalog_add_with_warmup_through_the_cli(trained, tmp_path, capsys):
    from recllm.vocab.checkpoint import read_vocab_record

    sids, model_dir = trained
    items = _items(tmp_path / "n.jsonl", [{"item_id": "w1", "title": "steel drill kit"}])
    out = tmp_path / "w"
    argv = ["catalog", "add", "--model", str(model_dir), "--items", str(items), "--sids"]
    assert main([*argv, str(sids), "--out", str(out), "--warmup-steps", "2"]) == 0
    assert "2 warm-up steps" in capsys.readouterr().out
    warm = read_vocab_record(out)["catalog_additions"][-1]["warmup"]
    assert warm["steps"] == 2 and warm["examples"] == 2 and warm["rows"] >= 1
    assert (out / "model.safetensors").read_bytes() != (
        model_dir / "model.safetensors"
    ).read_bytes()
    load_model_with_sids(out)
