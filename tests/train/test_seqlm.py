"""The from-scratch SID-sequence recommender: tokenizer, training windows, a real TRL run, and
constrained evaluation through the saved directory."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from trl import SFTConfig, SFTTrainer

from recllm.data.splits import leave_one_out
from recllm.data.types import Catalog, Interactions
from recllm.eval.run import PromptSpec, build_prompts, evaluate_recommender
from recllm.sid.sidmap import SIDMap
from recllm.train.select import BestOnValidation
from recllm.train.seqlm import (
    PROMPT_STYLE,
    SeqLMConfig,
    build_seqlm,
    history_text,
    time_budget_callback,
    training_dataset,
    training_sequences,
)
from recllm.vocab import SID_FORMAT, load_model_with_sids, save_model_with_sids

ITEMS = [f"i{n}" for n in range(12)]
# Big enough to learn the cyclic catalog in a few hundred steps, without dropout (deterministic)
SMALL = SeqLMConfig(
    hidden_size=64,
    num_layers=2,
    num_heads=2,
    num_kv_heads=2,
    intermediate_size=128,
    attention_dropout=0.0,
    max_items=8,
)


def sid_map() -> SIDMap:
    codes = np.array([(n // 4, n % 4) for n in range(12)])
    return SIDMap(item_ids=ITEMS, codes=codes, codebook_sizes=(3, 4))


def cyclic_split(users: int = 24, length: int = 9):
    """Every user walks the catalog in order from a different start: next item = current + 1."""
    seqs = {f"u{u}": [ITEMS[(u + t) % 12] for t in range(length)] for u in range(users)}
    return leave_one_out(Interactions(seqs), max_history=20)


def test_tokenizer_round_trips_sid_sequences():
    model, tok = build_seqlm(sid_map(), SeqLMConfig(hidden_size=32, num_layers=1, num_heads=2))
    text = history_text(ITEMS[:3], sid_map(), None)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == 1 + 3 * (2 + 2)  # BOS + per item: begin, 2 codes, end
    assert tok.decode(ids) == text
    assert model.get_input_embeddings().weight.shape[0] % 64 == 0
    sid_rows = model.get_input_embeddings().weight[4 : 4 + 2 + 3 + 4]
    assert torch.unique(sid_rows, dim=0).shape[0] == sid_rows.shape[0]  # no symmetric init


def test_training_windows_cover_every_target_once_from_train_only():
    split = cyclic_split(users=1, length=30)
    smap = sid_map()
    texts = training_sequences(split, smap, max_items=10)
    train_seq = split.train.sequences["u0"]  # 28 items: valid and test targets held out
    assert len(train_seq) == 28
    items_per_window = [t.count(SID_FORMAT.begin) for t in texts]
    assert max(items_per_window) == 11
    # every training target (items 2..28) is predicted in exactly one window
    assert sum(n - 1 for n in items_per_window) == len(train_seq) - 1
    # the first window ends with the last training item (not the valid/test targets), and the
    # last one starts at the first item
    assert texts[0].endswith(history_text(train_seq[-1:], smap, None)[len("<|im_start|>") :])
    assert texts[-1] == history_text(train_seq[: items_per_window[-1]], smap, None)


def test_learns_a_cyclic_catalog_and_evaluates(tmp_path, torch_single_thread):
    """A real SFTTrainer run learns next = current + 1; evaluation from the saved directory
    finds the test targets, with 0 invalid entries."""
    smap = sid_map()
    split = cyclic_split()
    cfg = SMALL
    model, tok = build_seqlm(smap, cfg)
    train = training_dataset(split, smap, tok, cfg.max_items)
    args = SFTConfig(
        output_dir=str(tmp_path / "run"),
        max_steps=250,
        per_device_train_batch_size=8,
        learning_rate=3e-3,
        warmup_steps=10,
        report_to="none",
        bf16=False,
        use_cpu=True,
        save_strategy="no",
        logging_steps=10,
        max_length=None,
        train_sampling_strategy="group_by_length",
    )
    budget = time_budget_callback(None)
    SFTTrainer(
        model=model, args=args, train_dataset=train, processing_class=tok, callbacks=[budget]
    ).train()
    assert budget.stopped_at is None
    recommender = {"prompt_style": PROMPT_STYLE, "max_history": cfg.max_items}
    out = save_model_with_sids(model, tok, smap, tmp_path / "model", recommender=recommender)
    assert json.loads((out / "recllm_vocab.json").read_text())["recommender"] == recommender

    model, tok, smap = load_model_with_sids(out)
    spec = PromptSpec.from_model_dir(out)
    assert spec.style == "sid_sequence" and spec.max_history == 8
    catalog = Catalog({i: {"title": f"title {i}"} for i in ITEMS}, text_fields=("title",))
    prompts = build_prompts(spec, split.test, smap, catalog)
    assert prompts[0].count(SID_FORMAT.begin) == 8  # history cut to max_history
    run = dict(beams=4, ks=(1, 3), batch_size=8, progress=False)
    result = evaluate_recommender(
        model, tok, smap, split.test, spec, catalog, engine="sid_beam", **run
    )
    with pytest.raises(ValueError, match="engine='sid_beam'"):
        evaluate_recommender(model, tok, smap, split.test, spec, catalog, engine="generate", **run)
    m = result.metrics
    assert m["invalid_rate"] == 0.0 and m["users"] == 24
    assert m["recall@1"] >= 0.5 and m["recall@3"] >= 0.8, m  # chance: 1/12 and 3/12
    assert all(len(set(r)) == len(r) == 3 for r in result.ranked)  # distinct catalog items


def test_time_budget_stops_training(tmp_path, torch_single_thread):
    smap = sid_map()
    model, tok = build_seqlm(smap, SeqLMConfig(hidden_size=32, num_layers=1, num_heads=2))
    train = training_dataset(cyclic_split(), smap, tok, 8)
    args = SFTConfig(
        output_dir=str(tmp_path),
        max_steps=10_000,
        per_device_train_batch_size=4,
        report_to="none",
        bf16=False,
        use_cpu=True,
        save_strategy="no",
        max_length=None,
    )
    budget = time_budget_callback(0.0)
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=train, processing_class=tok, callbacks=[budget]
    )
    trainer.train()
    assert budget.stopped_at == trainer.state.global_step == 1


def _select_run(tmp_path, learning_rate: float, epochs: int, patience):
    smap = sid_map()
    split = cyclic_split()
    cfg = SMALL
    model, tok = build_seqlm(smap, cfg)
    catalog = Catalog({i: {"title": f"title {i}"} for i in ITEMS}, text_fields=("title",))
    spec = PromptSpec(style=PROMPT_STYLE, max_history=cfg.max_items)

    def on_valid(m):
        return evaluate_recommender(
            m, tok, smap, split.valid, spec, catalog, beams=4, ks=(1, 3), progress=False
        ).metrics

    select = BestOnValidation(on_valid, metric="recall@1", patience=patience)
    args = SFTConfig(
        output_dir=str(tmp_path),
        num_train_epochs=epochs,
        per_device_train_batch_size=2,
        learning_rate=learning_rate,
        lr_scheduler_type="constant",
        report_to="none",
        bf16=False,
        use_cpu=True,
        save_strategy="no",
        max_length=None,
    )
    train = training_dataset(split, smap, tok, cfg.max_items)
    SFTTrainer(
        model=model, args=args, train_dataset=train, processing_class=tok, callbacks=[select]
    ).train()
    return model, select


def test_best_on_validation_restores_the_best_epoch(tmp_path, torch_single_thread):
    model, select = _select_run(tmp_path, learning_rate=3e-3, epochs=6, patience=None)
    assert [h["epoch"] for h in select.history] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    values = [h["recall@1"] for h in select.history]
    assert select.best == max(values) > values[0]  # it learned, and tracked the best
    assert select.best_epoch == select.history[values.index(max(values))]["epoch"]
    last = dict(model.state_dict())
    assert select.restore_best(model)
    again = select.evaluate(model)
    best = select.history[values.index(max(values))]
    for key in ("recall@1", "recall@3", "ndcg@1", "ndcg@3", "invalid_rate"):
        assert again[key] == best[key], key
    if select.best_epoch != 6.0:  # the restored weights are not the last epoch's
        assert any(not torch.equal(v, model.state_dict()[k]) for k, v in last.items())


def test_best_on_validation_stops_without_gain(tmp_path, torch_single_thread):
    _, select = _select_run(tmp_path, learning_rate=0.0, epochs=5, patience=1)
    assert len(select.history) == 2  # epoch 2 equals epoch 1: no gain, stop
    assert select.best_epoch == 1.0


def test_hidden_dropout_acts_in_training_only_and_saves_a_plain_qwen3(tmp_path):
    smap = sid_map()
    cfg = SeqLMConfig(
        hidden_size=32, num_layers=2, num_heads=2, attention_dropout=0.0, hidden_dropout=0.5
    )
    model, tok = build_seqlm(smap, cfg)
    ids = tok(history_text(ITEMS[:4], smap, None), return_tensors="pt", add_special_tokens=False)
    ids = ids["input_ids"]
    # 1 embedding + 2 layers x (attention output, MLP output)
    assert len(model.get_input_embeddings()._forward_hooks) == 1
    model.eval()
    with torch.no_grad():
        a, b = model(ids).logits, model(ids).logits
    assert torch.equal(a, b)  # eval: deterministic
    model.train()
    with torch.no_grad():
        c = model(ids).logits
    assert not torch.allclose(a, c)  # training: dropped
    save_model_with_sids(model, tok, smap, tmp_path / "m")
    loaded, _, _ = load_model_with_sids(tmp_path / "m")
    assert not loaded.get_input_embeddings()._forward_hooks  # a plain Qwen3 checkpoint
    loaded.train()  # the hooks are gone: no dropout even in training mode
    with torch.no_grad():
        assert torch.allclose(loaded(ids).logits, a, atol=1e-5)
    with pytest.raises(ValueError, match="hidden dropout"):
        build_seqlm(
            smap, SeqLMConfig(hidden_size=32, num_layers=1, num_heads=2, hidden_dropout=1.0)
        )


def test_an_ensemble_of_saved_models_loads_checked_and_evaluates(tmp_path, torch_single_thread):
    """Two decoders of one SID map decode together; a third with other prompts or another SID
    map is refused by name."""
    from recllm.eval.run import load_ensemble
    from recllm.vocab.format import VocabMismatchError

    smap, split = sid_map(), cyclic_split()
    recommender = {"prompt_style": PROMPT_STYLE, "max_history": 8}
    dirs = []
    for seed, max_history in [(0, 8), (1, 8), (2, 5)]:
        model, tok = build_seqlm(
            smap, SeqLMConfig(hidden_size=32, num_layers=1, num_heads=2, model_seed=seed)
        )
        rec = dict(recommender, max_history=max_history)
        dirs.append(save_model_with_sids(model, tok, smap, tmp_path / f"m{seed}", recommender=rec))
    models, tok, loaded, spec = load_ensemble(dirs[:2])
    assert len(models) == 2 and loaded.content_hash == smap.content_hash
    catalog = Catalog({i: {"title": f"title {i}"} for i in ITEMS}, text_fields=("title",))
    run = dict(beams=6, ks=(1, 3), batch_size=8, progress=False)
    result = evaluate_recommender(models, tok, loaded, split.test, spec, catalog, **run)
    assert result.metrics["invalid_rate"] == 0.0 and result.metrics["users"] == 24
    assert all(len(set(r)) == len(r) == 3 for r in result.ranked)
    single = evaluate_recommender(models[0], tok, loaded, split.test, spec, catalog, **run)
    assert single.ranked != result.ranked  # the second model changes the lists
    with pytest.raises(ValueError, match="same prompts"):
        load_ensemble([dirs[0], dirs[2]])
    other = SIDMap(item_ids=ITEMS, codes=smap.codes[::-1].copy(), codebook_sizes=(3, 4))
    model, tok = build_seqlm(other, SeqLMConfig(hidden_size=32, num_layers=1, num_heads=2))
    odd = save_model_with_sids(model, tok, other, tmp_path / "other", recommender=recommender)
    with pytest.raises(VocabMismatchError):
        load_ensemble([dirs[0], odd])
    with pytest.raises(ValueError, match="ensemble"):
        evaluate_recommender(
            models, tok, loaded, split.test, spec, catalog, engine="generate", **run
        )
