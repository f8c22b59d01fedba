"""From a dataset to a SID map artifact: embeddings -> quantizer -> collisions -> metrics.

Artifact directory (written atomically as a whole)::

    sid_map.json     item id <-> codes, config, embedding source, versions, content hash
    metrics.json     utilization, entropy, collisions before/after, items per prefix, error, time
    code_usage.png   items per code at every level
    quantizer/       the frozen featurizer + quantizer that encodes new items
                     (:mod:`recllm.sid.quantizer`)
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from recllm.data.config import DataConfig
from recllm.data.splits import Split, split_dataset
from recllm.data.types import RecDataset
from recllm.errors import UserError
from recllm.io import atomic_dir, check_out_dir, write_json_atomic
from recllm.provenance import library_versions
from recllm.sid.collab import cooccurrence_pairs
from recllm.sid.collisions import resolve_collisions
from recllm.sid.config import SIDConfig
from recllm.sid.embed import (
    _model_fingerprint,
    fit_tfidf,
    item_embeddings,
    item_texts,
    load_embeddings,
)
from recllm.sid.metrics import code_metrics, plot_code_usage
from recllm.sid.quantize import QuantizeResult, balanced_rq_kmeans, rq_kmeans
from recllm.sid.quantizer import SIDQuantizer
from recllm.sid.sidmap import SIDMap

logger = logging.getLogger(__name__)


@dataclass
class SIDBuild:
    """What :func:`build_sid_map` made."""

    sid_map: SIDMap
    metrics: dict[str, object]
    result: QuantizeResult
    quantizer: SIDQuantizer | None = None


def collab_columns(num_items: int, cfg: SIDConfig) -> int:
    """How many trailing columns of the fused vectors are the collaborative block."""
    return min(cfg.collab_dim, num_items - 1) if cfg.collab_weight > 0 else 0


def quantize(x: np.ndarray, cfg: SIDConfig, pairs: np.ndarray | None = None) -> QuantizeResult:
    """Run the configured quantizer on ``(N, d)`` embeddings (text columns, then collaborative
    columns when ``cfg.collab_weight > 0``)."""
    start = x.shape[1] - collab_columns(len(x), cfg) if cfg.first_level == "collab" else None
    kmeans_methods = {"rq-kmeans": rq_kmeans, "balanced": balanced_rq_kmeans}
    if cfg.method in kmeans_methods:
        fit = kmeans_methods[cfg.method]
        return fit(
            x, cfg.levels, cfg.codebook_size, seed=cfg.sid_seed, niter=cfg.niter, collab_start=start
        )
    from recllm.sid.rq_vae import RQVAEConfig, rq_vae

    vae_cfg = RQVAEConfig(contrastive_weight=cfg.contrastive_weight)
    return rq_vae(x, cfg.levels, cfg.codebook_size, seed=cfg.sid_seed, config=vae_cfg, pairs=pairs)


def build_sid_map(
    dataset: RecDataset,
    cfg: SIDConfig,
    data_cfg: DataConfig | None = None,
    *,
    split: Split | None = None,
    cache: bool = True,
    embeddings: str | Path | None = None,
) -> SIDBuild:
    """Build unique semantic IDs for every catalog item.

    Collaborative signal (fusion or contrastive pairs) comes from the training part of the split
    only, so evaluation targets never shape the codes.

    Args:
        dataset: The dataset whose catalog gets codes.
        cfg: Embedding, quantizer and collision options.
        data_cfg: How the dataset is split (the training part feeds collaborative signal).
        split: A split made already (default: made from ``data_cfg``).
        cache: Reuse embeddings cached under their content hash.
        embeddings: An ``.npz`` of precomputed embeddings (``recllm sid embed``) to use instead
            of computing them; its item ids must match the catalog's.

    Raises:
        UserError: ``embeddings`` is not an existing file.
    """
    if embeddings is not None:
        check_embeddings_file(embeddings)
        if cfg.first_level == "collab":
            raise UserError(
                f"--embeddings {embeddings}",
                "--first-level collab needs to know which columns are collaborative, and a "
                "precomputed-embeddings file does not say",
                "leave out --embeddings (recllm fuses text and co-occurrence itself), or pass "
                "--first-level fused",
            )
    data_cfg = data_cfg or DataConfig()
    split = split or split_dataset(dataset, data_cfg)
    start = time.perf_counter()
    if embeddings is not None:
        x = load_embeddings(embeddings, dataset.catalog.ids)
        emb_desc: dict[str, object] = {"file": str(embeddings), "dim": int(x.shape[1])}
    else:
        x, emb_desc = item_embeddings(
            dataset.catalog, split, cfg, cache=cache, source=dataset.source
        )
    t_embed = time.perf_counter() - start
    pairs = None
    if cfg.method == "rq-vae" and cfg.contrastive_weight > 0:
        index = {item: k for k, item in enumerate(dataset.catalog.ids)}
        pairs = cooccurrence_pairs(split.train, index, cfg.collab_window)
    logger.info("quantizing %d x %d embeddings with %s", *x.shape, cfg.method)
    start = time.perf_counter()
    result = quantize(x, cfg, pairs)
    t_quant = time.perf_counter() - start
    codes, sizes, moved = resolve_collisions(result, cfg.collisions)
    metrics = code_metrics(codes, sizes, codes_before=result.codes, recon_error=result.recon_error)
    metrics.update(
        {
            "method": cfg.method,
            "collision_strategy": cfg.collisions,
            "items_moved": moved,
            "embedding": emb_desc,
            "seconds": {"embed": round(t_embed, 2), "quantize": round(t_quant, 2)},
            "quantizer": result.extras,
        }
    )
    meta = {
        "dataset": {"name": dataset.name, "source": dataset.source, "format": dataset.format},
        "split": {"kind": split.kind, "train_interactions": split.train.num_interactions},
        "sid_config": asdict(cfg),
        "data_config": asdict(data_cfg),
        "embedding": emb_desc,
        "versions": library_versions(),
    }
    sid_map = SIDMap(dataset.catalog.ids, codes, sizes, meta)
    logger.info(
        "SIDs: %d items, %d unique codes before collision handling, %d moved (%s)",
        len(codes),
        metrics["unique_codes_before"],
        moved,
        cfg.collisions,
    )
    quantizer = _fitted_quantizer(dataset, cfg, result, x, emb_desc, sid_map, embeddings)
    return SIDBuild(sid_map, metrics, result, quantizer)


def _fitted_quantizer(dataset, cfg, result, x, emb_desc, sid_map, embeddings) -> SIDQuantizer:
    """The frozen featurizer and quantizer of this build (see :mod:`recllm.sid.quantizer`).

    TF-IDF is refitted on the same texts with the same seed (the embeddings may have come from
    the cache, which keeps only the vectors); the fit is deterministic, so the state is the one
    that made ``x``.
    """
    fields = list(cfg.sid_text_fields or dataset.catalog.text_fields)
    arrays: dict[str, np.ndarray] = {}
    collab_dim = collab_columns(len(x), cfg)
    if embeddings is not None:
        featurizer: dict[str, object] = {"kind": "external", "text_dim": int(x.shape[1])}
    elif cfg.embedding == "tfidf":
        _, state = fit_tfidf(
            item_texts(dataset.catalog, cfg.sid_text_fields), cfg.text_dim, cfg.sid_seed
        )
        featurizer = {
            "kind": "tfidf",
            "vocabulary": state["vocabulary"],
            "settings": state["settings"],
        }
        arrays = {"tfidf.idf": state["idf"], "tfidf.components": state["components"]}
    else:
        assert cfg.text_model is not None
        featurizer = {
            "kind": cfg.embedding,
            "model": cfg.text_model,
            "fingerprint": _model_fingerprint(cfg.text_model),
            "text_dim": int(x.shape[1]) - collab_dim,
        }
    return SIDQuantizer.from_build(cfg, result, fields, featurizer, arrays, sid_map.content_hash)


def check_embeddings_file(path: str | Path, flag: str = "--embeddings") -> None:
    """Fail before any work when a precomputed-embeddings file is not there.

    Raises:
        UserError: ``path`` does not exist or is not a file.
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(
            f"{flag} {p}",
            "no such file" if not p.exists() else "a directory, not an .npz file",
            "write the embeddings with `recllm sid embed --out FILE.npz` and pass that file, "
            "or leave out --embeddings to compute them",
        )


def write_sid_artifact(build: SIDBuild, out_dir: str | Path, overwrite: bool = False) -> Path:
    """Write ``sid_map.json``, ``metrics.json`` and ``code_usage.png`` into ``out_dir``.

    Raises:
        UserError: ``out_dir`` is a file, or a non-empty directory and ``overwrite`` is False.
    """
    check_out_dir(out_dir, overwrite)
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        build.sid_map.save(tmp)
        if build.quantizer is not None:
            build.quantizer.save(tmp / "quantizer")
        write_json_atomic(tmp / "metrics.json", build.metrics)
        title = f"{build.sid_map.meta['dataset']['name']}: {build.metrics['method']}"
        plot_code_usage(
            build.sid_map.codes, build.sid_map.codebook_sizes, tmp / "code_usage.png", title
        )
    return Path(out_dir)
