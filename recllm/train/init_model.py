"""Continuing a saved recllm model (``--init_model`` of the plum_sft and seqlm recipes).

The model directory brings its weights, tokenizer and SID map: the SID build and the vocabulary
extension are skipped and the map is reused as it is. Codes are never rebuilt under a trained
model, so data with items the map lacks is refused: ``recllm catalog add`` gives them codes
first (its model directory is then the one to continue). What catalog add keeps beside a model
(:data:`CATALOG_FILES`) is carried on to the continued model.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from recllm.errors import UserError
from recllm.sid.sidmap import SIDMap
from recllm.vocab import VOCAB_FILENAME, VocabMismatchError
from recllm.vocab.checkpoint import check_model_dir, load_tokenizer_with_sids


def load_init_model(path: str, prompt_style: str) -> tuple[Any, SIDMap]:
    """The tokenizer and SID map of ``--init_model``, checked before any weight is read: a
    directory a recipe of ``prompt_style`` (``chat``: plum_sft; ``sid_sequence``: seqlm)
    saved, with its files."""
    directory = Path(path)
    if not (directory / VOCAB_FILENAME).is_file():
        raise UserError(
            f"--init_model {path}",
            f"is not a saved recllm model directory (no {VOCAB_FILENAME})",
            "pass a model directory a recipe saved (OUTPUT_DIR/model) or `recllm catalog add` "
            "wrote",
        )
    record = check_model_dir(directory, weights=True)
    style = (record.get("recommender") or {}).get("prompt_style")
    if style != prompt_style:
        recipe = {"chat": "plum_sft", "sid_sequence": "seqlm"}
        raise UserError(
            f"--init_model {path}",
            f"is a {style or 'unknown'}-prompted model, and this recipe trains {prompt_style} "
            "prompts",
            f"continue it with the recipe that made it ({recipe.get(style or '', 'its recipe')})",
        )
    try:
        return load_tokenizer_with_sids(directory)
    except VocabMismatchError as e:
        raise UserError(
            f"--init_model {path}", str(e), "restore the files saved together"
        ) from None


def check_items_in_map(catalog: Any, sid_map: SIDMap, model_dir: str) -> None:
    """Refuse data whose catalog holds items the continued model's SID map lacks: the model
    has no code for them, and codes are never rebuilt under a trained model."""
    missing = [item for item in catalog.ids if item not in sid_map]
    if missing:
        shown = ", ".join(repr(i) for i in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise UserError(
            f"--init_model {model_dir}",
            f"its SID map lacks {len(missing)} item(s) of the data ({shown})",
            f"add them to the model first: recllm catalog add --model {model_dir} --items "
            "NEW_ITEMS_FILE --out NEW_MODEL_DIR, then pass --init_model NEW_MODEL_DIR",
        )


#: What `recllm catalog add` keeps beside a model (the items it added, the frozen quantizer):
#: a model continued from it (``--init_model``) carries them on.
CATALOG_FILES = ("catalog_added.jsonl", "sid_quantizer")


def carry_catalog_files(src: Path, model_dir: Path) -> list[str]:
    """Copy ``src``'s :data:`CATALOG_FILES` that ``model_dir`` lacks; returns their names."""
    carried = []
    for name in CATALOG_FILES:
        if (src / name).exists() and not (model_dir / name).exists():
            if (src / name).is_dir():
                shutil.copytree(src / name, model_dir / name)
            else:
                shutil.copy2(src / name, model_dir / name)
            carried.append(name)
    return carried
