"""Warm-up of added items trains only the code-token rows the new items use."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from recllm.data.types import Catalog
from recllm.errors import UserError
from recllm.sid.sidmap import SIDMap
from recllm.tasks.config import PROMPTS_DIR
from recllm.tasks.prompting import PromptSpec
from recllm.testing import save_tiny_recommender
from recllm.train.catalog_warmup import warm_up_added_items
from recllm.vocab import SID_FORMAT, load_model_with_sids
from recllm.vocab.catalog_add import CatalogAddition, add_items_to_model
from recllm.vocab.checkpoint import read_vocab_record

SIZES = (3, 3, 2)


def test_warmup_moves_only_the_new_items_rows(tmp_path):
    model_dir = save_tiny_recommender(tmp_path, num_items=13, num_users=6, codebook_sizes=SIZES)
    old = SIDMap.load(model_dir / "sid_map.json")
    used = {tuple(c) for c in old.codes.tolist()}
    free = [c for c in np.ndindex(*SIZES) if c not in used][:2]
    new_ids = ["new0", "new1"]
    new_map = SIDMap([*old.item_ids, *new_ids], np.concatenate([old.codes, np.array(free)]), SIZES)
    cat = Catalog({i: {"title": f"fresh {i}"} for i in new_ids}, ("title",))
    warm = partial(warm_up_added_items, new_items=new_ids, new_catalog=cat, steps=4)
    out = add_items_to_model(
        model_dir,
        CatalogAddition(new_map, new_ids),
        cat,
        tmp_path / "w",
        warmup_steps=4,
        warmup=warm,
    )
    a, _, _ = load_model_with_sids(model_dir)
    b, tok, _ = load_model_with_sids(out)
    ids = SID_FORMAT.token_ids(tok, SIZES)
    rows = sorted({ids.code_id(lv, int(c)) for code in free for lv, c in enumerate(code)})
    sa, sb = a.state_dict(), b.state_dict()
    for name in sa:
        if name in ("model.embed_tokens.weight", "lm_head.weight"):  # untied
            keep = torch.ones(sa[name].shape[0], dtype=torch.bool)
            keep[rows] = False
            assert torch.equal(sa[name][keep], sb[name][keep]), name
            assert all(not torch.equal(sa[name][r], sb[name][r]) for r in rows), name
        else:
            assert torch.equal(sa[name], sb[name]), name
    w = read_vocab_record(out)["catalog_additions"][-1]["warmup"]
    assert w["steps"] == 4 and w["rows"] == len(rows) and w["examples"] == 4


def test_warmup_refuses_a_sid_sequence_decoder(tmp_path):
    import json

    model_dir = save_tiny_recommender(tmp_path, num_items=13, num_users=6, codebook_sizes=SIZES)
    path = model_dir / "recllm_vocab.json"
    record = json.loads(path.read_text())
    record["recommender"]["prompt_style"] = "sid_sequence"
    path.write_text(json.dumps(record))
    with pytest.raises(UserError, match="SID-sequence decoder"):
        warm_up_added_items(model_dir, ["item0"], Catalog({}, ()), steps=1)


def test_warmup_of_a_model_trained_without_catalog_tasks(tmp_path):
    # a rec-only model (the quickstart's mixture) saved no catalog templates: the warm-up
    # renders its catalog texts with the packaged ones instead of failing
    model_dir = save_tiny_recommender(tmp_path, num_items=13, num_users=6, codebook_sizes=SIZES)
    prompts = model_dir / "prompts"
    prompts.mkdir(exist_ok=True)
    for task in ("catalog_title_to_sid", "catalog_sid_to_title"):
        (prompts / f"{task}.jinja").unlink(missing_ok=True)
    (prompts / "rec.jinja").write_text(
        (Path(PROMPTS_DIR) / "rec.jinja").read_text(), encoding="utf-8"
    )
    assert PromptSpec.from_model_dir(model_dir).prompts_dir == str(prompts)
    old = SIDMap.load(model_dir / "sid_map.json")
    used = {tuple(c) for c in old.codes.tolist()}
    free = [c for c in np.ndindex(*SIZES) if c not in used][:1]
    new_map = SIDMap([*old.item_ids, "new0"], np.concatenate([old.codes, np.array(free)]), SIZES)
    cat = Catalog({"new0": {"title": "fresh new0"}}, ("title",))
    out = add_items_to_model(
        model_dir,
        CatalogAddition(new_map, ["new0"]),
        cat,
        tmp_path / "w",
        warmup_steps=2,
        warmup=partial(warm_up_added_items, new_items=["new0"], new_catalog=cat, steps=2),
    )
    w = read_vocab_record(out)["catalog_additions"][-1]["warmup"]
    assert w["steps"] == 2 and w["examples"] == 2
