"""Score models on fixed users, once: figures and per-user ranks cached under a key.

A benchmark scores several models (a start, its trained arms, their variants) on the same
users and is rerun after stops and changes. :class:`ScoreCache` keeps each result in
``<folder>/<name>.json`` beside the *key* that made it (the model's files, the users, the
decoding settings); a result is reused only when its key is the same, so a retrained arm or
another beam width is scored again instead of being read stale. :class:`Scorer` is the usual
computation: constrained SID beam search through :func:`recllm.eval.run.evaluate_recommender`,
keeping every user's rank of the target for :mod:`recllm.bench.paired`.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["ScoreCache", "Scored", "Scorer", "digest", "model_fingerprint"]

#: Files of a model directory read whole into its fingerprint; weights count by size and time.
_SMALL = 1 << 20


def digest(value: Any) -> str:
    """A short stable hash of a JSON-able value (dataclasses, tuples and paths allowed)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return plain(dataclasses.asdict(v))
        if isinstance(v, Mapping):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, list | tuple | set | frozenset):
            items = [plain(x) for x in v]
            return sorted(items, key=repr) if isinstance(v, set | frozenset) else items
        if isinstance(v, Path):
            return str(v)
        return v

    text = json.dumps(plain(value), sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def model_fingerprint(model_dir: str | os.PathLike[str]) -> str:
    """A hash of a model directory's files: the content of the small ones (configs, SID map,
    tokenizer), the size and modification time of the large ones (weights). Retraining into the
    same directory changes it; reading the directory does not. A text head (``text_head/``,
    :mod:`recllm.decode.text_head`) is left out: fitting one changes no SID decoding result,
    and the scores that use it key on its own files."""
    root = Path(model_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such model directory")
    h = hashlib.sha256()
    files = (p for p in root.rglob("*") if p.is_file())
    for path in sorted(p for p in files if p.relative_to(root).parts[0] != "text_head"):
        st = path.stat()
        h.update(str(path.relative_to(root)).encode() + b"\0")
        if st.st_size <= _SMALL:
            h.update(path.read_bytes())
        else:
            h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


class ScoreCache:
    """Results as JSON files in ``folder``, each reused only under the key that made it."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.json"

    def get(self, name: str, key: Mapping[str, Any]) -> dict | None:
        """The stored result of ``name`` when it was made under ``key``, else None."""
        path = self.path(name)
        if not path.is_file():
            return None
        stored = json.loads(path.read_text(encoding="utf-8"))
        if stored.get("key") != json.loads(json.dumps(dict(key))):
            logger.info("%s: made with other settings or another model; scoring again", path)
            return None
        return stored["result"]

    def get_or_compute(
        self, name: str, key: Mapping[str, Any], compute: Callable[[], dict]
    ) -> dict:
        """The cached result of ``name`` under ``key``, or ``compute()`` stored (atomically)."""
        found = self.get(name, key)
        if found is not None:
            return found
        from recllm.io import write_json_atomic

        result = json.loads(json.dumps(compute()))  # what a later read will return
        write_json_atomic(self.path(name), {"key": dict(key), "result": result})
        return result


@dataclasses.dataclass
class Scored:
    """One scored row: its figures and every user's rank of the target (1 = first, 0 = not
    in the returned list)."""

    figures: dict[str, Any]
    ranks: list[int]


@dataclasses.dataclass
class Scorer:
    """Constrained SID beam search of models on the same users, through a :class:`ScoreCache`.

    Attributes:
        users: The scored examples (history, target), the same for every model.
        catalog: The catalog of their data set.
        cache: Where the results live.
        beams: Beam width (and the length of each user's ranked list).
        ks: Cut-offs of the figures.
        batch_size: Users per decoding batch.
        dtype: torch dtype name the models load in (None: as saved).
    """

    users: Sequence[Any]
    catalog: Any
    cache: ScoreCache
    beams: int = 20
    ks: tuple[int, ...] = (5, 10)
    batch_size: int = 32
    dtype: str | None = None

    def key(self, model_dir: str | os.PathLike[str], options: Mapping[str, Any]) -> dict:
        """What a result depends on: the model's files, the users, the decoding settings."""
        return {
            "model": model_fingerprint(model_dir),
            "users": digest([(list(ex.history), ex.target) for ex in self.users]),
            "beams": self.beams,
            "ks": list(self.ks),
            "options": digest(dict(options)),
        }

    def score(
        self, name: str, model_dir: str | os.PathLike[str], *, engine: str = "hf", **options: Any
    ) -> Scored:
        """The figures and ranks of ``model_dir`` (cached as ``name``).

        Args:
            engine: ``"hf"`` (transformers, recllm's SID beam search) or ``"vllm"`` (a vLLM
                engine started for this row and shut down after).
            options: More :func:`recllm.eval.run.evaluate_recommender` arguments (``think``,
                ``prefixes``...); they are part of the key.
        """
        key = self.key(model_dir, {**options, "engine": engine})
        result = self.cache.get_or_compute(
            name, key, lambda: self._compute(Path(model_dir), engine, options)
        )
        return Scored(result["figures"], result["ranks"])

    def _compute(self, model_dir: Path, engine: str, options: Mapping[str, Any]) -> dict:
        from recllm.eval.report import target_ranks
        from recllm.eval.run import evaluate_recommender
        from recllm.tasks.prompting import PromptSpec

        kw = dict(options)
        rec = model = None
        if engine == "vllm":
            from recllm.apps.recommender import Recommender

            rec = Recommender.from_pretrained(model_dir, engine="vllm", max_k=self.beams)
            tok, sid_map = rec.tokenizer, rec.sid_map
            kw.update(engine="vllm", recommender=rec)
        else:
            import torch

            from recllm.vocab import load_model_with_sids

            load_kw = {"dtype": getattr(torch, self.dtype)} if self.dtype else {}
            model, tok, sid_map = load_model_with_sids(model_dir, **load_kw)
            model.eval()
        res = evaluate_recommender(
            model,
            tok,
            sid_map,
            self.users,
            PromptSpec.from_model_dir(model_dir),
            self.catalog,
            beams=self.beams,
            ks=self.ks,
            batch_size=self.batch_size,
            **kw,
        )
        del rec, model
        gc.collect()
        figures = {k: v for k, v in res.metrics.items() if k != "think"}
        figures["seconds"] = round(res.seconds, 1)
        ranks = target_ranks([ex.target for ex in self.users], res.ranked)
        return {"figures": figures, "ranks": ranks}
