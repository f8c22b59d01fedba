"""``recllm sid embed | build | stats | assign``: item embeddings, SID map artifacts, their
figures, and codes for new items from a build's frozen quantizer."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from recllm.cli.args import (
    _add_data_args,
    _check_out_file,
    _data_config,
    _flag,
    _fraction,
    _int_at_least,
    _positive,
)
from recllm.errors import UserError


def _sid_config(args: argparse.Namespace):
    from recllm.sid.config import SIDConfig

    return SIDConfig(
        method=args.method,
        levels=args.levels,
        codebook_size=args.codebook_size,
        sid_seed=args.seed,
        niter=args.niter,
        collisions=args.collisions,
        embedding=args.embedding,
        text_model=args.text_model,
        text_dim=args.text_dim,
        collab_weight=args.collab_weight,
        collab_dim=args.collab_dim,
        first_level=args.first_level,
        contrastive_weight=args.contrastive_weight,
    )


def _add_sid_args(p: argparse.ArgumentParser) -> None:
    from recllm.sid.config import COLLISIONS, EMBEDDINGS, FIRST_LEVELS, METHODS, SIDConfig

    d = SIDConfig()
    _flag(p, "method", choices=METHODS, default=d.method, help="quantizer")
    _flag(p, "levels", type=_positive, default=d.levels, help="code levels (tokens per SID)")
    _flag(
        p, "codebook_size", type=_int_at_least(2), default=d.codebook_size, help="codes per level"
    )
    _flag(p, "seed", type=int, default=d.sid_seed, help="random seed")
    _flag(p, "niter", type=_positive, default=d.niter, help="k-means iterations per level")
    _flag(p, "collisions", choices=COLLISIONS, default=d.collisions, help="collision handling")
    _flag(p, "embedding", choices=EMBEDDINGS, default=d.embedding, help="text embedding source")
    _flag(p, "text_model", default=None, help="model dir (lm) or sentence-transformers model (st)")
    _flag(p, "text_dim", type=_positive, default=d.text_dim, help="TF-IDF SVD dimension")
    _flag(
        p,
        "collab_weight",
        type=_fraction(0.0, 1.0),
        default=d.collab_weight,
        help="collaborative share in [0,1)",
    )
    _flag(p, "collab_dim", type=_positive, default=d.collab_dim, help="collaborative dimension")
    _flag(
        p,
        "first_level",
        choices=FIRST_LEVELS,
        default=d.first_level,
        help="what the first level clusters: the fused vector, or the collaborative block only",
    )
    _flag(
        p,
        "contrastive_weight",
        type=_fraction(0.0, float("inf")),
        default=0.0,
        help="rq-vae: PLUM contrastive loss weight",
    )
    p.add_argument("--no-cache", action="store_true", help="recompute embeddings")


def _check_text_model(args: argparse.Namespace) -> None:
    """``--embedding lm`` reads a model directory, a known name or a hub id (``org/name``); a
    typo'd directory would otherwise be tried on the Hub, after a long network timeout."""
    from recllm.data.fetch import KNOWN_MODELS

    name = args.text_model
    if args.embedding != "lm" or name is None or name in KNOWN_MODELS or Path(name).exists():
        return
    if "/" in name and not name.startswith((".", "/", "~")) and name.count("/") == 1:
        return  # a hub id: transformers resolves it (cached or downloaded)
    raise UserError(
        f"--text-model {name}",
        "no such directory, known model name or hub id (org/name)",
        f"pass a model directory, a hub id, or a known name ({', '.join(KNOWN_MODELS)})",
    )


def cmd_sid_embed(args: argparse.Namespace) -> int:
    from recllm.data import load_rec_dataset, split_dataset
    from recllm.sid.embed import item_embeddings, save_embeddings

    _check_out_file(args.out)
    _check_text_model(args)
    data_cfg = _data_config(args)
    dataset = load_rec_dataset(config=data_cfg)
    x, desc = item_embeddings(
        dataset.catalog,
        split_dataset(dataset, data_cfg),
        _sid_config(args),
        cache=not args.no_cache,
    )
    save_embeddings(args.out, dataset.catalog.ids, x)
    print(json.dumps({"out": args.out, "items": int(x.shape[0]), **desc}))
    return 0


def cmd_sid_build(args: argparse.Namespace) -> int:
    from recllm.data import load_rec_dataset
    from recllm.io import check_out_dir
    from recllm.sid.build import build_sid_map, check_embeddings_file, write_sid_artifact

    # cheap checks first: a typo'd path fails before the embedding and the quantizer run
    check_out_dir(args.out, args.overwrite)
    if args.embeddings is not None:
        check_embeddings_file(args.embeddings)
    else:
        _check_text_model(args)
    data_cfg = _data_config(args)
    build = build_sid_map(
        load_rec_dataset(config=data_cfg),
        _sid_config(args),
        data_cfg,
        cache=not args.no_cache,
        embeddings=args.embeddings,
    )
    write_sid_artifact(build, args.out, overwrite=args.overwrite)
    m = build.metrics
    print(
        f"wrote {args.out}: {m['items']} items, {m['unique_codes_before']} unique codes before "
        f"collision handling ({m['collisions_before']} collisions, {m['items_moved']} moved by "
        f"{m['collision_strategy']}), utilization {m['utilization']}"
    )
    return 0


def cmd_sid_stats(args: argparse.Namespace) -> int:
    from recllm.sid.metrics import code_metrics
    from recllm.sid.sidmap import FILENAME, SIDMap, read_index_json

    path = Path(args.path)
    if path.name.endswith(".index.json"):
        _, codes = read_index_json(path)
        sizes = tuple(int(c) + 1 for c in codes.max(0))
        print(json.dumps({"source": str(path), **code_metrics(codes, sizes)}, indent=2))
        return 0
    # The map itself is loaded (content hash checked) before anything is printed: figures of
    # a corrupt or edited map must not read as an artifact's.
    sid_map = SIDMap.load(path)
    metrics_file = path / "metrics.json"
    if not path.is_dir() or not metrics_file.is_file():
        print(json.dumps(code_metrics(sid_map.codes, sid_map.codebook_sizes), indent=2))
        return 0
    try:
        metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(
            metrics_file,
            f"truncated or corrupt, not valid JSON ({e})",
            "rebuild the artifact with `recllm sid build ... --overwrite`",
        ) from None
    items = metrics.get("items") if isinstance(metrics, dict) else None
    if items != len(sid_map):
        raise UserError(
            metrics_file,
            f"describes {items} items but {FILENAME} beside it holds {len(sid_map)}: the two "
            "files were not written together",
            "rebuild the artifact with `recllm sid build ... --overwrite`",
        )
    print(json.dumps(metrics, indent=2))
    return 0


def _rebuild_command(sid_map) -> str:
    """The ``recllm sid build`` command that remakes ``sid_map`` (from its recorded config)."""
    cfg = sid_map.meta.get("sid_config") or {}
    data_cfg = sid_map.meta.get("data_config") or {}
    name = data_cfg.get("data_path") or (sid_map.meta.get("dataset") or {}).get("name", "DATA")
    flags = {
        "method": cfg.get("method"),
        "levels": cfg.get("levels"),
        "codebook-size": cfg.get("codebook_size"),
        "seed": cfg.get("sid_seed"),
        "niter": cfg.get("niter"),
        "collisions": cfg.get("collisions"),
        "embedding": cfg.get("embedding"),
        "text-model": cfg.get("text_model"),
        "text-dim": cfg.get("text_dim"),
        "collab-weight": cfg.get("collab_weight"),
        "collab-dim": cfg.get("collab_dim"),
        "first-level": cfg.get("first_level"),
        "contrastive-weight": cfg.get("contrastive_weight"),
    }
    parts = [f"--{k} {v}" for k, v in flags.items() if v is not None]
    return f"recllm sid build --data {name} {' '.join(parts)} --out NEW_DIR"


def cmd_sid_assign(args: argparse.Namespace) -> int:
    import shutil

    from recllm.data.new_items import read_new_items
    from recllm.io import atomic_dir, check_out_dir, write_json_atomic
    from recllm.sid.metrics import code_metrics
    from recllm.sid.quantizer import DIRNAME, SIDQuantizer, assign_items
    from recllm.sid.sidmap import SIDMap

    check_out_dir(args.out, args.overwrite)
    sids = Path(args.sids)
    sid_map = SIDMap.load(sids)
    if not sids.is_dir() or not (sids / DIRNAME).is_dir():
        raise UserError(
            f"--sids {sids}",
            "this SID artifact has no quantizer/ (it was built before recllm saved the "
            "quantizer), so new items cannot be encoded",
            f"rebuild it with the same settings (and the same data options, e.g. --split): "
            f"`{_rebuild_command(sid_map)}` (the codes are "
            f"reproducible: check that the new sid_map.json's content_hash equals "
            f"{sid_map.content_hash}), then pass --sids NEW_DIR",
        )
    quantizer = SIDQuantizer.load(sids / DIRNAME)
    new = read_new_items(args.items)
    assignment = assign_items(quantizer, sid_map, new, source=str(args.items))
    m = assignment.sid_map
    metrics = code_metrics(m.codes, m.codebook_sizes)
    with atomic_dir(args.out, overwrite=args.overwrite) as tmp:
        m.save(tmp)
        shutil.copytree(sids / DIRNAME, tmp / DIRNAME)
        write_json_atomic(tmp / "assign_report.json", assignment.report)
        write_json_atomic(tmp / "metrics.json", metrics)
    r = assignment.report
    print(
        f"wrote {args.out}: {r['new_items']} new items added to {r['existing_items']} "
        f"({r['collisions_with_existing']} collided with existing items, "
        f"{r['collisions_among_new']} among new items, resolved by {r['strategy']}; "
        f"codebook sizes {r['codebook_sizes_before']} -> {r['codebook_sizes_after']})"
    )
    return 0


def add_parsers(sub: Any) -> None:
    """``recllm sid embed | build | stats | assign``."""
    sid = sub.add_parser("sid", help="semantic IDs: embed items, build and inspect SID maps")
    ssub = sid.add_subparsers(dest="sid_command", required=True)
    e = ssub.add_parser("embed", help="write item embeddings with their ids (.npz)")
    _add_data_args(e, positional=False)
    _add_sid_args(e)
    e.add_argument("--out", required=True, help="output .npz file (item_ids, embeddings)")
    e.set_defaults(func=cmd_sid_embed)
    b = ssub.add_parser("build", help="build a SID map artifact directory")
    _add_data_args(b, positional=False)
    _add_sid_args(b)
    b.add_argument("--embeddings", default=None, help="precomputed .npz from `recllm sid embed`")
    b.add_argument("--out", required=True, help="output directory (written atomically)")
    b.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    b.set_defaults(func=cmd_sid_build)
    st = ssub.add_parser("stats", help="print a SID map's metrics as JSON")
    st.add_argument("path", help="artifact directory, sid_map.json, or a published *.index.json")
    st.set_defaults(func=cmd_sid_stats)
    a = ssub.add_parser(
        "assign", help="give new items codes with a SID artifact's frozen quantizer"
    )
    a.add_argument("--sids", required=True, help="SID artifact directory (with quantizer/)")
    a.add_argument(
        "--items", required=True, help="new items: .jsonl/.csv/.tsv/.parquet, item_id + text"
    )
    a.add_argument("--out", required=True, help="new SID artifact directory (written atomically)")
    a.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    a.set_defaults(func=cmd_sid_assign)
