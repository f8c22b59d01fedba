"""Add new items to a trained model directory without retraining (issue 31, item 2).

:func:`add_items_to_model` writes a new model directory whose SID map holds the old items with
their codes unchanged and the new items appended (a :class:`recllm.sid.quantizer.SIDAssignment`
made by ``recllm sid assign``)::

    out_dir/
      config.json, model.safetensors, tokenizer files   # copied byte for byte
      sid_map.json                                      # assignment.sid_map
      catalog_added.jsonl                               # the added items and their text fields
      sid_quantizer/                                    # carried along for the next addition
      recllm_vocab.json                                 # new sid_map_hash + catalog_additions

The weights are copied, not re-saved: when the new codes fit the existing code tokens, nothing
in the network changes, so the new directory's weight files are the old ones byte for byte.
``config.json`` is rewritten only for the SID map hash stamp (``recllm_sid_map_hash``).

:func:`model_catalog` is what every consumer (Recommender, eval, chat, serve, think-ahead) uses
to know the model's items: the data set's catalog plus ``catalog_added.jsonl``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recllm.data.types import Catalog
from recllm.errors import UserError
from recllm.io import atomic_dir, write_json_atomic
from recllm.sid.sidmap import FILENAME as SID_MAP_FILENAME
from recllm.sid.sidmap import SIDMap
from recllm.vocab.checkpoint import VOCAB_FILENAME, check_model_dir, load_model_with_sids
from recllm.vocab.extend import (
    CONFIG_HASH_ATTR,
    _add_tokens,
    _init_rows,
    _is_tied,
    check_vocab,
)
from recllm.vocab.format import SID_FORMAT

__all__ = [
    "ADDED_FILENAME",
    "QUANTIZER_DIRNAME",
    "CatalogAddition",
    "add_items_to_model",
    "model_catalog",
    "model_quantizer_dir",
    "read_added_items",
]

logger = logging.getLogger(__name__)

ADDED_FILENAME = "catalog_added.jsonl"
QUANTIZER_DIRNAME = "sid_quantizer"


@dataclass
class CatalogAddition:
    """What :func:`add_items_to_model` needs from ``recllm sid assign`` (the fields of
    :class:`recllm.sid.quantizer.SIDAssignment` it reads).

    Attributes:
        sid_map: The extended map: the old items first with unchanged codes, then the new ones.
        new_items: The added item ids, in the order they were appended.
        grown_levels: ``level -> new codebook size`` for levels that needed more codes.
        report: Counts from the assignment (stored in the ``catalog_additions`` record).
    """

    sid_map: SIDMap
    new_items: list[str]
    grown_levels: dict[int, int] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)


def recorded_new_item_bonus(model_dir: str | os.PathLike[str]) -> float | None:
    """The new-item bonus the last ``recllm catalog add`` recorded in ``model_dir`` (None: none,
    or no items were added)."""
    from recllm.vocab.checkpoint import read_vocab_record

    additions = read_vocab_record(Path(model_dir)).get("catalog_additions") or []
    bonus = additions[-1].get("new_item_bonus") if additions else None
    return None if bonus is None else float(bonus)


def recorded_new_item_text_alpha(model_dir: str | os.PathLike[str]) -> float | None:
    """The text-similarity scale the last ``recllm catalog add`` recorded (None: the added
    items are searched by the beam, or none were added)."""
    from recllm.vocab.checkpoint import read_vocab_record

    additions = read_vocab_record(Path(model_dir)).get("catalog_additions") or []
    alpha = additions[-1].get("new_item_text_alpha") if additions else None
    return None if alpha is None else float(alpha)


def recorded_new_item_text(model_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The hybrid's ``norm_top``, ``guide`` and ``max_new``
    (:class:`recllm.decode.fresh.TextNewItems`) the last ``recllm catalog add`` recorded; ``{}``
    when it recorded none (older models)."""
    from recllm.vocab.checkpoint import read_vocab_record

    additions = read_vocab_record(Path(model_dir)).get("catalog_additions") or []
    last = additions[-1] if additions else {}
    out: dict[str, Any] = {}
    if last.get("new_item_text_norm_top") is not None:
        out["norm_top"] = int(last["new_item_text_norm_top"])
    if last.get("new_item_text_guide") is not None:
        out["guide"] = float(last["new_item_text_guide"])
    if last.get("new_item_text_max_new") is not None:
        out["max_new"] = int(last["new_item_text_max_new"])
    return out


def read_added_items(model_dir: str | os.PathLike[str]) -> Catalog:
    """The items added to ``model_dir`` by :func:`add_items_to_model` (empty when none).

    Raises:
        UserError: A line of ``catalog_added.jsonl`` is not a JSON object with an ``item_id``.
    """
    path = Path(model_dir) / ADDED_FILENAME
    items: dict[str, dict[str, str]] = {}
    fields: list[str] = []
    if not path.is_file():
        return Catalog({}, ())
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            item = str(row.pop("item_id"))
        except (json.JSONDecodeError, KeyError, AttributeError, TypeError):
            raise UserError(
                f"{path}:{n}",
                "not a JSON object with an item_id",
                "restore the file written by recllm catalog add, or add the items again",
            ) from None
        for f in row:
            if f not in fields:
                fields.append(f)
        items[item] = {k: str(v) for k, v in row.items()}
    return Catalog({i: {f: t.get(f, "") for f in fields} for i, t in items.items()}, tuple(fields))


def model_catalog(model_dir: str | os.PathLike[str], base_catalog: Catalog) -> Catalog:
    """The model's catalog: the data set's catalog plus the items added to the model.

    Args:
        model_dir: A model directory (with or without ``catalog_added.jsonl``).
        base_catalog: The catalog of the data the model was trained on.

    Returns:
        ``base_catalog`` itself when nothing was added, else a new catalog with the added items
        appended (their fields mapped onto the base catalog's; a field the base lacks is kept).
    """
    added = read_added_items(model_dir)
    if not len(added):
        return base_catalog
    fields = list(base_catalog.text_fields) + [
        f for f in added.text_fields if f not in base_catalog.text_fields
    ]
    items = {i: {f: t.get(f, "") for f in fields} for i, t in base_catalog.items.items()}
    for i, t in added.items.items():
        if i not in items:  # an item the data already has keeps the data's text
            items[i] = {f: t.get(f, "") for f in fields}
    return Catalog(items, tuple(fields))


def _check_assignment(model_dir: Path, old: SIDMap, assignment: Any, new_catalog: Catalog) -> None:
    new: SIDMap = assignment.sid_map
    n = len(old)
    where = f"the SID assignment for {model_dir}"
    fix = (
        "assign the new items with the SID artifact the model was trained with "
        "(recllm sid assign --sids DIR, whose sid_map hash equals the model's)"
    )
    if new.item_ids[:n] != old.item_ids or not np.array_equal(new.codes[:n], old.codes):
        raise UserError(where, "it does not keep the model's items first with their codes", fix)
    if new.levels != old.levels:
        raise UserError(where, f"it has {new.levels} levels, the model {old.levels}", fix)
    pairs = list(zip(old.codebook_sizes, new.codebook_sizes, strict=True))
    grown = {lv for lv, (a, b) in enumerate(pairs) if a != b}
    if grown - {old.levels - 1} or any(b < a for a, b in pairs):
        raise UserError(
            where,
            f"codebook sizes changed at level(s) {sorted(grown)} "
            f"({list(old.codebook_sizes)} -> {list(new.codebook_sizes)}): only the last "
            "(extra) level may grow, because its new code tokens then follow the model's SID "
            "tokens",
            fix,
        )
    added = list(new.item_ids[n:])
    if added != list(assignment.new_items):
        raise UserError(where, "its new_items are not the items appended to its map", fix)
    missing = [i for i in added if i not in new_catalog]
    if missing:
        raise UserError(
            where,
            f"{len(missing)} new item(s) have no catalog entry (first: {missing[0]!r})",
            "pass the new-items file the assignment was made from",
        )


def model_quantizer_dir(
    model_dir: str | os.PathLike[str], sids: str | os.PathLike[str] | None = None
) -> Path:
    """The SID quantizer directory to encode new items for ``model_dir`` with.

    Args:
        model_dir: The model directory; its ``sid_quantizer/`` is used when ``sids`` is None.
        sids: A SID artifact directory (``recllm sid build`` output with ``quantizer/``) whose
            ``sid_map.json`` is the model's map (or the map it was extended from).

    Raises:
        UserError: No quantizer (a model saved before recllm kept it), or ``sids`` holds
            another SID map; the message names ``--sids DIR`` as the fix.
    """
    from recllm.sid.quantizer import DIRNAME

    model = Path(model_dir)
    model_map = SIDMap.load(model / SID_MAP_FILENAME)
    adds = model_map.meta.get("additions") or []
    root = adds[0]["parent_content_hash"] if adds else model_map.content_hash
    if sids is None:
        if (model / QUANTIZER_DIRNAME).is_dir():
            return model / QUANTIZER_DIRNAME
        raise UserError(
            model,
            f"the model has no {QUANTIZER_DIRNAME}/ (it was saved before recllm kept the SID "
            "quantizer with the model), so new items cannot be encoded",
            f"pass --sids DIR: the SID artifact the model was trained with (its sid_map.json "
            f"content_hash must be {root}; OUTPUT_DIR/sids of the training run, or rebuild it "
            "with the same settings via recllm sid build)",
        )
    art = Path(sids)
    art_map = SIDMap.load(art / SID_MAP_FILENAME if art.is_dir() else art)
    if art_map.content_hash not in (root, model_map.content_hash):
        raise UserError(
            f"--sids {art}",
            f"its SID map {art_map.content_hash[:12]} is not the model's ({root[:12]})",
            "pass the SID artifact the model was trained with (same sid_map content_hash)",
        )
    if not (art / DIRNAME).is_dir():
        raise UserError(
            f"--sids {art}",
            f"no {DIRNAME}/ in this SID artifact (built before recllm saved the quantizer)",
            "rebuild it with the same settings (recllm sid build); the codes are reproducible",
        )
    return art / DIRNAME


@torch.no_grad()
def _grow_rows(src: Path, tmp: Path, new_map: SIDMap, text: Catalog) -> dict[str, int]:
    """Add the code tokens of the grown last level to the tokenizer and model, their rows
    initialised from the new items' titles as ``init="item_text_spread"`` does; every other row
    (and every other weight) is restored bit for bit. Saves model and tokenizer into ``tmp``."""
    model, tok, old_map = load_model_with_sids(src)
    old_ids = SID_FORMAT.token_ids(tok, old_map.codebook_sizes)
    if old_ids.last_id != len(tok) - 1:
        raise UserError(
            src,
            "tokens follow the SID tokens in its tokenizer, so new code tokens would not be "
            "contiguous with them",
            "rebuild the SIDs with spare codes at the last level, or retrain",
        )
    last = old_map.levels - 1
    codes = range(old_map.codebook_sizes[last], new_map.codebook_sizes[last])
    _add_tokens(tok, [SID_FORMAT.code_token(last, c) for c in codes])
    new_ids = check_vocab(tok, new_map, SID_FORMAT)
    tied = _is_tied(model)

    def matrices() -> list[torch.Tensor]:
        out = model.get_output_embeddings()
        head = [out.weight] if out is not None and not tied else []
        return [model.get_input_embeddings().weight, *head]

    saved = [w.detach().clone() for w in matrices()]
    if saved[0].shape[0] <= new_ids.last_id:
        model.resize_token_embeddings(len(tok), pad_to_multiple_of=64, mean_resizing=False)
    _init_rows(model, tok, new_map, new_ids, "item_text_spread", text, "title", tied)
    new_rows = torch.arange(old_ids.last_id + 1, new_ids.last_id + 1)
    n_old = old_ids.first_id
    for w, before in zip(matrices(), saved, strict=True):
        grown = w[new_rows].clone()
        w[: before.shape[0]] = before  # every old row as it was
        w[new_rows] = grown
        if w.shape[0] > before.shape[0]:  # padding rows the resize added (no token uses them)
            pad = torch.ones(w.shape[0], dtype=torch.bool)
            pad[: before.shape[0]] = False
            pad[new_rows] = False
            w[pad] = w[:n_old].float().mean(0).to(w.dtype)
    setattr(model.config, CONFIG_HASH_ATTR, new_map.content_hash)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    return {
        "new_token_rows": len(new_rows),
        "embedding_rows": int(matrices()[0].shape[0]),
        "tokenizer_len": len(tok),
        "last_sid_token_id": new_ids.last_id,
        "num_sid_tokens": new_ids.num_tokens,
    }


def _copy_quantizer(src: Path, dest: Path, quantizer_dir: str | os.PathLike[str] | None) -> None:
    chosen = Path(quantizer_dir) if quantizer_dir is not None else src / QUANTIZER_DIRNAME
    if chosen.is_dir():
        shutil.copytree(chosen, dest / QUANTIZER_DIRNAME)


def add_items_to_model(
    model_dir: str | os.PathLike[str],
    assignment: Any,
    new_catalog: Catalog,
    out_dir: str | os.PathLike[str],
    *,
    warmup_steps: int = 0,
    warmup: Callable[[Path], dict[str, Any]] | None = None,
    quantizer_dir: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    new_item_bonus: float | None = None,
    new_item_text_alpha: float | None = None,
    new_item_text_norm_top: int | None = None,
    new_item_text_guide: float | None = None,
    new_item_text_max_new: int | None = None,
) -> Path:
    """Write a copy of ``model_dir`` that also knows the assignment's new items.

    Args:
        model_dir: A directory written by :func:`recllm.vocab.save_model_with_sids` (or by an
            earlier :func:`add_items_to_model`).
        assignment: A :class:`recllm.sid.quantizer.SIDAssignment` (or :class:`CatalogAddition`)
            whose map extends the model's map.
        new_catalog: The new items' text fields (``read_new_items``); stored in
            ``catalog_added.jsonl`` so titles of added items are known without the data.
        out_dir: The new model directory (written atomically).
        warmup_steps: Steps of warm-up (recorded); > 0 needs ``warmup``.
        warmup: Called with the complete temporary directory before it is renamed into place;
            trains the new items' code rows in place and returns its figures (the CLI passes
            :func:`recllm.train.catalog_warmup.warm_up_added_items`; training code lives above
            this layer).
        quantizer_dir: The SID quantizer to carry along as ``sid_quantizer/`` (default: the
            model's own).
        overwrite: Replace an existing non-empty ``out_dir``.
        new_item_bonus: Recorded for the decoders: every added item's score gets it, and a beam
            group of their own searches them (:mod:`recllm.decode.fresh`); None: plain search.
        new_item_text_alpha: Recorded for the Recommender: the added items are scored by this
            times their text cosine to the history's recent items, plus ``new_item_bonus``,
            beside a search of the trained items alone (``TextNewItems``, the hybrid).
        new_item_text_norm_top: Recorded for the hybrid: the cosine minus the mean of the
            user's ``m`` nearest catalog items (``TextNewItems.norm_top``).
        new_item_text_guide: Recorded for the hybrid: the share of the search's best trained
            items in the user's text vector (``TextNewItems.guide``).
        new_item_text_max_new: Recorded for the hybrid: the most new items in one list
            (``TextNewItems.max_new``).

    Returns:
        ``out_dir`` as a Path.

    Raises:
        UserError: The assignment does not extend the model's map, new items lack catalog
            entries, or ``out_dir`` is ``model_dir``.
    """
    src = Path(model_dir)
    record = check_model_dir(src, weights=True)
    old = SIDMap.load(src / SID_MAP_FILENAME)
    if warmup_steps < 0 or (warmup_steps and warmup is None):
        raise UserError(
            "--warmup-steps",
            f"{warmup_steps} needs a warm-up function and a count >= 0",
            "pass warmup=functools.partial(warm_up_added_items, ...) or warmup_steps=0",
        )
    if Path(out_dir).resolve() == src.resolve():
        raise UserError(out_dir, "the output is the model directory itself", "pass a new --out")
    _check_assignment(src, old, assignment, new_catalog)
    new_map: SIDMap = assignment.sid_map
    added = list(assignment.new_items)
    previous = read_added_items(src)
    rows = [{"item_id": i, **previous.items[i]} for i in previous.items]
    rows += [{"item_id": i, **new_catalog.items[i]} for i in added]
    additions = list(record.get("catalog_additions", []))
    additions.append(
        {
            "parent_sid_map_hash": old.content_hash,
            "sid_map_hash": new_map.content_hash,
            "items_added": len(added),
            "report": dict(getattr(assignment, "report", {}) or {}),
            "new_item_bonus": new_item_bonus,
            "new_item_text_alpha": new_item_text_alpha,
            "new_item_text_norm_top": new_item_text_norm_top,
            "new_item_text_guide": new_item_text_guide,
            "new_item_text_max_new": new_item_text_max_new,
        }
    )
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        for f in src.iterdir():
            if f.is_file() and f.name not in (SID_MAP_FILENAME, VOCAB_FILENAME, ADDED_FILENAME):
                shutil.copyfile(f, tmp / f.name)  # weights and tokenizer: byte for byte
            elif f.is_dir() and f.name != QUANTIZER_DIRNAME:
                shutil.copytree(f, tmp / f.name)
        _copy_quantizer(src, tmp, quantizer_dir)
        grown = new_map.codebook_sizes != old.codebook_sizes
        if grown:  # new code tokens: the only weights that change are their rows
            rows = _grow_rows(src, tmp, new_map, new_catalog)
            additions[-1]["new_token_rows"] = rows["new_token_rows"]
        config = json.loads((tmp / "config.json").read_text(encoding="utf-8"))
        config[CONFIG_HASH_ATTR] = new_map.content_hash
        config["catalog_additions"] = additions
        write_json_atomic(tmp / "config.json", config)
        new_map.save(tmp)
        (tmp / ADDED_FILENAME).write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
        )
        new_record = dict(record)
        new_record["sid_map_hash"] = new_map.content_hash
        if grown:
            new_record["codebook_sizes"] = list(new_map.codebook_sizes)
            for key in ("embedding_rows", "tokenizer_len", "last_sid_token_id", "num_sid_tokens"):
                new_record[key] = rows[key]
        new_record["catalog_additions"] = additions
        files = set(record.get("files") or []) | {ADDED_FILENAME}
        new_record["files"] = sorted(files & {f.name for f in tmp.iterdir() if f.is_file()})
        write_json_atomic(tmp / VOCAB_FILENAME, new_record)
        if warmup_steps:
            additions[-1]["warmup"] = warmup(tmp)  # the weights change: no longer a byte copy
            write_json_atomic(tmp / VOCAB_FILENAME, new_record)
    logger.info(
        "Added %d items to %s (SID map %s -> %s), wrote %s",
        len(added),
        src,
        old.content_hash[:12],
        new_map.content_hash[:12],
        out_dir,
    )
    return Path(out_dir)
