"""Teacher-forced per-level ranks against a brute force: one unpadded forward per user and level."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recllm.eval.levels import level_ranks, level_report
from recllm.sid.sidmap import SIDMap
from recllm.train.seqlm import SeqLMConfig, build_seqlm, history_text
from recllm.vocab import SID_FORMAT


def random_map(seed: int) -> SIDMap:
    """30 items over 3 levels of sizes (3, 4, 5): shared prefixes, uneven sibling counts."""
    rng = np.random.default_rng(seed)
    all_codes = np.array([(a, b, c) for a in range(3) for b in range(4) for c in range(5)])
    rows = rng.choice(len(all_codes), size=30, replace=False)
    return SIDMap([f"i{n}" for n in range(30)], all_codes[rows], (3, 4, 5))


def brute_force(model, tok, sid_map, prompt, target):
    ids = SID_FORMAT.token_ids(tok, sid_map.codebook_sizes)
    codes = sid_map.codes
    code = sid_map.code(target)
    seq = tok(prompt, add_special_tokens=False)["input_ids"] + [ids.begin_id]
    ranks, logps = [], []
    for lv in range(sid_map.levels):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([seq])).logits[0, -1].float()
        siblings = sorted({int(c[lv]) for c in codes if tuple(c[:lv]) == tuple(code[:lv])})
        scores = torch.stack([logits[ids.level_ids(lv).start + c] for c in siblings])
        mine = logits[ids.level_ids(lv).start + code[lv]]
        ranks.append(int((scores >= mine).sum()))
        logps.append(float(mine - torch.logsumexp(scores, 0)))
        seq.append(ids.level_ids(lv).start + code[lv])
    return ranks, logps, len(siblings)


@pytest.mark.parametrize("seed", [0, 1])
def test_level_ranks_match_brute_force(seed):
    sid_map = random_map(seed)
    model, tok = build_seqlm(
        sid_map, SeqLMConfig(hidden_size=32, num_layers=1, num_heads=2, model_seed=seed)
    )
    model.eval()
    rng = np.random.default_rng(seed)
    items = list(sid_map.item_ids)
    # histories of different lengths: the batch is left-padded
    prompts = [history_text(list(rng.choice(items, size=n)), sid_map, None) for n in (1, 4, 2, 7)]
    targets = [str(t) for t in rng.choice(items, size=4)]
    ranks, logp, allowed = level_ranks(model, tok, sid_map, prompts, targets, batch_size=3)
    assert ranks.shape == logp.shape == allowed.shape == (4, 3)
    for u, (prompt, target) in enumerate(zip(prompts, targets, strict=True)):
        want_ranks, want_logp, want_last_allowed = brute_force(model, tok, sid_map, prompt, target)
        assert ranks[u].tolist() == want_ranks
        np.testing.assert_allclose(logp[u], want_logp, atol=1e-4)
        assert allowed[u, -1] == want_last_allowed
    assert (allowed[:, 0] == 3).all()  # every first code is used by some item
    assert ((ranks >= 1) & (ranks <= allowed)).all() and (logp <= 1e-6).all()


def test_level_report_summarises_ranks_and_rejects_unknown_targets():
    sid_map = random_map(0)
    model, tok = build_seqlm(sid_map, SeqLMConfig(hidden_size=32, num_layers=1, num_heads=2))
    prompts = [history_text(["i1", "i2"], sid_map, None)] * 3
    targets = ["i3", "i4", "i5"]
    ranks, logp, _ = level_ranks(model, tok, sid_map, prompts, targets, progress=False)
    report = level_report(model, tok, sid_map, prompts, targets, ks=(1, 2), progress=False)
    assert report.users == 3
    assert report.hit[1] == pytest.approx((ranks <= 1).mean(0).tolist())
    assert report.hit[2] == pytest.approx((ranks <= 2).mean(0).tolist())
    assert report.mean_logp == pytest.approx(logp.mean(0).tolist(), abs=1e-6)
    assert set(report.as_dict()) >= {"users", "hit@1", "hit@2", "mean_logp", "mean_rank"}
    with pytest.raises(KeyError, match="no SID"):
        level_ranks(model, tok, sid_map, prompts[:1], ["nope"], progress=False)
