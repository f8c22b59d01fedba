"""The cold-start benchmark (``scripts/cold_start.py``): items no model trained on, recommended.

A seeded share of the catalog is held out of training entirely
(:mod:`recllm.data.holdout`, through ``DataConfig.holdout_items`` so the recipes train on the
reduced data themselves); the test examples are the usual split's. Test users whose target is
held out form the *cold* set, all others the *warm* set. Rows, all ranked on the same users:

- ``recllm, trained catalog``: the trained model without the new items; it cannot name a held-out
  item (cold R@10 is 0) and never sees one in a history (held-out items leave its histories:
  it has no code for them). The warm reference.
- ``recllm + new items``: the same weights, the held-out items given codes by the frozen SID
  quantizer and added to the model (:func:`recllm.vocab.catalog_add.add_items_to_model`, no
  training).
- ``recllm + new items, warm-up``: then ``warmup_steps`` steps on the new items' catalog texts
  (a chat model; the SID-sequence decoder has no text to warm up on).
- ``recllm + new items, beam group (+ bonus)``: the new items searched in a beam group of their
  own (:mod:`recllm.decode.fresh`), with a bonus chosen on validation users by R@10 of all, and
  by the goal's rule (``warm_tolerance``: the most cold R@10 with warm within 5%).
- ``recllm + new items by text similarity (hybrid)``: the trained items by the beam, the new
  items by ``alpha`` x their text cosine to the user's recent items (less the mean cosine of the
  user's ``norm_top`` nearest items; the user's vector blended by ``guide`` with the beam's best
  items') + a bonus (:class:`recllm.decode.fresh.TextNewItems`, what ``catalog add
  --new-item-text-alpha`` makes the Recommender do), all four chosen on validation users by the
  goal's rule.
- ``recllm text head``: a read-out of the frozen model's state fitted into the added model
  (:mod:`recllm.decode.text_head`), over the trained items alone (its own warm reference), with
  the new items at its learned new-item bias, and with a bonus chosen by the goal's rule.
- ``text-KNN``: :class:`recllm.baselines.text_knn.TextKNN` (TIGER's Semantic-KNN).
- ``popularity``: the training split's most frequent items (cold R@10 0: a held-out item has
  no training count).
- ``SASRec``: item-id embeddings only (cold R@10 0 by construction: a held-out item has no
  trained embedding).

Each row reports cold R@10 / N@10, warm R@10 / N@10 (and the relative change of warm R@10
against the trained-catalog row), and the share of cold items among everyone's top 10.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recllm.bench.scoring import ScoreCache, digest, model_fingerprint
from recllm.data.config import DataConfig
from recllm.data.splits import Example, Split
from recllm.data.types import Catalog

logger = logging.getLogger(__name__)

__all__ = [
    "ColdSplit",
    "add_new_items",
    "choose_bonus",
    "figures",
    "fresh_candidates",
    "knn_lists",
    "make_cold_split",
    "model_lists",
    "plot",
    "plot_bonus",
    "popularity_lists",
    "sasrec_lists",
    "table",
    "with_bonus",
    "without_items",
]

#: The cut-off of every figure.
K = 10
HOLDOUT_FILE = "holdout_items.txt"


@dataclasses.dataclass
class ColdSplit:
    """The cold-start split of one data set.

    Attributes:
        held_out: The held-out item ids (sorted).
        holdout_file: The file naming them (``DataConfig.holdout_items`` of the training run).
        data_cfg: The data settings of the training run (``holdout_items`` set).
        catalog: The full catalog (held-out items included).
        train_catalog: The catalog the SIDs and the model are built from.
        split: The training run's split (held-out items removed from every part).
        test: The test examples of the usual split (held-out items included).
        valid: The validation examples of the usual split (where the new-item bonus is chosen).
    """

    held_out: list[str]
    holdout_file: Path
    data_cfg: DataConfig
    catalog: Catalog
    train_catalog: Catalog
    split: Split
    test: list[Example]
    valid: list[Example] = dataclasses.field(default_factory=list)

    @property
    def cold(self) -> list[bool]:
        """Per test user: is its target a held-out item."""
        held = set(self.held_out)
        return [ex.target in held for ex in self.test]


def make_cold_split(
    data_cfg: DataConfig, out_dir: str | Path, share: float = 0.1, seed: int = 0
) -> ColdSplit:
    """Hold a seeded ``share`` of ``data_cfg``'s catalog out; write the ids to
    ``out_dir/holdout_items.txt``; load the data as the training run will.

    Raises:
        UserError / DataError: The data cannot be read or split.
    """
    from recllm.data import load_rec_dataset, split_dataset
    from recllm.data.holdout import choose_holdout_items, write_holdout_items

    base = dataclasses.replace(data_cfg, holdout_items=None)
    full = load_rec_dataset(config=base)
    held = choose_holdout_items(full.catalog.ids, share, seed)
    path = write_holdout_items(Path(out_dir) / HOLDOUT_FILE, held)
    cfg = dataclasses.replace(data_cfg, holdout_items=str(path.resolve()))
    reduced = load_rec_dataset(config=cfg)
    split = split_dataset(reduced, cfg)
    usual = split_dataset(full, base)  # the usual split's test examples, unchanged
    return ColdSplit(
        held, path, cfg, full.catalog, reduced.catalog, split, usual.test, list(usual.valid)
    )


def without_items(examples: Sequence[Example], items: Sequence[str]) -> list[Example]:
    """``examples`` with ``items`` removed from their histories (targets kept)."""
    drop = set(items)
    return [
        Example(ex.user_id, tuple(i for i in ex.history if i not in drop), ex.target)
        for ex in examples
    ]


def figures(
    ranked: Sequence[Sequence[str]], test: Sequence[Example], held_out: Sequence[str]
) -> dict[str, Any]:
    """Cold and warm R@10 / N@10 and the share of held-out items among all top-10 slots.

    Raises:
        ValueError: ``ranked`` and ``test`` differ in length.
    """
    if len(ranked) != len(test):
        raise ValueError(f"{len(ranked)} ranked lists for {len(test)} users")
    held = set(held_out)
    sums = {"cold": [0.0, 0.0, 0], "warm": [0.0, 0.0, 0]}
    cold_slots = slots = 0
    for ex, items in zip(test, ranked, strict=True):
        top = list(items)[:K]
        part = sums["cold" if ex.target in held else "warm"]
        part[2] += 1
        if ex.target in top:
            part[0] += 1
            part[1] += 1 / math.log2(top.index(ex.target) + 2)
        slots += len(top)
        cold_slots += sum(i in held for i in top)
    out: dict[str, Any] = {}
    for name, (hits, gain, n) in sums.items():
        out[f"{name}_R@{K}"] = round(hits / n, 4) if n else None
        out[f"{name}_N@{K}"] = round(gain / n, 4) if n else None
        out[f"{name}_users"] = n
    out[f"cold_share_top{K}"] = round(cold_slots / slots, 4) if slots else 0.0
    return out


def model_lists(
    cache: ScoreCache,
    name: str,
    model_dir: str | Path,
    examples: Sequence[Example],
    catalog: Catalog,
    *,
    beams: int = 20,
    batch_size: int = 32,
) -> list[list[str]]:
    """Every user's top-10 items from constrained SID beam search (cached under ``name``).

    Users with an empty history get an empty list (nothing to condition on).
    """
    from recllm.eval.run import evaluate_recommender, load_ensemble

    key = {
        "model": model_fingerprint(model_dir),
        "users": digest([(list(ex.history), ex.target) for ex in examples]),
        "beams": beams,
        "k": K,
    }

    def compute() -> dict:
        keep = [n for n, ex in enumerate(examples) if ex.history]
        # Only the prompts are read (the figures come from the lists): a target the model has
        # no code for (a held-out item, for the model without them) is replaced by a stand-in.
        stand_in = catalog.ids[0]
        users = [
            ex if ex.target in catalog else dataclasses.replace(ex, target=stand_in)
            for ex in (examples[n] for n in keep)
        ]
        models, tok, sid_map, spec = load_ensemble([model_dir])
        for m in models:
            m.eval()
        res = evaluate_recommender(
            models[0],
            tok,
            sid_map,
            users,
            spec,
            catalog,
            beams=beams,
            ks=(K,),
            batch_size=batch_size,
        )
        del models
        gc.collect()
        ranked: list[list[str]] = [[] for _ in examples]
        for n, items in zip(keep, res.ranked, strict=True):
            ranked[n] = [i for i in items if i is not None][:K]
        return {"ranked": ranked, "seconds": round(res.seconds, 1)}

    return cache.get_or_compute(name, key, compute)["ranked"]


def add_new_items(
    model_dir: str | Path,
    sids_dir: str | Path | None,
    new_catalog: Catalog,
    out_dir: str | Path,
    *,
    warmup_steps: int = 0,
) -> tuple[Path, dict]:
    """The model with the new items added (frozen quantizer codes; weights untouched unless
    ``warmup_steps``): ``(model dir, assignment report)``. Done once per settings."""
    import json

    from recllm.sid.quantizer import SIDQuantizer, assign_items
    from recllm.sid.sidmap import FILENAME, SIDMap
    from recllm.vocab.catalog_add import add_items_to_model, model_quantizer_dir

    out = Path(out_dir)
    done = out.with_name(out.name + ".json")
    record = {
        "model": model_fingerprint(model_dir),
        "items": sorted(new_catalog.ids),
        "warmup_steps": warmup_steps,
    }
    if done.is_file() and out.is_dir():
        stored = json.loads(done.read_text())
        if stored.get("record") == record:
            return out, stored["report"]
    qdir = model_quantizer_dir(model_dir, sids_dir)
    assignment = assign_items(
        SIDQuantizer.load(qdir), SIDMap.load(Path(model_dir) / FILENAME), new_catalog
    )
    warm: dict[str, Any] = {}
    if warmup_steps:  # training code lives above the vocab layer: handed in as a function
        import functools

        from recllm.train.catalog_warmup import warm_up_added_items

        warm["warmup"] = functools.partial(
            warm_up_added_items,
            new_items=list(assignment.new_items),
            new_catalog=new_catalog,
            steps=warmup_steps,
        )
    add_items_to_model(
        model_dir,
        assignment,
        new_catalog,
        out,
        warmup_steps=warmup_steps,
        quantizer_dir=qdir,
        overwrite=True,
        **warm,
    )
    from recllm.io import write_json_atomic

    report = json.loads(json.dumps(assignment.report, default=str))
    write_json_atomic(done, {"record": record, "report": report})
    return out, report


def fresh_candidates(
    cache: ScoreCache,
    name: str,
    model_dir: str | Path,
    examples: Sequence[Example],
    catalog: Catalog,
    new_items: Sequence[str],
    *,
    beams: int = 20,
    batch_size: int = 32,
) -> list[list[tuple[str, float]]]:
    """Every user's candidates of the search with the new items' beam group
    (:mod:`recllm.decode.fresh`, bonus 0): both groups' answers, each item once, with their
    length-normalised log-probs (cached under ``name``).

    The groups do not depend on the bonus, so :func:`with_bonus` ranks them for any bonus
    exactly as a search run with that bonus would.
    """
    import torch

    from recllm.decode import SIDTrie, encode_prompts, left_pad, sid_beam_search
    from recllm.decode.fresh import FreshItems
    from recllm.eval.run import PromptSpec, build_prompts
    from recllm.vocab import SID_FORMAT, load_model_with_sids

    key = {
        "model": model_fingerprint(model_dir),
        "users": digest([(list(ex.history), ex.target) for ex in examples]),
        "new": digest(sorted(new_items)),
        "beams": beams,
        "groups": "trained items | new items",  # (the first group held every item before)
    }

    def compute() -> dict:
        import time

        from tqdm.auto import tqdm

        start = time.perf_counter()
        model, tok, sid_map = load_model_with_sids(model_dir)
        model.eval()
        spec = PromptSpec.from_model_dir(model_dir)
        trie = SIDTrie.from_sid_map(sid_map, SID_FORMAT.token_ids(tok, sid_map.codebook_sizes))
        fresh = FreshItems.from_ids(trie, list(new_items), bonus=0.0)
        stop = None if spec.style == "sid_sequence" else tok.eos_token_id
        keep = [n for n, ex in enumerate(examples) if ex.history]
        prompts = build_prompts(spec, [examples[n] for n in keep], sid_map, catalog)
        encoded = encode_prompts(tok, prompts)
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        found: list[list[tuple[str, float]]] = []
        for s in tqdm(range(0, len(encoded), batch_size), desc=f"fresh search ({name})"):
            ids, mask = left_pad(encoded[s : s + batch_size], pad, model.device)
            with torch.inference_mode():
                out = sid_beam_search(
                    model,
                    ids,
                    mask,
                    trie,
                    num_beams=beams,
                    num_return_sequences=2 * beams,
                    stop_token_id=stop,
                    fresh=fresh,
                )
            for irow, srow in zip(out.items.tolist(), out.scores.tolist(), strict=True):
                found.append(
                    [(sid_map.item_ids[i], s) for i, s in zip(irow, srow, strict=True) if i >= 0]
                )
        del model
        gc.collect()
        return _placed(keep, found, len(examples), start)

    return _cached_candidates(cache, name, key, compute)


def text_head_candidates(
    cache: ScoreCache,
    name: str,
    model_dir: str | Path,
    examples: Sequence[Example],
    new_items: Sequence[str],
    *,
    batch_size: int = 32,
    depth: int = K,
) -> list[list[tuple[str, float]]]:
    """Every user's best ``depth`` trained and best ``depth`` new items by the model's text head
    (:mod:`recllm.decode.text_head`, fitted beforehand into ``model_dir``; the learned new-item
    bias included), history items left out (cached under ``name``). The two lists hold every
    top 10 :func:`with_bonus` can form, for any bonus."""
    import hashlib

    import torch

    from recllm.data import load_rec_dataset
    from recllm.data.config import DataConfig
    from recllm.decode import encode_prompts
    from recllm.decode.text_head import ItemTable, TextHead, prompt_states, top_items
    from recllm.eval.run import PromptSpec, build_prompts
    from recllm.sid.quantizer import SIDQuantizer
    from recllm.vocab import SID_FORMAT, load_model_with_sids
    from recllm.vocab.catalog_add import model_catalog

    head_file = Path(model_dir) / "text_head" / "head.safetensors"
    key = {
        "model": model_fingerprint(model_dir),
        "head": hashlib.sha256(head_file.read_bytes()).hexdigest(),
        "users": digest([(list(ex.history), ex.target) for ex in examples]),
        "new": digest(sorted(new_items)),
        "depth": depth,
    }

    def compute() -> dict:
        import time

        start = time.perf_counter()
        model, tok, sid_map = load_model_with_sids(model_dir)
        model.eval()
        head = TextHead.load(model_dir, hidden_size=model.config.hidden_size)
        spec = PromptSpec.from_model_dir(model_dir)
        catalog = model_catalog(model_dir, load_rec_dataset(config=DataConfig(**spec.data)).catalog)
        table = ItemTable.build(head, SIDQuantizer.load(Path(model_dir) / "sid_quantizer"), catalog)
        keep = [n for n, ex in enumerate(examples) if ex.history]
        users = [examples[n] for n in keep]
        encoded = encode_prompts(tok, build_prompts(spec, users, sid_map, catalog))
        begin = SID_FORMAT.token_ids(tok, sid_map.codebook_sizes).begin_id
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        states = prompt_states(model, encoded, begin, batch_size=batch_size, pad_id=pad, desc=name)
        del model
        gc.collect()
        held = set(new_items)
        new = torch.tensor([i in held for i in table.item_ids])
        found: list[list[tuple[str, float]]] = []
        for s in range(0, len(users), 256):
            part = users[s : s + 256]
            with torch.no_grad():
                scores = head.scores(
                    states[s : s + 256], table.history_vectors([e.history for e in part]), table
                )
            seen = [list(e.history) for e in part]
            old = top_items(scores, table, depth, exclude=seen, keep=~new)
            fresh = top_items(scores, table, depth, exclude=seen, keep=new)
            found += [a + b for a, b in zip(old, fresh, strict=True)]
        return _placed(keep, found, len(examples), start)

    return _cached_candidates(cache, name, key, compute)


def _placed(keep: list[int], found: list, total: int, start: float) -> dict[str, Any]:
    """Candidates of the users ``keep`` (those with a history) put back in place among
    ``total`` users (the others get none), with the seconds since ``start``."""
    import time

    ranked: list[list[tuple[str, float]]] = [[] for _ in range(total)]
    for n, cands in zip(keep, found, strict=True):
        ranked[n] = cands
    return {"candidates": ranked, "seconds": round(time.perf_counter() - start, 1)}


def _cached_candidates(cache: ScoreCache, name: str, key: dict, compute: Any) -> list:
    """The cached (or computed) candidates as ``(item id, score)`` tuples."""
    got = cache.get_or_compute(name, key, compute)["candidates"]
    return [[(str(i), float(s)) for i, s in cands] for cands in got]


def with_bonus(
    candidates: Sequence[Sequence[tuple[str, float]]],
    new_items: Sequence[str],
    bonus: float,
    k: int = K,
) -> list[list[str]]:
    """Each user's top ``k`` of ``candidates`` after adding ``bonus`` to the new items' scores
    (stable: ties keep the candidates' order); ``bonus=-inf`` leaves the new items out."""
    new = set(new_items)
    out = []
    for cands in candidates:
        scored = [(s + (bonus if i in new else 0.0), n, i) for n, (i, s) in enumerate(cands)]
        scored = [c for c in scored if c[0] != float("-inf")]
        scored.sort(key=lambda x: (-x[0], x[1]))
        out.append([i for _, _, i in scored[:k]])
    return out


def bonus_row(
    candidates: Sequence[Sequence[tuple[str, float]]],
    test: Sequence[Example],
    held_out: Sequence[str],
    bonus: float,
    note: str,
) -> dict[str, Any]:
    """One table row: the :func:`figures` of the candidates' top 10 at ``bonus``, and a note."""
    return {**figures(with_bonus(candidates, held_out, bonus), test, held_out), "note": note}


#: The bonuses :func:`choose_bonus` tries (nats per answer token, on length-normalised scores):
#: negative ones too, since the new items' group can put more of them in a list than the
#: validation users want.
BONUS_GRID = tuple(round(0.05 * n, 2) for n in range(-20, 61))


def choose_bonus(
    candidates: Sequence[Sequence[tuple[str, float]]],
    examples: Sequence[Example],
    new_items: Sequence[str],
    grid: Sequence[float] = BONUS_GRID,
    *,
    warm_tolerance: float | None = None,
) -> tuple[float, list[dict[str, Any]]]:
    """The bonus with the highest R@10 over all of ``examples`` (validation users: warm and
    cold together, as the traffic comes); ties go to the bonus nearest 0, then the smaller.

    With ``warm_tolerance`` (e.g. 0.05) the rule is the cold-start goal's instead: the highest
    cold R@10 among the bonuses whose warm R@10 stays within that share of the trained items'
    own list (the candidates without any new item: what the stale model shows); ties go to the
    higher R@10 of all, then as above. No bonus within it: the smallest of the grid.

    Returns:
        ``(bonus, curve)``: the choice and, per bonus tried, ``{"bonus", "R@10", "cold_R@10",
        "warm_R@10", "cold_share_top10"}``.
    """
    curve = []
    for b in grid:
        f = figures(with_bonus(candidates, new_items, b), examples, new_items)
        hits = (f["cold_R@10"] or 0) * f["cold_users"] + (f["warm_R@10"] or 0) * f["warm_users"]
        total = f["cold_users"] + f["warm_users"]
        curve.append(
            {
                "bonus": b,
                "R@10": round(hits / total, 4) if total else 0.0,
                "cold_R@10": f["cold_R@10"],
                "warm_R@10": f["warm_R@10"],
                "cold_share_top10": f["cold_share_top10"],
            }
        )
    if warm_tolerance is None:
        best = max(curve, key=lambda c: (c["R@10"], -abs(c["bonus"]), -c["bonus"]))
        return best["bonus"], curve
    stale = figures(with_bonus(candidates, new_items, float("-inf")), examples, new_items)
    floor = (1 - warm_tolerance) * (stale["warm_R@10"] or 0.0)
    within = [c for c in curve if (c["warm_R@10"] or 0.0) >= floor - 1e-12]
    if not within:
        return min(grid), curve
    best = max(
        within,
        key=lambda c: (c["cold_R@10"] or 0.0, c["R@10"], -abs(c["bonus"]), -c["bonus"]),
    )
    return best["bonus"], curve


#: The bonuses tried on the text head's scores (cosine / temperature + bias: wider than a
#: log-prob's per-token scale).
HEAD_BONUS_GRID = tuple(round(0.1 * n, 1) for n in range(-30, 81))
HEAD_ROW = "recllm text head, trained items"


def _text_head_rows(
    s: ColdStartSettings,
    cache: ScoreCache,
    model_dir: Path,
    valid: Sequence[Example],
    test: Sequence[Example],
    held_out: Sequence[str],
    rows: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """Fit the text head into ``model_dir`` (kept when its settings match), choose its bonus on
    ``valid`` by the warm-tolerance rule, add its three rows; returns the fit and bonus info."""
    import json

    from recllm.decode.text_head_fit import TextHeadConfig, fit_model_text_head

    config = TextHeadConfig(windows_per_user=s.head_windows, seed=s.seed)
    doc = model_dir / "text_head" / "text_head.json"
    if doc.is_file() and json.loads(doc.read_text()).get("config") == dataclasses.asdict(config):
        fit = json.loads(doc.read_text())["fit"]
    else:
        _, report = fit_model_text_head(model_dir, config)
        fit = {k: v for k, v in report.items() if k != "curve"}
    opts = {"batch_size": s.batch_size}
    cands = text_head_candidates(cache, "head_valid", model_dir, valid, held_out, **opts)
    bonus, curve = choose_bonus(
        cands, valid, held_out, HEAD_BONUS_GRID, warm_tolerance=s.warm_tolerance
    )
    cands = text_head_candidates(cache, "head_test", model_dir, test, held_out, **opts)
    rows[HEAD_ROW] = bonus_row(
        cands,
        test,
        held_out,
        float("-inf"),
        "text head over the trained items only: its own warm reference",
    )
    rows["recllm text head + new items"] = bonus_row(
        cands,
        test,
        held_out,
        0.0,
        f"new items at the learned new-item bias ({fit['new_bias']})",
    )
    rows["recllm text head + new items, bonus (warm within)"] = bonus_row(
        cands,
        test,
        held_out,
        bonus,
        f"bonus {bonus}: the most validation cold R@10 with warm R@10 within "
        f"{s.warm_tolerance:.0%} of the head's trained items",
    )
    return {"fit": fit, "bonus": bonus, "validation_users": len(valid), "curve": curve}


#: The text-similarity scales tried for the hybrid rows (on the beam's length-normalised
#: log-prob scale: a new item scores ``alpha * cosine + bonus``).
HYBRID_ALPHAS = (1.0, 2.0, 3.0, 5.0, 7.0, 10.0, 15.0)
#: The hybrid's bonuses: wide enough that ``-alpha`` (a new item at cosine 1 scoring 0) and the
#: beam's log-prob range below it are covered.
HYBRID_BONUS_GRID = tuple(round(0.5 * n, 1) for n in range(-60, 21))
#: The hybrid's per-user base (``TextNewItems.norm_top``: 0 = the raw cosine), guide shares
#: (``TextNewItems.guide``; 0.5 lost to 0 on Beauty at both bases, docs/cold_start.md, so the
#: default grid leaves it out) and freshness quotas (``TextNewItems.max_new``: 0 = no cap) tried.
HYBRID_NORM_TOPS = (0, 50, 200)
HYBRID_GUIDES = (0.0,)
HYBRID_MAX_NEW = (0, 1, 2, 3)


def text_similarity_candidates(
    candidates: Sequence[Sequence[tuple[str, float]]],
    text_new: Any,
    examples: Sequence[Example],
    alpha: float,
    depth: int = K,
    *,
    norm_top: int = 0,
    guide: float = 0.0,
    max_new: int = 0,
) -> list[list[tuple[str, float]]]:
    """Hybrid candidates, as the Recommender forms them: the beam's trained items with their
    scores, plus each user's best ``depth`` (at most ``max_new``) new items by their text score
    (``text_new``: a :class:`recllm.decode.fresh.TextNewItems`, with ``alpha``, ``norm_top``,
    ``guide`` and ``max_new`` replaced and its bonus by 0, which :func:`with_bonus` then
    shifts)."""
    scorer = dataclasses.replace(
        text_new, alpha=alpha, bonus=0.0, norm_top=norm_top, guide=guide, max_new=max_new
    )
    held = set(text_new.new_items)
    trained = [[(i, s) for i, s in cands if i not in held] for cands in candidates]
    extra = scorer.candidates([list(ex.history) for ex in examples], depth, found=trained)
    return [a + b for a, b in zip(trained, extra, strict=True)]


def cap_new(
    candidates: Sequence[Sequence[tuple[str, float]]], new_items: Sequence[str], max_new: int
) -> list[list[tuple[str, float]]]:
    """Each list's first ``max_new`` new items kept (0: all), the trained items untouched: what
    ``max_new`` gives :func:`text_similarity_candidates`, whose new items come best first."""
    if not max_new:
        return [list(c) for c in candidates]
    new = set(new_items)
    out = []
    for cands in candidates:
        seen = 0
        row = []
        for i, s in cands:
            if i in new:
                seen += 1
                if seen > max_new:
                    continue
            row.append((i, s))
        out.append(row)
    return out


def hybrid_curve(
    candidates: Sequence[Sequence[tuple[str, float]]],
    examples: Sequence[Example],
    new_items: Sequence[str],
    grid: Sequence[float],
    k: int = K,
) -> list[dict[str, Any]]:
    """R@10 of all, cold and warm, at every bonus of ``grid``: what :func:`with_bonus` and
    :func:`figures` give, from one threshold per user instead of a sort per user and bonus.

    A new target is in a user's top ``k`` for every bonus above one threshold, a trained target
    for every bonus up to another (ties go to the trained items, as in :func:`with_bonus`):
    so the curve is two sorted threshold arrays read at the grid.
    """
    import numpy as np

    new = set(new_items)
    cold_t, warm_t = [], []
    n_cold = n_warm = 0
    for ex, cands in zip(examples, candidates, strict=True):
        trained = [(n, s) for n, (i, s) in enumerate(cands) if i not in new]
        fresh = [(n, s) for n, (i, s) in enumerate(cands) if i in new]
        where = next((n for n, (i, _) in enumerate(cands) if i == ex.target), None)
        if ex.target in new:
            n_cold += 1
            if where is None:
                continue
            t = cands[where][1]  # new items ahead of the target: higher score, or equal and first
            ahead = sum(1 for n, v in fresh if v > t or (v == t and n < where))
            q = k - ahead
            if q <= 0:
                continue
            above = sorted((v for _, v in trained), reverse=True)
            # in the top k iff fewer than q trained items score >= t + b
            cold_t.append(above[q - 1] - t if q <= len(above) else -np.inf)
        else:
            n_warm += 1
            if where is None:
                continue
            t = cands[where][1]
            ahead = sum(1 for n, v in trained if v > t or (v == t and n < where))
            q = k - ahead
            if q <= 0:
                continue
            scores = sorted((v for _, v in fresh), reverse=True)
            # in the top k iff fewer than q new items score > t - b, i.e. b <= t - scores[q-1]
            warm_t.append(t - scores[q - 1] if q <= len(scores) else np.inf)
    cold_a, warm_a = np.sort(np.asarray(cold_t)), np.sort(np.asarray(warm_t))
    out = []
    for b in grid:
        c = int(np.searchsorted(cold_a, b, side="left"))  # thresholds < b: strict
        w = len(warm_a) - int(np.searchsorted(warm_a, b, side="left"))  # thresholds >= b
        total = n_cold + n_warm
        out.append(
            {
                "bonus": b,
                "R@10": round((c + w) / total, 4) if total else 0.0,
                "cold_R@10": round(c / n_cold, 4) if n_cold else None,
                "warm_R@10": round(w / n_warm, 4) if n_warm else None,
            }
        )
    return out


def choose_hybrid(
    candidates: Sequence[Sequence[tuple[str, float]]],
    text_new: Any,
    valid: Sequence[Example],
    warm_tolerance: float,
    *,
    norm_tops: Sequence[int] = HYBRID_NORM_TOPS,
    guides: Sequence[float] = HYBRID_GUIDES,
    max_news: Sequence[int] = HYBRID_MAX_NEW,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The hybrid's settings by the cold-start goal's rule on validation users: per
    ``(norm_top, guide, max_new, alpha)`` the bonus with the most cold R@10 among those whose
    warm R@10 stays within ``warm_tolerance`` of the trained items' own list (ties: R@10 of
    all, then the bonus nearest 0), then the setting whose choice has the most cold R@10 (ties:
    R@10 of all, then the earlier: raw cosine, no guide and no cap first). A ``norm_top`` above
    the catalog's size is skipped.

    Returns:
        ``(chosen, tried)``: ``{"alpha", "bonus", "norm_top", "guide", "max_new"}`` and every
        setting's chosen point with its validation figures.
    """
    held = list(text_new.new_items)
    new = set(held)
    # the trained items' own list (every new item left out) is the same in every setting
    trained = [[(i, v) for i, v in c if i not in new] for c in candidates]
    stale = hybrid_curve(trained, valid, held, [float("-inf")])[0]
    floor = (1 - warm_tolerance) * (stale["warm_R@10"] or 0.0)
    tried = []
    for norm_top in [m for m in norm_tops if m <= len(text_new.item_ids)]:
        for guide in guides:
            for alpha in HYBRID_ALPHAS:
                full = text_similarity_candidates(
                    candidates, text_new, valid, alpha, norm_top=norm_top, guide=guide
                )
                for max_new in max_news:
                    cands = cap_new(full, held, max_new)
                    curve = hybrid_curve(cands, valid, held, HYBRID_BONUS_GRID)
                    within = [c for c in curve if (c["warm_R@10"] or 0.0) >= floor - 1e-12]
                    point = max(
                        within or [min(curve, key=lambda c: c["bonus"])],
                        key=lambda c: (c["cold_R@10"] or 0.0, c["R@10"], -abs(c["bonus"])),
                    )
                    shape = {"norm_top": norm_top, "guide": guide, "max_new": max_new}
                    tried.append({"alpha": alpha, **shape, **point})
    best = best_setting(tried)
    chosen = {key: best[key] for key in ("alpha", "bonus", "norm_top", "guide", "max_new")}
    return chosen, tried


def best_setting(tried: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The setting of ``tried`` (:func:`choose_hybrid`'s) with the most validation cold R@10;
    ties: R@10 of all, then the earlier."""
    return max(tried, key=lambda c: (c["cold_R@10"] or 0.0, c["R@10"]))


def hybrid_row(
    candidates: Sequence[Sequence[tuple[str, float]]],
    text_new: Any,
    examples: Sequence[Example],
    setting: dict[str, Any],
    chosen: str,
) -> dict[str, Any]:
    """One table row: the :func:`figures` of the hybrid at ``setting`` (``alpha``, ``bonus``,
    ``norm_top``, ``guide``, ``max_new``, as :func:`choose_hybrid` gives it) on ``examples``."""
    shape = {k: setting[k] for k in ("norm_top", "guide", "max_new")}
    cands = text_similarity_candidates(candidates, text_new, examples, setting["alpha"], **shape)
    held = list(text_new.new_items)
    return {
        **figures(with_bonus(cands, held, setting["bonus"]), examples, held),
        "note": f"trained items by the beam, new items by {setting['alpha']} x (text cosine - "
        f"the mean of the user's {shape['norm_top']} nearest) + {setting['bonus']}, guide "
        f"{shape['guide']}, at most {shape['max_new'] or 'any'} per list; {chosen}",
    }


def popularity_lists(split: Split, n_users: int) -> list[list[str]]:
    """The training split's 10 most frequent items (ties: first seen), for every user."""
    counts = Counter(i for seq in split.train.sequences.values() for i in seq)
    top = [i for i, _ in counts.most_common(K)]
    return [list(top) for _ in range(n_users)]


def knn_lists(cold: ColdSplit, **options: Any) -> list[list[str]]:
    """:class:`~recllm.baselines.text_knn.TextKNN` over the full catalog, its TF-IDF fitted on
    the training catalog; the user's own history items left out."""
    from recllm.baselines.text_knn import TextKNN

    knn = TextKNN.from_catalog(cold.catalog, fit_ids=cold.train_catalog.ids, **options)
    return knn.rank([ex.history for ex in cold.test], k=K)


def sasrec_lists(cold: ColdSplit, minutes: float, seed: int = 0) -> tuple[list[list[str]], dict]:
    """SASRec trained on the training split (``minutes`` budget): (lists, info)."""
    import time

    import torch

    from recllm.baselines.sasrec import SASRecConfig, score_histories, train_sasrec

    t = time.monotonic()
    cfg = SASRecConfig(time_budget_minutes=minutes, seed=seed)
    model, history = train_sasrec(cold.split, cold.train_catalog.ids, cfg, progress=False)
    model.eval()
    out: list[list[str]] = []
    with torch.no_grad():
        for start in range(0, len(cold.test), 256):
            batch = cold.test[start : start + 256]
            scores = score_histories(model, [ex.history for ex in batch])
            for row in scores.topk(K, dim=1).indices.tolist():
                out.append([model.item_ids[j] for j in row])
    info = {"minutes": round((time.monotonic() - t) / 60, 2), "epochs": len(history)}
    return out, info


def table(rows: dict[str, dict[str, Any]]) -> str:
    """The markdown table of the rows."""
    from recllm.bench.report import markdown_table

    header = ["row", "cold R@10", "cold N@10", "warm R@10", "warm N@10", "warm R@10 vs base"]
    header += ["cold share of top 10", "note"]
    lines = []
    for name, f in rows.items():
        rel = f.get("warm_R@10_rel")
        lines.append(
            [
                name,
                f.get("cold_R@10"),
                f.get("cold_N@10"),
                f.get("warm_R@10"),
                f.get("warm_N@10"),
                None if rel is None else f"{rel:+.1%}",
                f.get("cold_share_top10"),
                f.get("note", ""),
            ]
        )
    return markdown_table(header, lines)


def plot(rows: dict[str, dict[str, Any]], path: str | Path, title: str) -> Path:
    """Grouped bars: cold R@10, warm R@10 and the cold share of the top 10, per row."""
    from recllm.bench.report import grouped_bars

    shown = {n: f for n, f in rows.items() if f.get("cold_R@10") is not None}
    series = {
        name: [f["cold_R@10"] or 0.0, f["warm_R@10"] or 0.0, f["cold_share_top10"] or 0.0]
        for name, f in shown.items()
    }
    groups = ["cold R@10", "warm R@10", "cold share of top 10"]
    return grouped_bars(series, groups, path, title=title, ylabel="share")


def plot_bonus(bonus: dict[str, Any], path: str | Path, data: str) -> Path:
    """Validation R@10 (all, cold, warm users) and the cold share of the top 10 over the bonus,
    the chosen bonus marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = bonus["curve"]
    x = [c["bonus"] for c in curve]
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label in (
        ("R@10", "R@10, all users"),
        ("cold_R@10", "R@10, cold users"),
        ("warm_R@10", "R@10, warm users"),
        ("cold_share_top10", "new items' share of the top 10"),
    ):
        ax.plot(x, [c[key] or 0.0 for c in curve], label=label)
    ax.axvline(bonus["chosen"], color="grey", linestyle=":", label=f"chosen: {bonus['chosen']}")
    ax.set_xlabel("bonus on the new items' length-normalised log-prob")
    ax.set_title(f"{data}: {bonus['validation_users']} validation users")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


@dataclasses.dataclass
class ColdStartSettings:
    """One cold-start run (the flags of ``scripts/cold_start.py``)."""

    kind: str  # "chat" (recipes/plum_sft.py) or "seqlm" (recipes/seqlm.py)
    config: Path
    out: Path
    data: str | None = None
    max_users: int | None = None
    share: float = 0.1
    seed: int = 0
    beams: int = 20
    batch_size: int = 32
    users: int = 0
    bonus_users: int = 3000
    warm_tolerance: float = 0.05
    warmup_steps: int = 0
    text_head: bool = True
    head_windows: int = 3
    sasrec_minutes: float = 5.0
    recipe_args: tuple[str, ...] = ()


RECIPES = {"chat": "plum_sft.py", "seqlm": "seqlm.py"}


def _data_config(s: ColdStartSettings) -> tuple[DataConfig, dict[str, Any]]:
    """The training run's DataConfig (the YAML's data keys + this run's) and its overrides."""
    import yaml

    names = {f.name for f in dataclasses.fields(DataConfig)}
    given = yaml.safe_load(Path(s.config).read_text()) or {}
    overrides: dict[str, Any] = {}
    if s.data is not None:
        overrides["data_path"] = s.data
    if s.max_users is not None:
        overrides["max_users"] = s.max_users
    keys = {k: v for k, v in {**given, **overrides}.items() if k in names}
    return DataConfig(**keys), overrides


def run(s: ColdStartSettings, root: Path) -> dict[str, Any]:
    """Split, train the recipe on the reduced data, add the new items, score every row.

    Args:
        s: The settings.
        root: The repository root (where ``recipes/`` is).

    Returns:
        The summary: sizes, settings, minutes and one figures dict per row.
    """
    from recllm.bench.arms import train_arm

    out = Path(s.out)
    out.mkdir(parents=True, exist_ok=True)
    data_cfg, overrides = _data_config(s)
    cold = make_cold_split(data_cfg, out, s.share, s.seed)
    test = cold.test if not s.users else cold.test[: s.users]
    cold.test = test
    overrides["holdout_items"] = str(cold.holdout_file.resolve())
    if s.kind == "seqlm":
        overrides["ensemble"] = 1  # one decoder: the added items go into one model directory
    arm = train_arm(
        root / "recipes" / RECIPES[s.kind],
        out / "model_run",
        config=s.config,
        overrides=overrides,
        args=list(s.recipe_args),
    )
    cache = ScoreCache(out / "scores")
    new_catalog = cold.catalog.subset(cold.held_out)
    rank = {"beams": s.beams, "batch_size": s.batch_size}
    rows: dict[str, dict[str, Any]] = {}
    info: dict[str, Any] = {"train_minutes": round(arm.minutes, 1)}

    base_users = without_items(test, cold.held_out)
    lists = model_lists(cache, "base", arm.model_dir, base_users, cold.train_catalog, **rank)
    rows["recllm, trained catalog"] = {
        **figures(lists, test, cold.held_out),
        "note": "no code for a held-out item: left out of its histories",
    }
    added, report = add_new_items(
        arm.model_dir, arm.model_dir.parent / "sids", new_catalog, out / "model_added"
    )
    info["assign_report"] = report
    lists = model_lists(cache, "added", added, test, cold.catalog, **rank)
    rows["recllm + new items (catalog add)"] = {
        **figures(lists, test, cold.held_out),
        "note": "frozen quantizer codes, no training",
    }
    # the new items' own beam group, and the bonus chosen on validation users
    from recllm.eval.run import select_users

    valid = select_users(cold.valid, s.bonus_users, seed=s.seed) if s.bonus_users else cold.valid
    fresh_v = fresh_candidates(
        cache, "fresh_valid", added, valid, cold.catalog, cold.held_out, **rank
    )
    bonus, curve = choose_bonus(fresh_v, valid, cold.held_out)
    goal_bonus, _ = choose_bonus(fresh_v, valid, cold.held_out, warm_tolerance=s.warm_tolerance)
    info["bonus"] = {
        "chosen": bonus,
        "chosen_warm_within": goal_bonus,
        "warm_tolerance": s.warm_tolerance,
        "validation_users": len(valid),
        "curve": curve,
    }
    cands = fresh_candidates(cache, "fresh_test", added, test, cold.catalog, cold.held_out, **rank)
    rows["recllm + new items, beam group"] = bonus_row(
        cands,
        test,
        cold.held_out,
        0.0,
        "a second beam group for the new items, bonus 0",
    )
    rows["recllm + new items, beam group + bonus"] = bonus_row(
        cands,
        test,
        cold.held_out,
        bonus,
        f"bonus {bonus} chosen on {len(valid)} validation users (R@10 of all)",
    )
    rows["recllm + new items, beam group + bonus (warm within)"] = bonus_row(
        cands,
        test,
        cold.held_out,
        goal_bonus,
        f"bonus {goal_bonus}: the most validation cold R@10 with warm R@10 within "
        f"{s.warm_tolerance:.0%} of the trained items' list",
    )
    # the hybrid: new items by text similarity (the SID quantizer's featurizer), merged with
    # the trained items' beam scores, as Recommender does after `catalog add --new-item-text-alpha`
    from recllm.decode.fresh import TextNewItems
    from recllm.sid.quantizer import SIDQuantizer

    text_new = TextNewItems.build(
        SIDQuantizer.load(added / "sid_quantizer"), cold.catalog, cold.held_out, 1.0, 0.0
    )
    hybrid, tried = choose_hybrid(fresh_v, text_new, valid, s.warm_tolerance)
    info["hybrid"] = {**hybrid, "tried": tried}
    within = f"{len(valid)} validation users (warm within {s.warm_tolerance:.0%})"
    name = "recllm + new items by text similarity (hybrid, warm within)"
    rows[name] = hybrid_row(cands, text_new, test, hybrid, f"all chosen on {within}")
    if hybrid["max_new"]:  # what the quota adds: the best setting without one
        uncapped = best_setting([t for t in tried if not t["max_new"]])
        rows[name.replace("warm within", "no quota, warm within")] = hybrid_row(
            cands, text_new, test, uncapped, f"the best without a quota on {within}"
        )
    if s.text_head:
        info["text_head"] = _text_head_rows(s, cache, added, valid, test, cold.held_out, rows)
    name = "recllm + new items, warm-up" + (f" ({s.warmup_steps} steps)" if s.warmup_steps else "")
    if s.kind == "seqlm":
        rows[name] = {"note": "not run: the SID-sequence decoder has no item text to warm up on"}
    elif s.warmup_steps <= 0:
        rows[name] = {"note": "not run (--warmup-steps 0)"}
    else:
        from recllm.errors import UserError

        try:
            warm, _ = add_new_items(
                arm.model_dir,
                arm.model_dir.parent / "sids",
                new_catalog,
                out / "model_warmup",
                warmup_steps=s.warmup_steps,
            )
        except (UserError, ImportError) as e:  # ImportError: a recllm without the warm-up
            rows[name] = {"note": f"not run: {e}"}
        except Exception as e:  # a fault of the warm-up must not cost the other rows
            logger.exception("the warm-up row failed")
            rows[name] = {"note": f"failed: {type(e).__name__}: {e}"}
        else:
            lists = model_lists(cache, "warmup", warm, test, cold.catalog, **rank)
            rows[name] = {**figures(lists, test, cold.held_out), "note": "new rows trained"}
    rows["text-KNN (TF-IDF, last 5 items)"] = {
        **figures(knn_lists(cold), test, cold.held_out),
        "note": "TIGER's Semantic-KNN; history items left out",
    }
    rows["popularity"] = {
        **figures(popularity_lists(cold.split, len(test)), test, cold.held_out),
        "note": "training counts: a held-out item has none",
    }
    sas, info["sasrec"] = sasrec_lists(cold, s.sasrec_minutes, s.seed)
    rows["SASRec"] = {
        **figures(sas, test, cold.held_out),
        "note": "item ids only: cold R@10 0 by construction",
    }
    base_warm = rows["recllm, trained catalog"]["warm_R@10"]
    for f in rows.values():
        if f.get("warm_R@10") is not None and base_warm:
            f["warm_R@10_rel"] = round(f["warm_R@10"] / base_warm - 1, 4)
    own = rows.get(HEAD_ROW, {}).get("warm_R@10")
    for n, f in rows.items():
        if n.startswith("recllm text head") and own and f.get("warm_R@10") is not None:
            f["warm_R@10_vs_head"] = round(f["warm_R@10"] / own - 1, 4)
    flags = sum(cold.cold)
    return {
        "kind": s.kind,
        "config": str(s.config),
        "data": data_cfg.data_path,
        "items": len(cold.catalog),
        "held_out_items": len(cold.held_out),
        "test_users": len(test),
        "cold_users": flags,
        "warm_users": len(test) - flags,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(s).items()},
        **info,
        "rows": rows,
    }
