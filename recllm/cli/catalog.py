"""``recllm catalog add``: give a trained model new items without retraining (issue 31);
``recllm catalog text-head``: fit a text head on it (:mod:`recllm.decode.text_head`).

recllm catalog add --model DIR --items NEW_ITEMS_FILE --out DIR2 [--sids SID_DIR]
recllm catalog text-head --model DIR [--windows-per-user N]

The new items get codes from the SID quantizer the model was built with (the model's
``sid_quantizer/``, or ``--sids DIR`` for a model saved before recllm kept it); existing items
keep their codes and the weights are copied byte for byte (:mod:`recllm.vocab.catalog_add`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["add_parsers", "cmd_catalog_add", "cmd_catalog_text_head"]


def cmd_catalog_add(args: argparse.Namespace) -> int:
    from recllm.data.new_items import read_new_items
    from recllm.io import check_out_dir
    from recllm.sid.quantizer import SIDQuantizer, assign_items
    from recllm.sid.sidmap import SIDMap
    from recllm.vocab.catalog_add import add_items_to_model, model_quantizer_dir
    from recllm.vocab.checkpoint import check_model_dir

    check_out_dir(args.out, args.overwrite)
    if args.new_item_text_alpha is not None and not args.new_item_text_alpha > 0:
        from recllm.errors import UserError

        raise UserError(
            "--new-item-text-alpha",
            f"must be a positive number, got {args.new_item_text_alpha}",
            "pass the alpha scripts/cold_start.py chose on validation users (e.g. 3)",
        )
    text_options = (
        args.new_item_text_norm_top,
        args.new_item_text_guide,
        args.new_item_text_max_new,
    )
    if args.new_item_text_alpha is None and any(v is not None for v in text_options):
        from recllm.errors import UserError

        raise UserError(
            "--new-item-text-norm-top / --new-item-text-guide / --new-item-text-max-new",
            "shape the hybrid, and there is no hybrid without --new-item-text-alpha",
            "add --new-item-text-alpha (scripts/cold_start.py chooses them all)",
        )
    from recllm.decode.fresh import check_text_shape

    check_text_shape(
        args.new_item_text_norm_top, args.new_item_text_guide, max_new=args.new_item_text_max_new
    )
    model = Path(args.model)
    check_model_dir(model, weights=True)
    qdir = model_quantizer_dir(model, args.sids)
    quantizer = SIDQuantizer.load(qdir)
    new = read_new_items(args.items)
    sid_map = SIDMap.load(model / "sid_map.json")
    assignment = assign_items(quantizer, sid_map, new, source=str(args.items))
    warmup = None
    if args.warmup_steps:
        from functools import partial

        from recllm.train.catalog_warmup import warm_up_added_items

        warmup = partial(
            warm_up_added_items,
            new_items=assignment.new_items,
            new_catalog=new,
            steps=args.warmup_steps,
            learning_rate=args.warmup_lr,
        )
    add_items_to_model(
        model,
        assignment,
        new,
        args.out,
        warmup_steps=args.warmup_steps,
        warmup=warmup,
        new_item_bonus=args.new_item_bonus,
        new_item_text_alpha=args.new_item_text_alpha,
        new_item_text_norm_top=args.new_item_text_norm_top,
        new_item_text_guide=args.new_item_text_guide,
        new_item_text_max_new=args.new_item_text_max_new,
        quantizer_dir=qdir,
        overwrite=args.overwrite,
    )
    r = assignment.report
    print(
        f"wrote {args.out}: {len(assignment.new_items)} new items added to {len(sid_map)} "
        f"({r.get('collisions_with_existing', 0)} collided with existing items, "
        f"{r.get('collisions_among_new', 0)} among new items); "
        + (f"{args.warmup_steps} warm-up steps" if args.warmup_steps else "weights unchanged")
        + (
            f"; {len(assignment.grown_levels)} grown level(s): new code-token rows added"
            if assignment.grown_levels
            else ""
        )
    )
    return 0


def cmd_catalog_text_head(args: argparse.Namespace) -> int:
    from recllm.decode.text_head_fit import TextHeadConfig, fit_model_text_head
    from recllm.vocab.checkpoint import check_model_dir

    check_model_dir(Path(args.model), weights=True)
    config = TextHeadConfig(
        windows_per_user=args.windows_per_user,
        epochs=args.epochs,
        pseudo_new=args.pseudo_new,
        history_mean=not args.no_history_mean,
        seed=args.seed,
    )
    _, report = fit_model_text_head(args.model, config, data=args.data)
    print(
        f"wrote {Path(args.model) / 'text_head'}: {report['train_windows']} training windows, "
        f"valid loss {report['valid_loss']} (uniform {report['uniform_loss']}) at epoch "
        f"{report['best_epoch']}, new-item bias {report['new_bias']}"
    )
    return 0


def add_parsers(sub: Any) -> None:
    """``recllm catalog add``."""
    cat = sub.add_parser("catalog", help="change a trained model's catalog")
    csub = cat.add_subparsers(dest="catalog_command", required=True)
    a = csub.add_parser("add", help="add new items to a trained model (no retraining)")
    a.add_argument("--model", required=True, help="model directory saved by recllm")
    a.add_argument(
        "--items", required=True, help="new items: .jsonl/.csv/.tsv/.parquet, item_id + text"
    )
    a.add_argument("--out", required=True, help="new model directory (written atomically)")
    a.add_argument(
        "--sids",
        default=None,
        help="SID artifact with quantizer/ whose sid_map hash equals the model's (for models "
        "saved without sid_quantizer/)",
    )
    a.add_argument(
        "--warmup-steps",
        type=int,
        default=0,
        help="train only the code-token rows the new items use, N steps on their catalog "
        "texts (chat models; default 0: weights unchanged)",
    )
    a.add_argument("--warmup-lr", type=float, default=1e-2, help="warm-up SGD step size")
    a.add_argument(
        "--new-item-bonus",
        type=float,
        default=None,
        help="record a score bonus for the added items: decoders then search them in a beam "
        "group of their own and add it to their log-probs (choose it on validation users, "
        "e.g. with scripts/cold_start.py; docs/catalog.md)",
    )
    a.add_argument(
        "--new-item-text-alpha",
        type=float,
        default=None,
        help="score the added items by ALPHA x their text cosine to the history's recent items "
        "+ --new-item-bonus, beside a search of the trained items alone (the hybrid; both "
        "chosen on validation users by scripts/cold_start.py; docs/cold_start.md)",
    )
    a.add_argument(
        "--new-item-text-norm-top",
        type=int,
        default=None,
        metavar="M",
        help="the hybrid's text score: cosine minus the mean cosine of the user's M nearest "
        "catalog items (default: none)",
    )
    a.add_argument(
        "--new-item-text-guide",
        type=float,
        default=None,
        metavar="G",
        help="the hybrid's user vector: (1 - G) x the history's + G x the search's best trained "
        "items' (default 0: the history only)",
    )
    a.add_argument(
        "--new-item-text-max-new",
        type=int,
        default=None,
        metavar="S",
        help="the hybrid's freshness quota: at most S new items in one list, the user's best "
        "(default 0: no cap)",
    )
    a.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    a.set_defaults(func=cmd_catalog_add)
    h = csub.add_parser(
        "text-head",
        help="fit a text head on a trained model (frozen): every item, new ones included, "
        "ranked by its text from the model's state (writes DIR/text_head/)",
    )
    h.add_argument("--model", required=True, help="model directory saved by recllm")
    h.add_argument("--data", default=None, help="data set (default: the one the model records)")
    h.add_argument(
        "--windows-per-user", type=int, default=3, help="training windows per user (last N steps)"
    )
    h.add_argument("--epochs", type=int, default=40, help="most epochs (early stopping on valid)")
    h.add_argument(
        "--pseudo-new",
        type=float,
        default=0.1,
        help="share of items per batch scored with the shared new-item bias",
    )
    h.add_argument(
        "--no-history-mean",
        action="store_true",
        help="query from the model state alone (no recent-items text mean)",
    )
    h.add_argument("--seed", type=int, default=0)
    h.set_defaults(func=cmd_catalog_text_head)
