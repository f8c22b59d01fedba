"""``recllm reason generate``, ``recllm think-ahead`` and ``recllm dialogue generate``: the
commands that make reasoning and dialogue training data (and OneRec-Think's offline half).

Kept apart from :mod:`recllm.cli` (which registers them) so these paths read as one file.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from recllm.errors import UserError

logger = logging.getLogger(__name__)


def _data_and_sids(args: argparse.Namespace):
    """``(data config, dataset, split, sid_text or None)`` from ``--model-dir`` or ``--data``."""
    from recllm.data import load_rec_dataset, split_dataset

    if args.model_dir:
        from recllm.data.config import DataConfig
        from recllm.data.fingerprint import check_data_fingerprint, data_fingerprint
        from recllm.sid.sidmap import SIDMap
        from recllm.tasks.prompting import PromptSpec
        from recllm.vocab import SID_FORMAT
        from recllm.vocab.checkpoint import read_vocab_record

        model_dir = Path(args.model_dir)
        if not (model_dir / "recllm_vocab.json").is_file():
            raise UserError(
                f"--model-dir {model_dir}",
                "is not a recllm model directory (no recllm_vocab.json)",
                "pass OUTPUT_DIR/model of a plum_sft run, or --data PATH",
            )
        spec = PromptSpec.from_model_dir(model_dir)
        if not spec.data:
            raise UserError(
                f"--model-dir {model_dir}", "records no training data", "pass --data PATH instead"
            )
        cfg = DataConfig(**spec.data)
        dataset = load_rec_dataset(config=cfg)
        split = split_dataset(dataset, cfg)
        record = read_vocab_record(model_dir).get("recommender") or {}
        check_data_fingerprint(
            record.get("data_fingerprint"),
            data_fingerprint(split, dataset.catalog),
            model=str(model_dir),
            data=str(cfg.data_path),
        )
        sid_map = SIDMap.load(model_dir)
        return cfg, dataset, split, lambda i: SID_FORMAT.render(sid_map.code(i))
    from recllm.cli_args import _data_config

    cfg = _data_config(args)
    if args.max_users:
        from dataclasses import replace

        cfg = replace(cfg, max_users=args.max_users)
    dataset = load_rec_dataset(config=cfg)
    return cfg, dataset, split_dataset(dataset, cfg), None


def cmd_reason_generate(args: argparse.Namespace) -> int:
    from recllm.io import check_out_dir
    from recllm.provenance import library_versions
    from recllm.tasks.reasoning import (
        METADATA_VERSION,
        generate_rationales,
        reason_examples,
        write_rationales,
    )

    check_out_dir(args.out, args.overwrite)
    teacher, cache = _teacher(args)
    cfg, dataset, split, sid_text = _data_and_sids(args)
    examples = reason_examples(split, cfg.max_history, per_user=args.per_user)
    if args.max_examples and len(examples) > args.max_examples:
        examples = examples[: args.max_examples]
    print(
        f"rationales for {len(examples):,} training examples of {cfg.data_path} "
        f"({args.per_user} per user; source {args.source})"
    )
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    run = generate_rationales(
        examples,
        dataset.catalog,
        source=args.source,
        sid_text=sid_text,
        teacher=teacher,
        cache=cache,
        prompts_dir=args.prompts_dir,
        progress=True,
        on_estimate=print,
    )
    from recllm.data.fingerprint import data_fingerprint

    record: dict[str, Any] = {
        "data_fingerprint": json.loads(json.dumps(data_fingerprint(split, dataset.catalog))),
        "source": args.source,
        "teacher": None
        if teacher is None
        else {
            "url": teacher.url,
            "model": teacher.model,
            "max_tokens": teacher.max_tokens,
            "temperature": teacher.temperature,
            "saw_target": True,  # the history and the next item, as in OneRec-Think
        },
        "metadata_version": METADATA_VERSION if args.source == "metadata" else None,
        "data": {k: v for k, v in vars(cfg).items()},
        "model_dir": args.model_dir,
        "per_user": args.per_user,
        "examples": len(examples),
        "rows": len(run.rows),
        "dropped_leaking": run.leaked,
        "dropped_empty": run.empty,
        "requested": run.requested,
        "from_cache": run.cached,
        "cache": str(cache.path) if cache else None,
        "seconds": round(run.seconds, 2),
        "started": started,
        "versions": library_versions(),
    }
    write_rationales(run, args.out, record)
    print(
        f"wrote {len(run.rows):,} rationales to {args.out} ({run.leaked} dropped for naming the "
        f"target, {run.empty} empty; {run.requested} requested, {run.cached} from the cache) "
        f"in {run.seconds:.1f} s"
    )
    if run.rows:
        print(f"  e.g. user {run.rows[0]['user_id']}: {run.rows[0]['rationale'][:300]}")
    return 0


def cmd_think_ahead(args: argparse.Namespace) -> int:
    """Per user: ``--paths`` rationales, the best ``--prefixes`` prefixes of ``--depth`` levels
    after each, their union written to a Parquet file (think-ahead's offline half)."""
    import importlib.util

    import torch

    from recllm.cli_args import _check_out_file
    from recllm.decode.prefixes import write_prefix_file
    from recllm.decode.think import think_ahead_prefixes
    from recllm.eval.run import eval_examples, prefix_recall
    from recllm.provenance import library_versions
    from recllm.tasks.prompting import PromptSpec, build_prompts
    from recllm.vocab.checkpoint import check_model_dir

    _check_out_file(args.out)
    engine = args.engine
    if engine == "auto":
        engine = "vllm" if importlib.util.find_spec("vllm") is not None else "hf"
    model_dir = Path(args.model)
    check_model_dir(model_dir, weights=engine != "vllm")
    spec = PromptSpec.from_model_dir(model_dir)
    if spec.think is None:
        raise UserError(
            f"--model {model_dir}",
            "was not trained to think (its recllm_vocab.json records no `think`)",
            "pass a model from recipes/onerec_think.py",
        )
    data_fields, dataset, examples = eval_examples(model_dir, args.data, args.split, 0)
    if args.max_users:
        from recllm.eval.run import select_users

        examples = select_users(examples, args.max_users, seed=args.sample_seed)
    model = llm = None
    if engine == "vllm":
        from recllm.decode.vllm_beam import start_vllm_engine
        from recllm.vocab.checkpoint import load_tokenizer_with_sids

        tokenizer, sid_map = load_tokenizer_with_sids(model_dir)
        llm = start_vllm_engine(
            model_dir,
            stop_token_id=tokenizer.eos_token_id,
            dtype="float32",
            max_k=args.prefixes,
            # the KV cache takes this share of memory (of RAM on vLLM's CPU backend, where its
            # default of 0.9 left no room for the rest and the worker was OOM-killed)
            vllm_kwargs={"seed": args.seed, "gpu_memory_utilization": args.vllm_memory},
        )
    else:
        from recllm.vocab import load_model_with_sids

        model, tokenizer, sid_map = load_model_with_sids(model_dir, dtype=torch.float32)
        model.eval()
    prompts = build_prompts(spec, examples, sid_map, dataset.catalog, think=True)
    print(
        f"think-ahead for {len(examples):,} {args.split} users of {data_fields['data_path']}: "
        f"{args.paths} rationale(s) each (<= {args.think_tokens} tokens, temperature "
        f"{args.temperature}), the best {args.prefixes} prefixes of {args.depth} levels after "
        f"each, on {engine}"
    )
    start = time.perf_counter()
    found = think_ahead_prefixes(
        model,
        tokenizer,
        prompts,
        sid_map,
        paths=args.paths,
        prefixes=args.prefixes,
        depth=args.depth,
        max_think_tokens=args.think_tokens,
        temperature=args.temperature,
        batch_size=args.batch_size,
        seed=args.seed,
        progress=True,
        engine=llm,
    )
    seconds = time.perf_counter() - start
    by_user = {ex.user_id: f for ex, f in zip(examples, found, strict=True)}
    sizes = sorted(len(f) for f in found)
    recall = prefix_recall(examples, by_user, sid_map)
    record = {
        "model": str(model_dir),
        "split": args.split,
        "data": data_fields,
        "paths": args.paths,
        "prefixes_per_path": args.prefixes,
        "depth": args.depth,
        "think_tokens": args.think_tokens,
        "temperature": args.temperature,
        "seed": args.seed,
        "engine": engine,
        "users": len(examples),
        "seconds": round(seconds, 2),
        "users_per_second": round(len(examples) / seconds, 3) if seconds else None,
        "prefix_recall": recall,
        "set_size_mean": round(sum(sizes) / max(1, len(sizes)), 2),
        "set_size_median": sizes[len(sizes) // 2] if sizes else 0,
        "set_size_max": sizes[-1] if sizes else 0,
        "items_per_set_mean": round(_items_under(found, sid_map, args.depth), 1),
        "versions": library_versions(),
    }
    write_prefix_file(
        args.out,
        [ex.user_id for ex in examples],
        found,
        sid_map_hash=sid_map.content_hash,
        record=record,
    )
    print(
        f"wrote {args.out}: prefix-set recall {recall:.4f} (share of targets whose first "
        f"{args.depth} levels are in the set), set size mean {record['set_size_mean']} / median "
        f"{record['set_size_median']} / max {record['set_size_max']} (about "
        f"{record['items_per_set_mean']} items under a set of the {len(sid_map):,}), "
        f"{record['users_per_second']} users/s"
    )
    print(json.dumps({k: v for k, v in record.items() if k not in ("data", "versions")}))
    return 0


def _items_under(found, sid_map, depth: int) -> float:
    """Mean number of catalog items under a user's prefix set."""
    from collections import Counter

    per_prefix = Counter(tuple(int(c) for c in code[:depth]) for code in sid_map.codes)
    if not found:
        return 0.0
    return sum(sum(per_prefix[tuple(p)] for p in f) for f in found) / len(found)


def add_think_ahead_parser(sub: Any) -> None:
    """``recllm think-ahead``."""
    from recllm.cli_args import _flag, _positive

    t = sub.add_parser(
        "think-ahead",
        help="offline reasoning: each user's SID prefix set, for a fast model's restricted trie",
        description="For each user of --split: sample --paths rationales with a reasoning model "
        "(recipes/onerec_think.py), decode the best --prefixes SID prefixes of --depth levels "
        "after each, and write the union per user to --out (Parquet). A fast model then decodes "
        "within them: recllm eval --model FAST --prefixes FILE.",
    )
    t.add_argument("--model", required=True, help="the reasoning model directory")
    t.add_argument("--data", default=None, help="dataset (default: the model's)")
    t.add_argument("--split", choices=("test", "valid"), default="test")
    t.add_argument("--paths", type=_positive, default=4, help="rationales per user (T)")
    t.add_argument("--prefixes", type=_positive, default=8, help="prefixes kept per rationale (M)")
    t.add_argument("--depth", type=_positive, default=2, help="SID levels of a prefix")
    _flag(t, "think_tokens", type=_positive, default=256, help="longest rationale")
    t.add_argument("--temperature", type=float, default=1.0, help="rationale sampling temperature")
    t.add_argument("--seed", type=int, default=0, help="sampling seed (vLLM: the engine's)")
    _flag(t, "max_users", type=_positive, default=None, help="N users only (see --sample-seed)")
    _flag(
        t,
        "sample_seed",
        type=int,
        default=None,
        help="with --max-users: a seeded random sample of N users (recllm.eval.run.select_users, "
        "as scripts/think_benchmark.py and the quickstart's --eval-seed draw them); default: "
        "the first N",
    )
    _flag(
        t,
        "batch_size",
        type=_positive,
        default=16,
        help="users per batch (transformers; on vLLM, users per engine call: more sequences "
        "than its KV cache holds are preempted and recomputed)",
    )
    t.add_argument(
        "--engine",
        choices=("auto", "vllm", "hf"),
        default="auto",
        help="vllm when installed (auto), or transformers",
    )
    _flag(
        t,
        "vllm_memory",
        type=float,
        default=0.3,
        help="vLLM: share of device memory (RAM on CPU) for the engine's KV cache",
    )
    t.add_argument("--out", required=True, help="output file (.parquet), written atomically")
    t.set_defaults(func=cmd_think_ahead)


def _add_teacher_args(g: argparse.ArgumentParser, tokens_help: str, max_tokens: int) -> None:
    """The ``--source teacher`` flags shared by ``reason generate`` and ``dialogue generate``."""
    from recllm.cli_args import _flag, _non_negative, _positive

    _flag(g, "teacher_url", default=None, help="OpenAI-compatible base URL (http://HOST:PORT/v1)")
    _flag(g, "teacher_model", default=None, help="the model name sent with every request")
    _flag(
        g,
        "teacher_key_env",
        default="OPENAI_API_KEY",
        help="environment variable with the API key (unset: no key sent)",
    )
    _flag(g, "concurrency", type=_positive, default=8, help="requests in flight")
    _flag(g, "max_tokens", type=_positive, default=max_tokens, help=tokens_help)
    g.add_argument("--temperature", type=float, default=0.7)
    g.add_argument("--retries", type=_non_negative, default=5, help="retries per request")
    g.add_argument("--timeout", type=float, default=120.0, help="seconds per attempt")
    g.add_argument(
        "--cache",
        default=None,
        help="teacher answers, one JSON line each, keyed by request hash: a rerun resumes from "
        "it (default: OUT.cache.jsonl)",
    )


def _teacher(args: argparse.Namespace):
    """``(TeacherConfig, RationaleCache)`` of ``--source teacher``, or ``(None, None)``."""
    from recllm.tasks.reasoning import RationaleCache, TeacherConfig

    if args.source != "teacher":
        if args.teacher_url or args.teacher_model:
            raise UserError(
                "--teacher-url/--teacher-model",
                "apply to --source teacher only",
                "add --source teacher, or drop them",
            )
        return None, None
    if not args.teacher_url or not args.teacher_model:
        raise UserError(
            "--source teacher",
            "needs the endpoint and the model name",
            "pass --teacher-url http://HOST:PORT/v1 and --teacher-model NAME",
        )
    teacher = TeacherConfig(
        url=args.teacher_url,
        model=args.teacher_model,
        api_key_env=args.teacher_key_env,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        concurrency=args.concurrency,
        retries=args.retries,
        timeout=args.timeout,
    )
    cache_path = Path(args.cache) if args.cache else Path(str(args.out) + ".cache.jsonl")
    if cache_path.is_dir():
        raise UserError(f"--cache {cache_path}", "is a directory", "pass a file path")
    return teacher, RationaleCache(cache_path)


def cmd_dialogue_generate(args: argparse.Namespace) -> int:
    from recllm.data.fingerprint import data_fingerprint
    from recllm.io import check_out_dir
    from recllm.provenance import library_versions
    from recllm.tasks import TaskBuilder, TaskConfig
    from recllm.tasks.dialogue import (
        DIALOGUE_VERSION,
        build_conversations,
        rewrite_conversations,
        write_dialogues,
    )

    check_out_dir(args.out, args.overwrite)
    teacher, cache = _teacher(args)
    cfg, dataset, split, sid_text = _data_and_sids(args)
    labels = dict(pair.split("=", 1) for pair in args.facet_labels or [])
    if args.model_dir and not labels:
        from recllm.tasks.prompting import PromptSpec

        labels = dict(PromptSpec.from_model_dir(args.model_dir).task.get("facet_labels") or {})
    task_cfg = TaskConfig(
        facet_labels=labels, **({"prompts_dir": args.prompts_dir} if args.prompts_dir else {})
    )
    builder = TaskBuilder(dataset.catalog, sid_text or (lambda i: ""), task_cfg)
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    t0 = time.monotonic()
    convs = build_conversations(
        split,
        dataset.catalog,
        per_user=args.per_user,
        max_turns=args.turns,
        max_history=cfg.max_history,
        steer_share=args.steer,
        seed=args.seed,
        facets=builder.facets(),
    )
    if args.max_conversations:
        convs = convs[: args.max_conversations]
    print(
        f"{len(convs):,} conversations ({sum(len(c.turns) for c in convs):,} turns) from the "
        f"training split of {cfg.data_path}; source {args.source}"
    )
    run = None
    if teacher is not None:
        run = rewrite_conversations(convs, builder, teacher, cache, on_estimate=print)
        convs = run.conversations
    record: dict[str, Any] = {
        "data_fingerprint": json.loads(json.dumps(data_fingerprint(split, dataset.catalog))),
        "source": args.source,
        "dialogue_version": DIALOGUE_VERSION,
        "settings": {
            "per_user": args.per_user,
            "turns": args.turns,
            "steer": args.steer,
            "seed": args.seed,
            "facet_labels": labels,
        },
        "teacher": None
        if teacher is None
        else {
            "url": teacher.url,
            "model": teacher.model,
            "max_tokens": teacher.max_tokens,
            "temperature": teacher.temperature,
            "saw_pick": "reason only (the request part never sees the picked item)",
        },
        "data": dict(vars(cfg)),
        "model_dir": args.model_dir,
        "conversations": len(convs),
        "turns": sum(len(c.turns) for c in convs),
        "teacher_parts": run.parts if run else 0,
        "kept_built": run.kept_built if run else 0,
        "requested": run.requested if run else 0,
        "from_cache": run.cached if run else 0,
        "cache": str(cache.path) if cache else None,
        "seconds": round(time.monotonic() - t0, 2),
        "started": started,
        "versions": library_versions(),
    }
    write_dialogues(
        convs, args.out, record, source=args.source, teacher=teacher.model if teacher else ""
    )
    extra = (
        f"; {run.requested} requested, {run.cached} from the cache, {run.kept_built} answers "
        "dropped (the built words kept)"
        if run
        else ""
    )
    print(f"wrote {len(convs):,} conversations to {args.out}{extra}")
    return 0


def add_dialogue_parser(sub: Any) -> None:
    """``recllm dialogue generate``."""
    from recllm.cli_args import _add_data_args, _flag, _non_negative, _positive

    d = sub.add_parser("dialogue", help="conversations for the dialogue task")
    dsub = d.add_subparsers(dest="dialogue_command", required=True)
    g = dsub.add_parser(
        "generate",
        help="conversations from the training split and item metadata, optionally reworded "
        "by a teacher model (the training's --dialogues DIR)",
    )
    g.add_argument(
        "--model-dir",
        "--model_dir",
        dest="model_dir",
        default=None,
        help="a recllm model directory: its data, split, SID map and facet labels; else --data",
    )
    _add_data_args(g, positional=False)
    _flag(g, "max_users", type=_non_negative, default=None, help="first N users (with --data)")
    g.add_argument("--source", choices=("metadata", "teacher"), default="metadata")
    _flag(g, "per_user", type=_positive, default=2, help="conversations per training user")
    g.add_argument("--turns", type=_positive, default=2, help="assistant turns per conversation")
    g.add_argument("--steer", type=float, default=0.5, help="share of turns that steer by text")
    g.add_argument("--seed", type=int, default=0, help="seed of the conversation choices")
    _flag(g, "max_conversations", type=_positive, default=None, help="the first N only")
    _flag(
        g,
        "facet_labels",
        nargs="*",
        default=None,
        help="FIELD=WORDS pairs naming the catalog's fields in turns (class=genre); default: "
        "the model's, else the field names",
    )
    _add_teacher_args(g, "longest rewritten sentence, in tokens", 64)
    _flag(g, "prompts_dir", default=None, help="folder with the dialogue templates")
    g.add_argument("--out", required=True, help="output directory (written atomically)")
    g.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    g.set_defaults(func=cmd_dialogue_generate)


def add_reason_parser(sub: Any) -> None:
    """``recllm reason generate``."""
    from recllm.cli_args import _add_data_args, _flag, _non_negative, _positive

    r = sub.add_parser("reason", help="OneRec-Think rationales: why a user picks the next item")
    rsub = r.add_subparsers(dest="reason_command", required=True)
    g = rsub.add_parser(
        "generate",
        help="one rationale per training example (training split only), from a teacher model "
        "or from item metadata",
    )
    g.add_argument(
        "--model-dir",
        "--model_dir",
        dest="model_dir",
        default=None,
        help="a recllm model directory: its data, split and SID map (the leakage filter also "
        "drops rationales quoting the target's SID); else --data and the data flags",
    )
    _add_data_args(g, positional=False)
    _flag(g, "max_users", type=_non_negative, default=None, help="first N users (with --data)")
    g.add_argument("--source", choices=("metadata", "teacher"), default="metadata")
    _flag(g, "per_user", type=_positive, default=1, help="last N training transitions per user")
    _flag(g, "max_examples", type=_positive, default=None, help="the first N examples only")
    _add_teacher_args(g, "longest rationale, in tokens", 160)
    _flag(g, "prompts_dir", default=None, help="folder with reason_teacher.jinja (default: ours)")
    g.add_argument("--out", required=True, help="output directory (written atomically)")
    g.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    g.set_defaults(func=cmd_reason_generate)
