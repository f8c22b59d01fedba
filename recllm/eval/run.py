"""Evaluate a saved recommender: constrained beam search over every held-out user, then metrics.

A model directory written by recllm (:func:`recllm.vocab.save_model_with_sids`) records how it was
prompted in training (``recllm_vocab.json`` -> ``recommender``) and on which data; evaluation
rebuilds exactly those prompts for the valid or test users of the same split, decodes with the SID
trie (every returned entry is a catalog item), and scores the ranked lists with the published
protocol: full ranking, one target per user, Recall@K and NDCG@K, items seen before not removed
(``../shared/data/README.md``; ``"protocol": "p5"`` in the figures). ``exclude_history=True``
(``recllm eval --exclude-history``) is the other common protocol: each user's history items are
excluded inside the SID constraint (:class:`recllm.decode.filters.ItemFilter`), so the ranked
list holds only unseen items; its figures say ``"protocol": "p5_exclude_history"`` and are not
comparable with the published P5 / TIGER rows.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

# User sampling lives in data (below train, which samples validation users); importable here too.
from recllm.data.splits import select_users
from recllm.eval.metrics import RankingMetrics

# Prompt building lives in tasks (below eval); these names stay importable from here.
from recllm.tasks.prompting import PROMPT_STYLES, PromptSpec, build_prompts  # noqa: F401

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from recllm.data.splits import Example
    from recllm.data.types import Catalog
    from recllm.decode.think import ThinkOptions
    from recllm.sid.sidmap import SIDMap

logger = logging.getLogger(__name__)

#: The ``protocol`` figure: the published one (seen items may be recommended), and the one
#: that excludes every user's history inside the constraint.
PROTOCOLS = {False: "p5", True: "p5_exclude_history"}


def eval_examples(
    model_dir: str | Path,
    data: str | None,
    split: str = "test",
    max_users: int | None = 0,
    *,
    allow_other_data: bool = False,
    sample_seed: int | None = None,
) -> tuple[dict[str, Any], Any, list[Example]]:
    """The data a model directory records (``data`` overrides its path), and its eval users.

    The split is checked against the data fingerprint the model records
    (:func:`recllm.data.fingerprint.check_data_fingerprint`): other data stops the evaluation
    unless ``allow_other_data``.

    Returns:
        ``(data_fields, dataset, examples)``: the DataConfig fields used, the loaded dataset
        and the first ``max_users`` (0 or None = all) examples of ``split`` ("test" or "valid"),
        or with ``sample_seed`` a seeded random sample of ``max_users`` of them
        (:func:`recllm.data.splits.select_users`).

    Raises:
        UserError: The directory records no data and ``data`` is None; ``max_users`` is
            negative; or the data is not the data the model was trained on.
    """
    from recllm.data import load_rec_dataset, split_dataset
    from recllm.data.config import DataConfig
    from recllm.data.fingerprint import check_data_fingerprint, data_fingerprint
    from recllm.errors import UserError
    from recllm.vocab.checkpoint import read_vocab_record

    if max_users is not None and max_users < 0:  # a slice [:-1] would drop the last user
        raise UserError(f"--max-users {max_users}", "must be >= 1", "leave it out to use all")
    recorded = read_vocab_record(model_dir).get("recommender") or {}
    data_fields = dict(PromptSpec.from_model_dir(model_dir).data or {})
    if data is not None:
        data_fields["data_path"] = data
    if "data_path" not in data_fields:
        raise UserError(model_dir, "records no training data", "pass --data PATH_OR_NAME")
    data_cfg = DataConfig(**data_fields)
    dataset = load_rec_dataset(config=data_cfg)
    parts = split_dataset(dataset, data_cfg)
    check_data_fingerprint(
        recorded.get("data_fingerprint"),
        data_fingerprint(parts, dataset.catalog),
        model=str(model_dir),
        data=str(data_fields["data_path"]),
        allow_other_data=allow_other_data,
    )
    examples = parts.test if split == "test" else parts.valid
    return data_fields, dataset, select_users(examples, max_users or 0, sample_seed)


@dataclass
class EvalResult:
    """Metrics of one evaluation, and every user's ranked items (best first)."""

    metrics: dict[str, float | int]
    ranked: list[list[str | None]]  # None: an invalid answer (unconstrained evaluation only)
    seconds: float
    rationales: list[list[str]] | None = None  # per user, when decoded with thinking


def write_predictions(
    path: str | Path, examples: Sequence[Example], ranked: Sequence[Sequence[str | None]]
) -> Path:
    """Write one JSON line per user, ``{"user": ID, "items": [ranked item ids]}``, atomically.

    An invalid answer (unconstrained evaluation) is ``null`` in its slot, so an outside scorer
    ranks the target exactly as recllm did.
    """
    from recllm.io import write_text_atomic

    lines = [
        json.dumps({"user": ex.user_id, "items": list(items)}, ensure_ascii=False)
        for ex, items in zip(examples, ranked, strict=True)
    ]
    return write_text_atomic(path, "\n".join(lines) + ("\n" if lines else ""))


def load_ensemble(
    model_dirs: Sequence[str | Path],
) -> tuple[list[PreTrainedModel], PreTrainedTokenizerBase, SIDMap, PromptSpec]:
    """Load model directories that can be decoded together, and check that they can.

    Every directory must hold the same SID map (hash-checked by
    :func:`recllm.vocab.load_model_with_sids`), the same tokenizer vocabulary and the same
    prompt style and history length, so one prompt and one trie serve them all.

    Returns:
        ``(models, tokenizer, sid_map, spec)`` of the first directory.

    Raises:
        ValueError: No directory, or two that differ; the message names both and the fix.
    """
    from recllm.vocab import load_model_with_sids

    if not model_dirs:
        raise ValueError("no model directory given")
    first = Path(model_dirs[0])
    model, tokenizer, sid_map = load_model_with_sids(first)
    spec = PromptSpec.from_model_dir(first)
    models = [model]
    for d in model_dirs[1:]:
        other_spec = PromptSpec.from_model_dir(d)
        if (other_spec.style, other_spec.max_history, other_spec.task) != (
            spec.style,
            spec.max_history,
            spec.task,
        ):
            raise ValueError(
                f"{d} is prompted as {other_spec.style!r} with {other_spec.max_history} items "
                f"and task settings {other_spec.task}, {first} as {spec.style!r} with "
                f"{spec.max_history} and {spec.task}; Fix: ensemble models trained with the "
                "same prompts"
            )
        m, tok, _ = load_model_with_sids(d, sid_map=sid_map)
        if tok.get_vocab() != tokenizer.get_vocab():
            raise ValueError(
                f"{d} and {first} have different tokenizer vocabularies; Fix: ensemble models "
                "built from the same tokenizer and SID map"
            )
        models.append(m)
    return models, tokenizer, sid_map, spec


def evaluate_recommender(
    model: PreTrainedModel | Sequence[PreTrainedModel] | None,
    tokenizer: PreTrainedTokenizerBase,
    sid_map: SIDMap,
    examples: Sequence[Example],
    spec: PromptSpec,
    catalog: Catalog,
    *,
    beams: int = 20,
    ks: Sequence[int] = (5, 10),
    batch_size: int = 32,
    engine: str = "sid_beam",
    progress: bool = True,
    recommender: Any = None,
    constrained: bool = True,
    think: ThinkOptions | None = None,
    prefixes: dict[str, list[tuple[int, ...]]] | None = None,
    exclude_history: bool = False,
    new_items: Sequence[str] = (),
    new_item_bonus: float | None = None,
) -> EvalResult:
    """Constrained beam search (``beams`` wide, top ``max(ks)`` kept) for every example, scored.

    Args:
        model: The model, or several sharing one tokenizer and SID map (an ensemble: their
            log-probs are averaged at every SID step; ``sid_sequence`` models, ``"sid_beam"``).
        engine: ``"sid_beam"`` (recllm's fixed-depth SID beam search; same items and scores as
            ``generate``, faster), ``"generate"`` (transformers' beam search + the SID
            logits processor) or ``"vllm"`` (the same beam search on vLLM, through
            ``recommender``; ``model`` may then be None).
        recommender: A :class:`recllm.apps.recommender.Recommender` started with
            ``engine="vllm"`` (needed for ``engine="vllm"``).
        constrained: False: plain beam search over the whole vocabulary, the SID trie off
            (one model, transformers ``generate``; ``engine`` is ignored). Answers are read
            from the generated token ids; a malformed answer or a SID of no catalog item is a
            ``None`` entry that keeps its rank slot, so ``invalid_rate`` measures how often the
            model, left alone, names no catalog item. It is the control of the constrained
            run, whose invalid rate is 0 by construction.
        think: Decode with thinking (:func:`recllm.decode.think.think_then_sid`: reasoning
            prompts, ``R`` rationales, a constrained SID beam after each, merged); a model from
            ``recipes/onerec_think.py``; ``"sid_beam"`` (transformers) or ``"vllm"``.
        prefixes: Think-ahead: per user id, the SID prefixes the answer must start with (users
            not in it decode unrestricted); the SID trie is restricted per user
            (:class:`recllm.decode.prefixes.PrefixSets`).
        exclude_history: Exclude each user's history items inside the SID constraint (the
            ``p5_exclude_history`` protocol); constrained decoding without thinking.
        new_items: The items added after training (``recllm catalog add``).
        new_item_bonus: Search ``new_items`` in a beam group of their own and add this to
            their scores (:mod:`recllm.decode.fresh`; the sid_beam engine, or vLLM through a
            ``recommender`` built with the bonus); None: plain search.

    Raises:
        ValueError: ``beams`` smaller than the largest K; ``constrained=False`` with vLLM or
            an ensemble; ``exclude_history`` unconstrained or with thinking.
    """
    import torch

    from recllm.decode import DecodeOptions, SIDTrie, generate_sids
    from recllm.vocab import SID_FORMAT

    k = max(ks)
    _check_modes(model, spec, beams, k, engine, constrained, think, prefixes)
    if exclude_history and (not constrained or think):
        raise ValueError(
            "exclude_history excludes the history inside the SID constraint, without thinking; "
            "Fix: drop --no-constraint / --think, or --exclude-history"
        )
    prompts = build_prompts(spec, examples, sid_map, catalog, think=bool(think))
    token_ids = SID_FORMAT.token_ids(tokenizer, sid_map.codebook_sizes)
    trie = SIDTrie.from_sid_map(sid_map, token_ids)
    seen = [list(ex.history) for ex in examples] if exclude_history else None
    item_filter = None
    if seen is not None:
        from recllm.decode.filters import ItemFilter

        item_filter = ItemFilter.from_ids(trie, exclude=seen, where="history ")
    fresh = None
    if new_item_bonus is not None and new_items and engine != "vllm":
        from recllm.decode.fresh import FreshItems

        if think or not constrained or engine != "sid_beam":
            raise ValueError(
                "the new-item bonus is a part of the constrained SID beam search; Fix: "
                "--engine sid_beam without --think / --no-constraint, or no --new-item-bonus"
            )
        fresh = FreshItems.from_ids(trie, list(new_items), new_item_bonus)
    sets = None
    if prefixes is not None:
        from recllm.decode.prefixes import PrefixSets

        sets = PrefixSets.from_prefixes(trie, [prefixes.get(ex.user_id) for ex in examples])
    ensemble = isinstance(model, (list, tuple))
    members = list(model) if ensemble else [] if model is None else [model]
    for m in members:
        m.eval()
    start = time.perf_counter()
    rationales = closed = None
    if think:
        recs, rationales, closed = _think_recs(
            members,
            tokenizer,
            prompts,
            sid_map,
            trie,
            think,
            k,
            beams,
            batch_size,
            engine,
            recommender,
            progress,
        )
    elif constrained and engine == "vllm":
        recs = _vllm_recs(
            recommender, spec, prompts, examples, prefixes, k, beams, batch_size, progress, seen
        )
    elif constrained and spec.style == "sid_sequence":
        # No end-of-answer token exists in a SID sequence (the next item's marker follows), so
        # the beam is scored on the code tokens alone: only recllm's SID beam search does that.
        ranked_rows = _sequence_beam(
            members,
            tokenizer,
            prompts,
            trie,
            beams,
            k,
            batch_size,
            progress,
            sets,
            item_filter,
            fresh,
        )
        recs = [[sid_map.item_ids[r] for r in row] for row in ranked_rows]
    else:
        # the trie on (sid_beam or generate) or off (unconstrained: whatever the model emits,
        # read from its token ids; a sid_sequence model's answer is then the bare SID)
        options = DecodeOptions(
            k=k,
            num_beams=beams,
            batch_size=batch_size,
            engine=engine if constrained else "generate",
            constrained=constrained,
            stop_after_sid=spec.style != "sid_sequence",
        )
        with torch.inference_mode():
            out = generate_sids(
                members[0],
                tokenizer,
                prompts,
                sid_map,
                options,
                trie=trie,
                progress=progress,
                prefixes=sets,
                item_filter=item_filter,
                fresh=fresh,
            )
        recs = [[r.item_id for r in items] for items in out]
    seconds = time.perf_counter() - start
    metrics = RankingMetrics(sid_map.item_ids)
    ranked = []
    for ex, ids in zip(examples, recs, strict=True):
        metrics.add(ids, ex.target)
        ranked.append(ids)
    figures = metrics.compute(ks)
    figures["beams"] = beams
    figures["constrained"] = constrained
    figures["protocol"] = PROTOCOLS[exclude_history]
    if new_item_bonus is not None and new_items:
        figures["new_item_bonus"] = new_item_bonus
    figures["users_per_second"] = round(len(examples) / seconds, 2) if seconds else 0.0
    if think:
        figures["think"] = asdict(think)
        figures["think_closed_rate"] = round(sum(closed) / max(1, len(closed)), 4)
    if prefixes is not None:
        figures["prefix_users"] = sum(ex.user_id in prefixes for ex in examples)
        figures["prefix_recall"] = prefix_recall(examples, prefixes, sid_map)
    return EvalResult(figures, ranked, seconds, rationales)


def _check_modes(
    model: Any,
    spec: PromptSpec,
    beams: int,
    k: int,
    engine: str,
    constrained: bool,
    think: ThinkOptions | None,
    prefixes: Any,
) -> None:
    """Refuse combinations :func:`evaluate_recommender` cannot decode, before any work."""
    ensemble = isinstance(model, (list, tuple))
    if beams < k:
        raise ValueError(
            f"--beams {beams} < largest K {k}: the beam is the ranked list; Fix: raise --beams"
        )
    if not constrained and (engine == "vllm" or ensemble):
        raise ValueError(
            "unconstrained evaluation decodes one model with transformers generate; Fix: pass "
            "one model (not an ensemble) and engine='sid_beam' or 'generate'"
        )
    if (think or prefixes is not None) and (not constrained or ensemble):
        raise ValueError("thinking and think-ahead prefixes decode one model, constrained")
    if think and prefixes is not None:
        raise ValueError("think-ahead prefixes restrict a fast model; Fix: drop think or prefixes")
    if think and engine not in ("sid_beam", "vllm"):
        raise ValueError("thinking runs on engine 'sid_beam' (transformers) or 'vllm'")
    if ensemble and (engine != "sid_beam" or spec.style != "sid_sequence"):
        raise ValueError(
            "an ensemble of models is decoded by the SID beam search of sid_sequence models only; "
            "Fix: pass one model, or engine='sid_beam' with sid_sequence models"
        )
    if constrained and not think and spec.style == "sid_sequence" and engine == "generate":
        raise ValueError(
            "a sid_sequence model has no end-of-answer token for generate() to stop on; "
            "Fix: engine='sid_beam'"
        )


def _think_recs(
    members,
    tokenizer,
    prompts,
    sid_map,
    trie,
    think,
    k,
    beams,
    batch_size,
    engine,
    recommender,
    progress,
) -> tuple[list[list[str | None]], list, list]:
    """Thinking: rationales, then a constrained SID beam after each, merged."""
    from recllm.decode.think import think_then_sid

    if engine == "vllm" and recommender is None:
        raise ValueError("engine='vllm' needs recommender=Recommender.from_pretrained(...)")
    engine_llm = recommender.backend if engine == "vllm" else None
    results = think_then_sid(
        None if engine_llm is not None else members[0],
        tokenizer,
        prompts,
        sid_map,
        k=k,
        num_beams=beams,
        rationales=think.rationales,
        max_think_tokens=think.max_think_tokens,
        temperature=think.temperature,
        top_p=think.top_p,
        batch_size=batch_size,
        seed=think.seed,
        trie=trie,
        progress=progress,
        engine=engine_llm,
    )
    recs = [[r.item_id for r in res.recommendations] for res in results]
    return recs, [res.rationales for res in results], [c for res in results for c in res.closed]


def _vllm_recs(
    recommender, spec, prompts, examples, prefixes, k, beams, batch_size, progress, seen=None
) -> list[list[str | None]]:
    """The constrained beam search on vLLM, through a started Recommender, batch by batch."""
    from tqdm.auto import tqdm

    if recommender is None or spec.style != "chat":
        raise ValueError(
            "engine='vllm' needs recommender=Recommender.from_pretrained(DIR, engine='vllm') "
            "and a chat-style model; Fix: pass it, or use engine='sid_beam'"
        )
    recs: list[list[str | None]] = []
    for at in tqdm(
        range(0, len(prompts), batch_size), desc="vllm beam", unit="batch", disable=not progress
    ):
        chunk = examples[at : at + batch_size]
        out = recommender.recommend_prompts(
            prompts[at : at + batch_size],
            k,
            num_beams=beams,
            prefixes=None if prefixes is None else [prefixes.get(ex.user_id) for ex in chunk],
            exclude=None if seen is None else seen[at : at + batch_size],
        )
        recs.extend([r.item_id for r in items] for items in out)
    return recs


def prefix_recall(
    examples: Sequence[Example], prefixes: dict[str, list[tuple[int, ...]]], sid_map: SIDMap
) -> float:
    """Share of ``examples`` whose target's first levels are in the user's prefix set (users
    without a set count as misses): the ceiling think-ahead puts on Recall."""
    hits = 0
    for ex in examples:
        allowed = prefixes.get(ex.user_id)
        if not allowed:
            continue
        depth = len(allowed[0])
        code = tuple(int(c) for c in sid_map.code(ex.target)[:depth])
        hits += code in {tuple(p) for p in allowed}
    return round(hits / max(1, len(examples)), 4)


def prefix_file_record(data_fields: dict[str, Any], dataset, split: str) -> dict[str, Any]:
    """What a prefix file records of its data: the split whose users it covers, the data
    settings, and the data's fingerprint (:func:`recllm.data.fingerprint.data_fingerprint`)."""
    from recllm.data import DataConfig, split_dataset
    from recllm.data.fingerprint import data_fingerprint

    parts = split_dataset(dataset, DataConfig(**data_fields))
    fingerprint = json.loads(json.dumps(data_fingerprint(parts, dataset.catalog)))
    return {"split": split, "data": data_fields, "data_fingerprint": fingerprint}


def check_prefix_file(path: str, split: str, data_fields: dict[str, Any], dataset) -> None:
    """Refuse a think-ahead file made for another split or on other data than an evaluation's.

    The prefixes are chosen from each user's history, and a test history holds the validation
    target: a file of the test split used on the valid split leaks the answer.
    A file that records no split (hand-made) is refused: its users' prefixes may hold their
    targets, and a leak inflates every figure silently. A file without a data fingerprint (made
    before recllm recorded one) is used with a warning: its split is known, and the SID map
    check of :func:`recllm.decode.prefixes.read_prefix_file` still applies.

    Raises:
        UserError: Not a prefix file, another split, or other data.
    """
    from recllm.data.fingerprint import fingerprint_differences
    from recllm.decode.prefixes import read_prefix_file
    from recllm.errors import UserError

    _, record = read_prefix_file(path)
    made_for = record.get("split")
    if made_for is None:
        raise UserError(
            f"--prefixes {path}",
            "records no split, so it may hold the targets of the evaluated users",
            f"make it again with `recllm think-ahead --split {split}`",
        )
    if made_for != split:
        why = (
            "the test histories hold the valid targets, so its prefixes would leak them"
            if made_for == "test"
            else "its prefixes were chosen from other histories"
        )
        raise UserError(
            f"--prefixes {path}",
            f"was made for the {made_for} split, this evaluation is of the {split} split ({why})",
            f"make a prefix file for this split with `recllm think-ahead --split {split}`, or "
            f"evaluate with --split {made_for}",
        )
    recorded = record.get("data_fingerprint")
    if not isinstance(recorded, dict):
        logger.warning(
            "%s records no data fingerprint (made by an older recllm): cannot check that it was "
            "made on %s",
            path,
            data_fields["data_path"],
        )
        return
    actual = prefix_file_record(data_fields, dataset, split)["data_fingerprint"]
    diffs = fingerprint_differences(recorded, actual)
    if diffs:
        raise UserError(
            f"--prefixes {path}",
            f"was made on other data than {data_fields['data_path']} ({'; '.join(diffs)})",
            "make it with `recllm think-ahead` on the data evaluated here",
        )


def _sequence_beam(
    models,
    tokenizer,
    prompts,
    trie,
    beams,
    k,
    batch_size,
    progress,
    sets=None,
    item_filter=None,
    fresh=None,
) -> list[list[int]]:
    """SID-map rows of the top ``k`` items per string prompt (code tokens scored only), from one
    model or the ensemble of ``models``."""
    import torch
    from tqdm.auto import tqdm

    from recllm.decode import encode_prompts, left_pad, sid_beam_search

    encoded = encode_prompts(tokenizer, prompts)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out: list[list[int]] = []
    starts = range(0, len(encoded), batch_size)
    device = models[0].device
    for start in tqdm(starts, desc="sid_beam_search", unit="batch", disable=not progress):
        ids, mask = left_pad(encoded[start : start + batch_size], pad, device)
        part = None if sets is None else sets.slice(start, start + batch_size)
        rows = None if item_filter is None else item_filter.slice(start, start + batch_size)
        with torch.inference_mode():
            res = sid_beam_search(
                models,
                ids,
                mask,
                trie,
                num_beams=beams,
                num_return_sequences=k,
                prefixes=part,
                item_filter=rows,
                fresh=fresh,
            )
        out.extend([r for r in row if r >= 0] for row in res.items.tolist())
    return out
