"""A model directory that carries its SID map, and a loader that refuses mismatched parts.

:func:`save_model_with_sids` writes, atomically (a temporary sibling directory renamed into
place)::

    out_dir/
      config.json, model.safetensors, generation_config.json   # the model
      tokenizer.json, tokenizer_config.json, ...                # the extended tokenizer
      sid_map.json                                              # recllm.sid.SIDMap
      recllm_vocab.json                                         # how the three fit together
      prompts/rec.jinja                                         # optional: the prompt it learned

``recllm_vocab.json`` records the SID map's content hash, the token format, the id range of the
SID tokens, the levels and codebook sizes, the library versions and the files saved beside it
(so a deleted tokenizer or weights file is reported by name). :func:`load_model_with_sids`
re-checks all of it, because a model decoded with another map's SIDs still produces valid-looking
item ids: the error would otherwise only show up as bad metrics.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recllm.errors import UserError
from recllm.io import atomic_dir, write_json_atomic
from recllm.provenance import library_versions
from recllm.sid.sidmap import FILENAME as SID_MAP_FILENAME
from recllm.sid.sidmap import SIDMap
from recllm.vocab.extend import CONFIG_HASH_ATTR, check_vocab
from recllm.vocab.format import SID_FORMAT, SIDFormat, SIDTokenIds, VocabMismatchError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "VOCAB_FILENAME",
    "VOCAB_FORMAT",
    "check_model_dir",
    "load_model_with_sids",
    "load_tokenizer_with_sids",
    "read_vocab_record",
    "save_model_with_sids",
]

logger = logging.getLogger(__name__)

VOCAB_FILENAME = "recllm_vocab.json"
VOCAB_FORMAT = "recllm.vocab/1"
PROMPTS_DIRNAME = "prompts"


def save_model_with_sids(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sid_map: SIDMap,
    out_dir: str | os.PathLike[str],
    *,
    fmt: SIDFormat = SID_FORMAT,
    overwrite: bool = False,
    recommender: Mapping[str, Any] | None = None,
    prompt_files: Sequence[str | os.PathLike[str]] = (),
    quantizer_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Save model, tokenizer, SID map and ``recllm_vocab.json`` into one directory, atomically.

    Args:
        model: A plain transformers model (merge PEFT adapters first: an adapter directory does
            not hold the resized embedding).
        tokenizer: The tokenizer extended for ``sid_map``.
        sid_map: The SID map the model was extended and trained for.
        out_dir: Target directory.
        fmt: The token format.
        overwrite: Replace an existing non-empty ``out_dir``.
        recommender: How to prompt the model for recommendations (``prompt_style``
            ``"chat"`` or ``"sid_sequence"``, ``max_history``, task settings), stored in
            ``recllm_vocab.json`` so that evaluation and serving build the prompts training used.
        prompt_files: Jinja templates to copy into ``out_dir/prompts/`` (the model then carries
            the exact prompt it was trained on).
        quantizer_dir: The SID build's ``quantizer/`` (``OUTPUT_DIR/sids/quantizer``), copied
            into ``out_dir/sid_quantizer/`` so ``recllm catalog add`` can code new items for
            this model; copied only when it was saved with ``sid_map`` (same content hash),
            skipped (logged) when absent or of another map.

    Returns:
        ``out_dir`` as a Path.

    Raises:
        VocabMismatchError: Model, tokenizer and SID map do not belong together.
        TypeError: ``model`` is a PEFT model.
        FileExistsError: ``out_dir`` exists, is not empty and ``overwrite`` is False.
    """
    if hasattr(model, "peft_config"):
        raise TypeError(
            "save_model_with_sids needs a plain transformers model; Fix: "
            "model = model.merge_and_unload() (save the adapter separately first if you need it)"
        )
    ids = check_vocab(tokenizer, sid_map, fmt)
    stamp = getattr(model.config, CONFIG_HASH_ATTR, None)
    if stamp is not None and stamp != sid_map.content_hash:
        raise VocabMismatchError(
            f"the model's SID rows were made for SID map {stamp}, not {sid_map.content_hash}; "
            "Fix: save it with the SID map it was extended and trained with"
        )
    _check_rows(model, ids, "the model")
    setattr(model.config, CONFIG_HASH_ATTR, sid_map.content_hash)
    versions = library_versions()
    record = {
        "format": VOCAB_FORMAT,
        "sid_map_hash": sid_map.content_hash,
        "token_format": {
            "begin": fmt.begin,
            "end": fmt.end,
            "code_token": "<{letter}_{code}>, letter a = level 0",
            "order": "begin, end, then level by level, code by code (contiguous ids)",
        },
        "levels": sid_map.levels,
        "codebook_sizes": list(sid_map.codebook_sizes),
        "num_sid_tokens": ids.num_tokens,
        "first_sid_token_id": ids.first_id,
        "last_sid_token_id": ids.last_id,
        "tokenizer_len": len(tokenizer),
        "embedding_rows": model.get_input_embeddings().weight.shape[0],
        "versions": {k: versions[k] for k in ("recllm", "transformers", "torch") if k in versions},
    }
    if recommender is not None:
        record["recommender"] = dict(recommender)
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        sid_map.save(tmp)
        if prompt_files:
            (tmp / PROMPTS_DIRNAME).mkdir()
            for f in prompt_files:
                shutil.copyfile(f, tmp / PROMPTS_DIRNAME / Path(f).name)
        if quantizer_dir is not None:
            _copy_quantizer(Path(quantizer_dir), sid_map, tmp)
        record["files"] = sorted(f.name for f in tmp.iterdir() if f.is_file())
        write_json_atomic(tmp / VOCAB_FILENAME, record)
    logger.info(
        "Saved model with SID map %s (%d SID tokens, ids %d..%d) to %s",
        sid_map.content_hash[:12],
        ids.num_tokens,
        ids.first_id,
        ids.last_id,
        out_dir,
    )
    return Path(out_dir)


def _copy_quantizer(src: Path, sid_map: SIDMap, tmp: Path) -> None:
    """Copy a SID quantizer into ``tmp/sid_quantizer`` when it belongs to ``sid_map``."""
    from recllm.sid.quantizer import SIDQuantizer

    if not src.is_dir():
        logger.info("No SID quantizer at %s: the model is saved without sid_quantizer/", src)
        return
    adds = sid_map.meta.get("additions") or []
    root = adds[0]["parent_content_hash"] if adds else sid_map.content_hash
    found = SIDQuantizer.load(src).sid_map_hash
    if found not in (root, sid_map.content_hash):
        logger.warning(
            "SID quantizer %s belongs to SID map %s, not %s: not copied into the model",
            src,
            found[:12],
            sid_map.content_hash[:12],
        )
        return
    shutil.copytree(src, tmp / "sid_quantizer")


def read_vocab_record(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed ``recllm_vocab.json`` of a directory written by :func:`save_model_with_sids`.

    Raises:
        UserError: ``directory`` is not a directory, or the file is not valid JSON.
        VocabMismatchError: The file is missing or has another format.
    """
    path = Path(directory) / VOCAB_FILENAME
    if not Path(directory).is_dir():
        raise UserError(
            directory,
            "no such model directory"
            if not Path(directory).exists()
            else "a file, not a directory",
            "pass a model directory written by recllm (the quickstart's or the recipe's "
            "OUTPUT_DIR/model)",
        )
    if not path.is_file():
        raise VocabMismatchError(
            f"{path} not found: {directory} was not saved by recllm.vocab.save_model_with_sids, "
            "so nothing ties its tokenizer to a SID map. Fix: extend the base model with "
            "recllm.vocab.extend_vocab and save it with save_model_with_sids"
        )
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(
            path,
            f"the file is truncated or corrupt, not valid JSON ({e})",
            "restore the model directory as save_model_with_sids wrote it, or save the model again",
        ) from None
    found = record.get("format") if isinstance(record, dict) else None
    if found != VOCAB_FORMAT:
        raise VocabMismatchError(
            f"{path}: not a {VOCAB_FORMAT} record (format {found!r}); Fix: re-save the model "
            "with this recllm version's save_model_with_sids"
        )
    return record


def load_model_with_sids(
    directory: str | os.PathLike[str],
    *,
    sid_map: SIDMap | None = None,
    **from_pretrained_kwargs: Any,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, SIDMap]:
    """Load a directory written by :func:`save_model_with_sids` and check its parts match.

    Cheap checks run before the model weights are read: the stored SID map's hash equals the
    recorded one, an explicit ``sid_map`` has that hash too, and the tokenizer holds exactly the
    SID tokens at the recorded ids. Then the model's embedding (and LM head) must cover them.

    Args:
        directory: The saved directory.
        sid_map: The SID map the caller intends to use (e.g. the one evaluation reads); refused
            when it differs from the saved one. None uses the saved map.
        **from_pretrained_kwargs: Passed to ``AutoModelForCausalLM.from_pretrained``
            (``dtype=``, ``device_map=``, ...).

    Returns:
        ``(model, tokenizer, sid_map)``.

    Raises:
        VocabMismatchError: Any part does not match; the message names both sides and the fix.
    """
    from transformers import AutoModelForCausalLM

    directory = Path(directory)
    check_model_dir(directory, weights=True)
    tokenizer, stored = load_tokenizer_with_sids(directory, sid_map=sid_map)
    record = read_vocab_record(directory)
    recorded = record["sid_map_hash"]
    fmt = SIDFormat(record["token_format"]["begin"], record["token_format"]["end"])
    ids = fmt.token_ids(tokenizer, stored.codebook_sizes)  # checked above; the rows to cover
    model = AutoModelForCausalLM.from_pretrained(directory, **from_pretrained_kwargs)
    stamp = getattr(model.config, CONFIG_HASH_ATTR, None)
    if stamp is not None and stamp != recorded:
        raise VocabMismatchError(
            f"{directory}: config.json says the SID rows were made for SID map {stamp}, "
            f"{VOCAB_FILENAME} says {recorded}; Fix: restore the files saved together"
        )
    _check_rows(model, ids, str(directory))
    logger.info(
        "Loaded model with SID map %s (%d items, %d SID tokens, ids %d..%d) from %s",
        recorded[:12],
        len(stored),
        ids.num_tokens,
        ids.first_id,
        ids.last_id,
        directory,
    )
    return model, tokenizer, stored


def load_tokenizer_with_sids(
    directory: str | os.PathLike[str], *, sid_map: SIDMap | None = None
) -> tuple[PreTrainedTokenizerBase, SIDMap]:
    """The tokenizer and SID map of a directory written by :func:`save_model_with_sids`, checked
    against each other and ``recllm_vocab.json`` without reading the weights (for engines such as
    vLLM that load the weights themselves).

    Raises:
        VocabMismatchError: Any part does not match; the message names both sides and the fix.
    """
    from transformers import AutoTokenizer

    directory = Path(directory)
    record = check_model_dir(directory, weights=False)
    recorded = record["sid_map_hash"]
    stored = SIDMap.load(directory / SID_MAP_FILENAME)
    if stored.content_hash != recorded:
        raise VocabMismatchError(
            f"{directory}: {SID_MAP_FILENAME} has content hash {stored.content_hash} but "
            f"{VOCAB_FILENAME} records {recorded}: the SID map file was replaced after saving. "
            "Fix: restore the SID map the model was saved with"
        )
    if sid_map is not None and sid_map.content_hash != recorded:
        raise VocabMismatchError(
            f"SID map mismatch: the model in {directory} was trained with SID map {recorded}, "
            f"but the SID map passed in has content hash {sid_map.content_hash}. Decoding would "
            f"map generated SIDs to the wrong items. Fix: use the saved map "
            f"(SIDMap.load('{directory / SID_MAP_FILENAME}')) or pass sid_map=None, or re-run "
            "vocabulary extension and training with your map"
        )
    fmt = SIDFormat(record["token_format"]["begin"], record["token_format"]["end"])
    tokenizer = AutoTokenizer.from_pretrained(directory)
    ids = check_vocab(tokenizer, stored, fmt)
    if (ids.first_id, ids.last_id) != (
        record["first_sid_token_id"],
        record["last_sid_token_id"],
    ):
        raise VocabMismatchError(
            f"{directory}: the tokenizer has SID tokens at ids {ids.first_id}..{ids.last_id}, "
            f"but {VOCAB_FILENAME} records {record['first_sid_token_id']}.."
            f"{record['last_sid_token_id']}; Fix: restore the tokenizer files saved with the model"
        )
    return tokenizer, sid_map if sid_map is not None else stored


#: Files a tokenizer may be saved as (``save_pretrained`` writes a subset, by tokenizer kind).
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
)


def _is_weights(name: str) -> bool:
    return name.endswith((".safetensors", ".bin")) or name.endswith(".index.json")


def check_model_dir(directory: str | os.PathLike[str], *, weights: bool = True) -> dict[str, Any]:
    """Check that a directory written by :func:`save_model_with_sids` still holds its files.

    Runs before anything is loaded, so a deleted tokenizer or weights file is reported by name
    rather than as a mismatch it causes downstream (transformers falls back to other files, and
    a tokenizer without the SID tokens reads as "lacks 23 of 23 SID tokens"). Directories saved
    before the file list was recorded are checked for ``config.json``, weights and tokenizer
    files by pattern.

    Args:
        directory: The model directory.
        weights: Also require ``config.json`` and the weights (False for engines that only need
            the tokenizer and SID map here, such as vLLM, which reads the weights itself).

    Returns:
        The parsed ``recllm_vocab.json``.

    Raises:
        UserError: Files are missing; the message names them and the fix.
        VocabMismatchError: ``recllm_vocab.json`` is missing or has another format.
    """
    directory = Path(directory)
    record = read_vocab_record(directory)
    recorded = record.get("files")
    present = {f.name for f in directory.iterdir() if f.is_file()}
    if isinstance(recorded, list):
        missing = [f for f in recorded if f not in present]
    else:  # saved by an older recllm: check by pattern
        missing = []
        if not present & {"tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt"}:
            missing.append("tokenizer.json")
        if "tokenizer_config.json" not in present:
            missing.append("tokenizer_config.json")
        if "config.json" not in present:
            missing.append("config.json")
        if not any(_is_weights(f) for f in present):
            missing.append("model.safetensors")
        if SID_MAP_FILENAME not in present:
            missing.append(SID_MAP_FILENAME)
    if not weights:
        missing = [
            f
            for f in missing
            if not _is_weights(f) and f not in ("config.json", "generation_config.json")
        ]
    if not missing:
        return record
    kinds = []
    tok = [f for f in missing if f in _TOKENIZER_FILES]
    wts = [f for f in missing if _is_weights(f)]
    other = [f for f in missing if f not in tok and f not in wts]
    if tok:
        kinds.append(f"the tokenizer files {', '.join(tok)}")
    if wts:
        kinds.append(f"the model weights {', '.join(wts)}")
    if other:
        kinds.append(", ".join(other))
    raise UserError(
        directory,
        f"incomplete model directory: {'; '.join(kinds)} missing",
        "restore the files saved together by save_model_with_sids (copy the whole directory), "
        "or train and save the model again",
    )


def _check_rows(model: PreTrainedModel, ids: SIDTokenIds, where: str) -> None:
    """The input embedding and the LM head must have a row for every SID token."""
    matrices = {"input embedding": model.get_input_embeddings().weight}
    out = model.get_output_embeddings()
    if out is not None:
        matrices["LM head"] = out.weight
    for name, weight in matrices.items():
        if weight.shape[0] <= ids.last_id:
            raise VocabMismatchError(
                f"{where}: the {name} has {weight.shape[0]} rows but SID token ids go up to "
                f"{ids.last_id}; Fix: extend the model with recllm.vocab.extend_vocab (or load "
                "the model saved with this tokenizer)"
            )
