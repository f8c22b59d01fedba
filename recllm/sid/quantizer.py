"""The frozen SID quantizer: encode unseen items exactly as the build encoded the training items,
and give new items codes next to an existing SID map without moving any existing item.

Saved by the SID build as ``<sid_dir>/quantizer/`` (no pickle)::

    quantizer.json        SIDConfig, featurizer (tfidf vocabulary + settings, or the lm/st model
                          path and fingerprint), text fields, collaborative block for new items,
                          the SID map hash it was built with, content hash
    arrays.safetensors    tfidf IDF and SVD components, per-level codebooks (k-means: assignment
                          centroids and residual codebooks), RQ-VAE encoder weights and codebooks

The content hash covers the JSON (without the hash) and every array's name, dtype, shape and
bytes; :meth:`SIDQuantizer.load` recomputes it and refuses an edited or truncated artifact.

Exactness: re-encoding the training items' texts gives their pre-collision build codes for
``rq-kmeans`` and ``rq-vae``. ``balanced`` builds assign under equal-size capacities; a new item
has no capacity to share, so it takes its nearest code at each level (training items re-encoded
this way mostly differ from their balanced codes).

Collaborative block of a new item (``collab_weight > 0``): a new item has no interactions, so its
collaborative vector is **zero**, the same as the build gives a catalog item with no training
co-occurrence (:func:`recllm.sid.collab.collaborative_embeddings`). Its fused vector is then
``[sqrt(1 - w) * text, 0]``: only the text places it. Passing the stored collaborative rows of
training items to :meth:`SIDQuantizer.encode_texts` reproduces their build-time codes.

Example:
    >>> q = SIDQuantizer.load("out/sids/quantizer")  # doctest: +SKIP
    >>> q.encode_texts(["title: A new film; genres: Drama"])  # doctest: +SKIP
    array([[ 17, 201,   3]])
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recllm.data.types import Catalog
from recllm.errors import UserError
from recllm.io import atomic_dir, write_json_atomic
from recllm.sid.collab import l2_normalize
from recllm.sid.collisions import _place
from recllm.sid.config import SIDConfig
from recllm.sid.quantize import QuantizeResult, nearest
from recllm.sid.sidmap import SIDMap

logger = logging.getLogger(__name__)

FORMAT = "recllm.sid_quantizer/1"
DIRNAME = "quantizer"
JSON_NAME = "quantizer.json"
ARRAYS_NAME = "arrays.safetensors"
#: How the collaborative block of an item without interactions is filled (see module docstring).
COLD_COLLAB = "zero"


def _rebuild_fix(where: str = "the SID artifact") -> str:
    return (
        f"rebuild {where} with `recllm sid build` and the same data and settings (the codes are "
        "reproducible: the rebuilt sid_map.json has the same content hash) and pass that directory"
    )


def _hash(doc: dict[str, Any], arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    body = {k: v for k, v in doc.items() if k != "content_hash"}
    h.update(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"\x1e{name}\x1f{a.dtype.str}\x1f{a.shape}\x1f".encode())
        h.update(a.tobytes())
    return h.hexdigest()


@dataclass
class SIDQuantizer:
    """Everything needed to give an unseen item the code the build would have given it.

    Attributes:
        config: The SIDConfig of the build.
        text_fields: The catalog text fields embedded, in order.
        featurizer: ``{"kind": "tfidf", "vocabulary": [...], "settings": {...}}``, or
            ``{"kind": "lm"|"st", "model": path, "fingerprint": sha256}``, or
            ``{"kind": "external"}`` (embeddings from a file: texts cannot be encoded).
        arrays: Named float arrays (tfidf ``idf``/``components``, ``codebook.L``,
            ``assign.L``, ``vae.*``).
        sid_map_hash: Content hash of the SID map the build wrote with this quantizer.
        codebook_sizes: The quantizer's ``K`` per level (before any extra level).
        vae: rq-vae: ``{"scale", "config", "in_dim"}``.
    """

    config: SIDConfig
    text_fields: list[str]
    featurizer: dict[str, Any]
    arrays: dict[str, np.ndarray]
    sid_map_hash: str
    codebook_sizes: tuple[int, ...]
    vae: dict[str, Any] = field(default_factory=dict)

    @property
    def levels(self) -> int:
        return len(self.codebook_sizes)

    # ---------------------------------------------------------------- building and saving
    @classmethod
    def from_build(
        cls,
        cfg: SIDConfig,
        result: QuantizeResult,
        text_fields: list[str],
        featurizer: dict[str, Any],
        feature_arrays: dict[str, np.ndarray],
        sid_map_hash: str,
    ) -> SIDQuantizer:
        """Collect the fitted state of a build (see :func:`recllm.sid.build.build_sid_map`)."""
        arrays = {k: np.ascontiguousarray(v) for k, v in feature_arrays.items()}
        vae: dict[str, Any] = {}
        if result.encoder_state is not None:
            st = result.encoder_state
            for name, t in st["encoder"].items():  # type: ignore[union-attr]
                arrays[f"vae.encoder.{name}"] = t.numpy().astype(np.float32)
            arrays["vae.mean"] = np.asarray(st["mean"], dtype=np.float32)
            vae = {"scale": float(st["scale"]), "config": st["config"], "in_dim": st["in_dim"]}
        elif result.assign_codebooks is None:
            raise ValueError(
                "the quantize result carries neither assignment codebooks nor an encoder"
            )
        else:
            for level, book in enumerate(result.assign_codebooks):
                arrays[f"assign.{level}"] = np.asarray(book, dtype=np.float32)
            if result.first_text_centroids is not None:
                arrays["first_text.0"] = np.asarray(result.first_text_centroids, np.float32)
        for level, book in enumerate(result.codebooks):
            arrays[f"codebook.{level}"] = np.asarray(book, dtype=np.float32)
        return cls(
            cfg, list(text_fields), featurizer, arrays, sid_map_hash, result.codebook_sizes, vae
        )

    def _doc(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "sid_config": asdict(self.config),
            "text_fields": self.text_fields,
            "featurizer": self.featurizer,
            "cold_collab": COLD_COLLAB,
            "codebook_sizes": list(self.codebook_sizes),
            "sid_map_content_hash": self.sid_map_hash,
            "vae": self.vae,
        }

    @property
    def content_hash(self) -> str:
        return _hash(self._doc(), self.arrays)

    def save(self, out_dir: str | Path) -> Path:
        """Write ``quantizer.json`` and ``arrays.safetensors`` into ``out_dir`` (atomically)."""
        from safetensors.numpy import save_file

        out = Path(out_dir)
        with atomic_dir(out, overwrite=True) as tmp:
            save_file(self.arrays, str(tmp / ARRAYS_NAME))
            write_json_atomic(tmp / JSON_NAME, {**self._doc(), "content_hash": self.content_hash})
        return out

    @classmethod
    def load(cls, path: str | Path) -> SIDQuantizer:
        """Read a quantizer directory (or the SID artifact holding ``quantizer/``).

        Raises:
            UserError: Missing (an artifact built before quantizers were saved), truncated or
                edited files; the message names the file and the fix.
        """
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        p = Path(path)
        if (p / DIRNAME).is_dir() or (p / "sid_map.json").is_file():
            p = p / DIRNAME
        js, arr = p / JSON_NAME, p / ARRAYS_NAME
        if not js.is_file() or not arr.is_file():
            raise UserError(
                p,
                "no saved SID quantizer here: the SID artifact was built before recllm saved "
                "its quantizer (or the quantizer/ directory was not copied), so new items "
                "cannot be encoded",
                _rebuild_fix(),
            )
        try:
            doc = json.loads(js.read_text(encoding="utf-8"))
            arrays = load_file(str(arr))
        except (UnicodeDecodeError, json.JSONDecodeError, SafetensorError, OSError) as e:
            raise UserError(
                p, f"the quantizer files are truncated or corrupt ({e})", _rebuild_fix()
            ) from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise UserError(js, f"not a recllm SID quantizer (format {FORMAT!r})", _rebuild_fix())
        try:
            q = cls(
                SIDConfig(**doc["sid_config"]),
                list(doc["text_fields"]),
                doc["featurizer"],
                arrays,
                doc["sid_map_content_hash"],
                tuple(int(k) for k in doc["codebook_sizes"]),
                doc.get("vae", {}),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(js, f"not a valid SID quantizer ({e!r})", _rebuild_fix()) from None
        if q.content_hash != doc.get("content_hash"):
            raise UserError(
                p,
                "content hash mismatch (the quantizer files were changed after saving)",
                _rebuild_fix(),
            )
        return q

    # ---------------------------------------------------------------- encoding
    def texts_of(self, catalog: Catalog) -> list[str]:
        """One text per item of ``catalog``, built from the build's text fields."""
        from recllm.sid.embed import item_texts

        return item_texts(catalog, self.text_fields)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Text embeddings ``(N, d)`` with the frozen featurizer.

        Raises:
            UserError: The featurizer came from an ``--embeddings`` file, or the lm/st model's
                files changed since the build.
        """
        kind = self.featurizer["kind"]
        cfg = self.config
        if kind == "tfidf":
            from recllm.sid.embed import tfidf_transform

            state = {
                "vocabulary": self.featurizer["vocabulary"],
                "idf": self.arrays["tfidf.idf"],
                "components": self.arrays["tfidf.components"],
            }
            return tfidf_transform(texts, state)
        if kind in ("lm", "st"):
            from recllm.sid.embed import _model_fingerprint, lm_embeddings, st_embeddings

            model = self.featurizer["model"]
            if _model_fingerprint(model) != self.featurizer["fingerprint"]:
                raise UserError(
                    f"text model {model}",
                    "its files changed since the SID build, so new items would be embedded "
                    "differently from the catalog's",
                    "restore the model the SIDs were built with, or rebuild the SIDs (and the "
                    "model trained on them) with `recllm sid build`",
                )
            fn = lm_embeddings if kind == "lm" else st_embeddings
            return fn(texts, model, batch_size=cfg.embed_batch_size, max_length=cfg.text_max_length)
        raise UserError(
            "SID quantizer",
            "the SIDs were built from an --embeddings file, so item texts cannot be encoded",
            "rebuild the SIDs from text (leave out --embeddings), or encode your own vectors "
            "with SIDQuantizer.encode_vectors",
        )

    def fuse(self, text: np.ndarray, collab: np.ndarray | None = None) -> np.ndarray:
        """The build's fused vector; ``collab=None`` gives new items a zero collaborative block."""
        w = self.config.collab_weight
        if w <= 0:
            return text
        from recllm.sid.embed import fuse

        if collab is None:
            dim = self._collab_dim()
            collab = np.zeros((len(text), dim), dtype=np.float32)
        return fuse(text, collab, w)

    def _collab_dim(self) -> int:
        if "vae.mean" in self.arrays:
            in_dim = int(self.vae["in_dim"])
        else:
            in_dim = int(self.arrays["codebook.0"].shape[1])
        return in_dim - self._text_dim()

    def _text_dim(self) -> int:
        if self.featurizer["kind"] == "tfidf":
            return int(self.arrays["tfidf.components"].shape[0])
        return int(self.featurizer["text_dim"])

    def encode_vectors(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw codes ``(N, L)`` int64 and last-level inputs of fused vectors ``x``."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if "vae.mean" in self.arrays:
            return self._encode_vae(x)
        residual = x.copy()
        codes = np.empty((len(x), self.levels), dtype=np.int64)
        last = residual
        for level in range(self.levels):
            last = residual.copy()
            if level == 0 and "first_text.0" in self.arrays:
                code = self._first_by_collab(residual)
            else:
                code = nearest(residual, self.arrays[f"assign.{level}"])
            codes[:, level] = code
            residual = residual - self.arrays[f"codebook.{level}"][code]
        return codes, last

    def _first_by_collab(self, x: np.ndarray) -> np.ndarray:
        """First codes of a collaborative first level (``first_level: collab``): by the
        collaborative block where an item has one, by text where it is zero (new items), as
        :func:`recllm.sid.quantize.first_level_by_collab` placed the build's items."""
        start = self._text_dim()
        block = np.ascontiguousarray(x[:, start:])
        warm = np.einsum("ij,ij->i", block, block) > 0
        code = np.empty(len(x), dtype=np.int64)
        if warm.any():
            books = np.ascontiguousarray(self.arrays["assign.0"][:, start:])
            code[warm] = nearest(np.ascontiguousarray(block[warm]), books)
        if (~warm).any():
            text = np.ascontiguousarray(x[~warm, :start])
            code[~warm] = nearest(text, self.arrays["first_text.0"])
        return code

    def _encode_vae(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        from recllm.sid.rq_vae import _RQVAE, RQVAEConfig, _encode_all, _nearest

        cfg = RQVAEConfig(**self.vae["config"])
        model = _RQVAE(int(self.vae["in_dim"]), self.levels, self.codebook_sizes[0], cfg)
        prefix = "vae.encoder."
        model.encoder.load_state_dict(
            {
                k[len(prefix) :]: torch.from_numpy(v)
                for k, v in self.arrays.items()
                if k.startswith(prefix)
            }
        )
        model.eval()
        xt = torch.from_numpy((x - self.arrays["vae.mean"]) / np.float32(self.vae["scale"]))
        with torch.no_grad():
            residual = _encode_all(model, xt)
            cols, last = [], residual
            for level in range(self.levels):
                book = torch.from_numpy(self.arrays[f"codebook.{level}"])
                last = residual
                code = _nearest(residual, book)
                cols.append(code)
                residual = residual - book[code]
        return torch.stack(cols, 1).numpy().astype(np.int64), last.numpy().astype(np.float32)

    def encode_texts(self, texts: list[str], collab: np.ndarray | None = None) -> np.ndarray:
        """Raw codes ``(N, L)`` int64 of item texts (before collision handling).

        Args:
            texts: One text per item, as :meth:`texts_of` builds them.
            collab: The items' collaborative rows (training items); None = new items (zero).
        """
        return self.encode_vectors(self.fuse(l2_normalize(self.embed_texts(texts)), collab))[0]


# -------------------------------------------------------------------- assigning new items
@dataclass
class SIDAssignment:
    """What :func:`assign_items` made.

    Attributes:
        sid_map: The old items first with byte-identical codes, then the new items.
        new_items: The added item ids, in file order.
        report: Counts (``new_items``, ``collisions_with_existing``, ``collisions_among_new``,
            ``moved``, ``grown_levels``, ``codebook_sizes_before``/``after``).
        grown_levels: Level -> new codebook size, when an extra-level map needed more codes
            (the model then needs new token rows).
    """

    sid_map: SIDMap
    new_items: list[str]
    report: dict[str, Any]
    grown_levels: dict[int, int] = field(default_factory=dict)


def _root_hash(sid_map: SIDMap) -> str:
    adds = sid_map.meta.get("additions") or []
    return adds[0]["parent_content_hash"] if adds else sid_map.content_hash


def assign_items(
    quantizer: SIDQuantizer, sid_map: SIDMap, new_catalog: Catalog, *, source: str = "new items"
) -> SIDAssignment:
    """Give every item of ``new_catalog`` a unique code; existing items keep theirs.

    Codes come from the frozen quantizer (collaborative block zero, see the module docstring).
    A new item whose code is taken (by an existing item, or by a new item earlier in the file)
    is resolved without moving anyone already placed: ``reassign`` maps take the nearest free
    code, deepest level first (:func:`recllm.sid.collisions._place`); ``extra-level`` maps take
    the next free index of the extra level under the item's code, growing that level's size
    when all are taken.

    Raises:
        UserError: The quantizer belongs to another SID map, an id is already in the map, or no
            free code is left.
    """
    from recllm.data.new_items import check_new_ids

    if _root_hash(sid_map) != quantizer.sid_map_hash:
        raise UserError(
            "SID quantizer",
            f"built with SID map {quantizer.sid_map_hash[:12]}, not with this map "
            f"({sid_map.content_hash[:12]})",
            "use the quantizer/ saved in the same SID artifact as the sid_map.json",
        )
    check_new_ids(new_catalog, sid_map.item_ids, source)
    empty = [i for i in new_catalog.ids if not new_catalog.text(i, quantizer.text_fields)]
    if empty:
        raise UserError(
            f"{source} [key {empty[0]!r}]",
            f"{len(empty)} new item(s) have no text in the fields the SIDs were built from "
            f"({quantizer.text_fields}; the file has {list(new_catalog.text_fields)})",
            f"name the text columns {quantizer.text_fields} (text is a new item's only signal)",
        )
    new_ids = new_catalog.ids
    raw, last = quantizer.encode_vectors(
        quantizer.fuse(l2_normalize(quantizer.embed_texts(quantizer.texts_of(new_catalog))))
    )
    L = quantizer.levels
    extra = sid_map.levels == L + 1
    if sid_map.levels not in (L, L + 1):
        raise UserError(
            "SID map", f"{sid_map.levels} levels but the quantizer has {L}", _rebuild_fix()
        )
    sizes = list(sid_map.codebook_sizes)
    owner: dict[tuple[int, ...], bool] = {tuple(c): True for c in sid_map.codes.tolist()}
    with_existing = among_new = moved = 0
    new_codes = np.empty((len(new_ids), sid_map.levels), dtype=np.int64)
    if extra:
        used: dict[tuple[int, ...], set[int]] = {}
        for c in sid_map.codes.tolist():
            used.setdefault(tuple(c[:-1]), set()).add(c[-1])
        for k, code in enumerate(raw.tolist()):
            key = tuple(code)
            taken = used.setdefault(key, set())
            if taken:
                if any(owner.get((*key, e)) for e in taken):
                    with_existing += 1
                else:
                    among_new += 1
                moved += 1
            idx = next(e for e in range(len(taken) + 1) if e not in taken)
            taken.add(idx)
            sizes[-1] = max(sizes[-1], idx + 1)
            new_codes[k] = (*key, idx)
    else:
        total = int(np.prod(np.asarray(sizes, dtype=np.float64)))
        if len(sid_map) + len(new_ids) > total:
            raise UserError(
                source,
                f"{len(sid_map) + len(new_ids)} items cannot get unique codes from {tuple(sizes)}",
                "rebuild the SIDs with a larger --codebook-size or more --levels (or "
                "--collisions extra-level) and retrain",
            )
        used_under: dict[tuple[int, ...], set[int]] = {}
        for c in sid_map.codes.tolist():
            used_under.setdefault(tuple(c[:-1]), set()).add(c[-1])
        books = [quantizer.arrays[f"codebook.{lv}"] for lv in range(L)]
        probe = QuantizeResult(raw, tuple(sizes), books, last, [])
        from recllm.sid.quantize import sq_distances

        dist = sq_distances(last, books[-1])
        new_owner: set[tuple[int, ...]] = set()
        for k, code in enumerate(raw.tolist()):
            key = tuple(code)
            if key in owner or key in new_owner:
                if key in owner:
                    with_existing += 1
                else:
                    among_new += 1
                placed = _place(key[:-1], dist[k], used_under, probe)  # type: ignore[arg-type]
                if placed is None:
                    raise UserError(
                        source, f"no free code left for new item {new_ids[k]!r}", _rebuild_fix()
                    )
                key = tuple(int(c) for c in placed)
                moved += 1
            used_under.setdefault(key[:-1], set()).add(key[-1])
            new_owner.add(key)
            new_codes[k] = key
    grown = {
        lv: s
        for lv, (s, old) in enumerate(zip(sizes, sid_map.codebook_sizes, strict=True))
        if s != old
    }
    meta = dict(sid_map.meta)
    meta["additions"] = [
        *(sid_map.meta.get("additions") or []),
        {"parent_content_hash": sid_map.content_hash, "added_items": len(new_ids)},
    ]
    new_map = SIDMap(
        [*sid_map.item_ids, *new_ids],
        np.concatenate([sid_map.codes, new_codes]),
        tuple(sizes),
        meta,
    )
    report = {
        "new_items": len(new_ids),
        "existing_items": len(sid_map),
        "collisions_with_existing": with_existing,
        "collisions_among_new": among_new,
        "moved": moved,
        "strategy": "extra-level" if extra else "reassign",
        "grown_levels": {str(k): v for k, v in grown.items()},
        "codebook_sizes_before": list(sid_map.codebook_sizes),
        "codebook_sizes_after": sizes,
        "parent_content_hash": sid_map.content_hash,
        "content_hash": new_map.content_hash,
        "quantizer_content_hash": quantizer.content_hash,
    }
    logger.info(
        "assigned %d new items: %d collided with existing items, %d among new items; grown %s",
        len(new_ids),
        with_existing,
        among_new,
        grown,
    )
    return SIDAssignment(new_map, list(new_ids), report, grown)
