"""``recllm eval``: constrained beam search over held-out users, Recall@K, NDCG@K, invalid rate;
an ensemble of models, unconstrained decoding (the control), thinking models and think-ahead
prefix files. The steps: check the flags -> read the data -> load the decoder -> decode ->
print -> write ``metrics.json``, ``recall.png`` and the optional files."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from recllm.cli.args import _flag, _positive, add_decoding_args
from recllm.errors import UserError


def cmd_eval(args: argparse.Namespace) -> int:
    from recllm.eval.run import PromptSpec, eval_examples, evaluate_recommender
    from recllm.vocab.catalog_add import model_catalog
    from recllm.vocab.checkpoint import check_model_dir

    _check_flags(args)
    # every model directory complete before the data is read (vLLM reads the weights itself)
    for d in args.model:
        check_model_dir(d, weights=args.engine != "vllm")
    _check_think_flags(args)
    model_dir = Path(args.model[0])
    out = _out_dir(args, model_dir)
    spec = PromptSpec.from_model_dir(model_dir)
    data_fields, dataset, examples = eval_examples(
        model_dir,
        args.data,
        args.split,
        args.max_users,
        allow_other_data=args.allow_other_data,
        sample_seed=args.sample_seed,
    )
    catalog = model_catalog(model_dir, dataset.catalog)  # + items added by `recllm catalog add`
    if args.prefixes:  # before the model loads: a file of another split or data costs no wait
        from recllm.eval.run import check_prefix_file

        check_prefix_file(args.prefixes, args.split, data_fields, dataset)
    from recllm.vocab.catalog_add import (
        read_added_items,
        recorded_new_item_bonus,
        recorded_new_item_text_alpha,
    )

    if args.new_item_bonus is None and recorded_new_item_text_alpha(model_dir) is not None:
        # the recorded bonus belongs to the hybrid's text scores, not to beam log-probs
        logging.getLogger(__name__).warning(
            "%s scores its added items by text similarity (catalog add --new-item-text-alpha): "
            "recllm eval searches them by the beam without that bonus; scripts/cold_start.py "
            "measures the hybrid",
            model_dir,
        )
    elif args.new_item_bonus is None:
        args.new_item_bonus = recorded_new_item_bonus(model_dir)
    if args.batch_size is None:
        args.batch_size = 32 if args.engine == "vllm" else 8
    model, tokenizer, sid_map, recommender = _load_decoder(args, model_dir)
    think, prefixes = _think_and_prefixes(args, sid_map)
    _print_plan(args, spec, data_fields, examples, think, prefixes)
    result = evaluate_recommender(
        model,
        tokenizer,
        sid_map,
        examples,
        spec,
        catalog,
        beams=args.beams,
        ks=args.k,
        batch_size=args.batch_size,
        engine=args.engine,
        recommender=recommender,
        constrained=not args.no_constraint,
        think=think,
        prefixes=prefixes,
        exclude_history=args.exclude_history,
        new_items=read_added_items(model_dir).ids,
        new_item_bonus=args.new_item_bonus,
    )
    _print_result(args, result, examples, catalog, think, prefixes)
    _write_outputs(args, out, result, examples, spec, data_fields)
    return 0


def _check_flags(args: argparse.Namespace) -> None:
    """The decoding flags that cannot go together, before anything is read."""
    ks = args.k
    if args.sample_seed is not None and not args.max_users:
        raise UserError(
            f"--sample-seed {args.sample_seed}",
            "draws --max-users users, and --max-users is not given (all users are scored)",
            "add --max-users N, or drop --sample-seed",
        )
    if args.beams < max(ks):
        raise UserError(
            f"--beams {args.beams}",
            f"smaller than the largest K ({max(ks)}): a beam returns at most --beams items",
            f"raise --beams to at least {max(ks)}, or lower --k",
        )
    if len(args.model) > 1 and args.engine != "sid_beam":
        raise UserError(
            f"--engine {args.engine}",
            "an ensemble of --model directories is decoded by the sid_beam engine only",
            "pass --engine sid_beam, or one --model",
        )
    if args.exclude_history and (args.no_constraint or args.think):
        raise UserError(
            "--exclude-history",
            "excludes each user's history inside the SID constraint, which unconstrained and "
            "thinking runs do not use",
            "drop --no-constraint / --think, or --exclude-history",
        )
    if args.no_constraint and (args.engine == "vllm" or len(args.model) > 1):
        raise UserError(
            "--no-constraint",
            "unconstrained evaluation decodes one model with transformers",
            "pass one --model and --engine sid_beam or generate",
        )


def _check_think_flags(args: argparse.Namespace) -> None:
    """``--think`` and ``--prefixes``: constrained, one of them, sampled when several."""
    if (args.think or args.prefixes) and (args.no_constraint or args.engine == "generate"):
        raise UserError(
            "--think/--prefixes",
            "decode constrained, on the sid_beam or vllm engine",
            "drop --no-constraint, and pass --engine sid_beam or vllm",
        )
    if args.think and args.prefixes:
        raise UserError(
            "--think --prefixes",
            "think-ahead prefixes restrict a fast model that does not think",
            "pass one of them",
        )
    if args.think and args.rationales > 1 and args.think_temperature <= 0:
        raise UserError(
            f"--rationales {args.rationales}",
            "greedy thinking (--think-temperature 0) gives one rationale",
            "pass --think-temperature 1.0 to sample several, or --rationales 1",
        )


def _out_dir(args: argparse.Namespace, model_dir: Path) -> Path:
    """``--out``, or MODEL/eval_SPLIT[_unconstrained|_think|_prefixes]: unconstrained figures go
    beside, never over, the constrained ones. Checked, with ``--predictions``, before any work."""
    if args.no_constraint:
        kind = "_unconstrained"
    elif args.think:
        kind = "_think"
    else:
        kind = "_prefixes" if args.prefixes else ""
    if args.exclude_history:
        kind += "_exclude_history"  # another protocol: never over the P5 figures
    out = Path(args.out) if args.out else model_dir / f"eval_{args.split}{kind}"
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}", "an existing file, not a directory", "choose a directory")
    if args.predictions and Path(args.predictions).is_dir():
        raise UserError(
            f"--predictions {args.predictions}", "a directory", "pass a file path (FILE.jsonl)"
        )
    return out


def _load_decoder(args: argparse.Namespace, model_dir: Path) -> tuple[Any, Any, Any, Any]:
    """``(model or models, tokenizer, sid_map, recommender)``: vLLM loads the weights itself (the
    tokenizer and SID map are checked without them); transformers loads every ``--model``."""
    if args.engine == "vllm":
        from recllm.apps.recommender import Recommender

        recommender = Recommender.from_pretrained(
            model_dir,
            engine="vllm",
            data=args.data,
            max_k=args.beams,
            new_item_bonus=args.new_item_bonus,
        )
        return None, recommender.tokenizer, recommender.sid_map, recommender
    from recllm.eval.run import load_ensemble

    models, tokenizer, sid_map, _ = load_ensemble(args.model)
    return (models if len(models) > 1 else models[0]), tokenizer, sid_map, None


def _think_and_prefixes(args: argparse.Namespace, sid_map) -> tuple[Any, Any]:
    """The thinking options of ``--think``, and the prefix sets of ``--prefixes``."""
    think = prefixes = None
    if args.think:
        from recllm.decode.think import ThinkOptions

        think = ThinkOptions(
            rationales=args.rationales,
            max_think_tokens=args.think_tokens,
            temperature=args.think_temperature,
            seed=args.think_seed,
        )
    if args.prefixes:
        from recllm.decode.prefixes import read_prefix_file

        prefixes, _ = read_prefix_file(args.prefixes, sid_map.content_hash)
    return think, prefixes


def _print_plan(args, spec, data_fields, examples, think, prefixes) -> None:
    model_dir = args.model[0]
    what = model_dir if len(args.model) == 1 else f"an ensemble of {', '.join(args.model)}"
    decoding = "UNCONSTRAINED: no SID trie" if args.no_constraint else f"engine {args.engine}"
    if think:
        decoding += (
            f", thinking ({think.rationales} rationale(s), <= {think.max_think_tokens} tokens)"
        )
    if prefixes is not None:
        decoding += f", think-ahead prefixes of {len(prefixes):,} users"
    if args.exclude_history:
        decoding += ", history items excluded (protocol p5_exclude_history)"
    print(
        f"evaluating {what} on {len(examples):,} {args.split} users of {data_fields['data_path']} "
        f"({spec.style} prompts, beam {args.beams}, K {args.k}, {decoding})"
    )


def _print_result(args, result, examples, catalog, think, prefixes) -> None:
    """The figures, then three users: their last items, the target, the top 3."""
    ks, m = args.k, result.metrics
    for k in ks:
        print(f"  Recall@{k} {m[f'recall@{k}']:.4f}   NDCG@{k} {m[f'ndcg@{k}']:.4f}")
    print(
        f"  invalid rate {m['invalid_rate']:.4f}, coverage {m['coverage']:.4f}, "
        f"{m['users']} users in {result.seconds:.1f} s ({m['users_per_second']} users/s)"
    )
    if prefixes is not None:
        print(f"  prefix-set recall {m['prefix_recall']:.4f} (targets inside the user's prefixes)")
    if think:
        print(
            f"  rationales closed within {think.max_think_tokens} tokens: {m['think_closed_rate']}"
        )

    def title(i: str | None) -> str:
        return "(invalid answer)" if i is None else catalog.title(i)

    for n, (ex, ranked) in enumerate(list(zip(examples, result.ranked, strict=True))[:3]):
        print(f"  user {ex.user_id}: ... {'; '.join(title(i) for i in ex.history[-2:])}")
        hit = " (hit)" if ex.target in ranked[: max(ks)] else ""
        print(f"    next: {title(ex.target)}{hit}")
        print(f"    top 3: {'; '.join(title(i) for i in ranked[:3])}")
        if result.rationales:
            print(f"    thought: {result.rationales[n][0][:300]}")


def _write_outputs(args, out: Path, result, examples, spec, data_fields) -> None:
    """metrics.json and recall.png in ``out``; rationales.jsonl; ``--predictions``."""
    from recllm.eval import plot_recall, save_metrics
    from recllm.eval.run import write_predictions

    model_dir = Path(args.model[0])
    save_metrics(
        out / "metrics.json",
        result.metrics,
        config={k: v for k, v in vars(args).items() if not callable(v)},
        model=args.model[0] if len(args.model) == 1 else args.model,
        split=args.split,
        prompt_style=spec.style,
        data=data_fields,
    )
    plot_recall(
        out / "recall.png", result.metrics, args.k, title=f"{model_dir.name} ({args.split})"
    )
    print(f"  metrics.json and recall.png in {out}")
    if result.rationales:
        from recllm.io import write_text_atomic

        lines = [
            json.dumps({"user": ex.user_id, "rationales": r}, ensure_ascii=False)
            for ex, r in zip(examples, result.rationales, strict=True)
        ]
        write_text_atomic(out / "rationales.jsonl", "\n".join(lines) + "\n")
        print(f"  every user's rationales in {out / 'rationales.jsonl'}")
    if args.predictions:
        write_predictions(args.predictions, examples, result.ranked)
        print(f"  ranked items of every user in {args.predictions}")


def add_parsers(sub: Any) -> None:
    """``recllm eval``."""
    ev = sub.add_parser(
        "eval", help="constrained beam search over held-out users: Recall@K, NDCG@K, invalid rate"
    )
    ev.add_argument(
        "--model",
        required=True,
        nargs="+",
        help="model directory written by recllm; several (same SID map and prompts) are "
        "decoded as an ensemble that averages their log-probs (sid_beam engine)",
    )
    ev.add_argument(
        "--data",
        default=None,
        help="dataset path or name (default: the data the model was trained on, as recorded)",
    )
    ev.add_argument("--split", choices=("test", "valid"), default="test")
    _flag(
        ev,
        "max_users",
        type=_positive,
        default=None,
        help="evaluate the first N users only (N >= 1; default: all; see --sample-seed)",
    )
    _flag(
        ev,
        "sample_seed",
        type=int,
        default=None,
        help="with --max-users: a seeded random sample of N users instead of the first N (the "
        "first users of a file are a biased sample; choose settings on a seeded one)",
    )
    ev.add_argument(
        "--predictions",
        default=None,
        metavar="FILE.jsonl",
        help='also write one line per user, {"user": ID, "items": [ranked item ids]}, for an '
        "outside scorer",
    )
    _flag(
        ev,
        "allow_other_data",
        action="store_true",
        help="evaluate on --data although it is not the data the model records (its fingerprint "
        "differs); without it such a run stops",
    )
    ev.add_argument("--out", default=None, help="output directory (default: MODEL/eval_SPLIT)")
    _flag(
        ev,
        "new_item_bonus",
        type=float,
        default=None,
        help="search the items added by `recllm catalog add` in a beam group of their own and "
        "add this to their scores (default: the bonus the model records, if any)",
    )
    _flag(
        ev,
        "exclude_history",
        action="store_true",
        help="exclude each user's history items inside the SID constraint (protocol "
        "p5_exclude_history, output MODEL/eval_SPLIT_exclude_history); default: the P5 protocol, "
        "where seen items may be recommended",
    )
    decoding = add_decoding_args(
        ev,
        engines=("sid_beam", "generate", "vllm"),
        engine="sid_beam",
        k="cutoffs",
        k_default="5,10",
        beams=20,
        constraint=True,
    )
    _flag(
        decoding,
        "batch_size",
        type=_positive,
        default=None,
        help="users per decoding batch (default: 8 with transformers, 32 with vLLM; on 2 CPU "
        "cores 8 ranks 1.9x as many users a second as 32, docs/eval_speed.md; raise it on a GPU)",
    )
    decoding.add_argument(
        "--think",
        action="store_true",
        help="a reasoning model (recipes/onerec_think.py): write rationales first, then decode "
        "the SID after each and merge (output: MODEL/eval_SPLIT_think)",
    )
    _flag(decoding, "rationales", type=_positive, default=1, help="--think: rationales per user")
    _flag(decoding, "think_tokens", type=_positive, default=256, help="--think: longest rationale")
    _flag(
        decoding,
        "think_temperature",
        type=float,
        default=0.0,
        help="--think: sampling temperature of rationales (0: greedy, one rationale)",
    )
    _flag(decoding, "think_seed", type=int, default=0, help="--think: seed of rationale sampling")
    decoding.add_argument(
        "--prefixes",
        default=None,
        metavar="FILE.parquet",
        help="think-ahead: restrict each user's SIDs to the prefixes `recllm think-ahead` wrote "
        "(output: MODEL/eval_SPLIT_prefixes)",
    )
    ev.set_defaults(func=cmd_eval)
