"""``recllm reason generate`` and ``recllm dialogue generate``: the commands that make reasoning
and dialogue training data, from item metadata or through a teacher model. ``recllm
think-ahead`` (OneRec-Think's offline half) is in :mod:`recllm.cli.think` and is registered
between them here, in the order of ``recllm --help``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from recllm.cli.args import _add_data_args, _data_config, _flag, _non_negative, _positive
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


def _add_teacher_args(g: argparse.ArgumentParser, tokens_help: str, max_tokens: int) -> None:
    """The ``--source teacher`` flags shared by ``reason generate`` and ``dialogue generate``."""
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
    from recllm.io import check_out_dir
    from recllm.tasks.dialogue import build_conversations, rewrite_conversations, write_dialogues

    check_out_dir(args.out, args.overwrite)
    teacher, cache = _teacher(args)
    cfg, dataset, split, sid_text = _data_and_sids(args)
    labels, builder = _dialogue_builder(args, dataset, sid_text)
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
    record = _dialogue_record(args, cfg, dataset, split, labels, teacher, cache, convs, run)
    record.update(seconds=round(time.monotonic() - t0, 2), started=started)
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


def _dialogue_builder(args: argparse.Namespace, dataset, sid_text):
    """``(facet labels, TaskBuilder)``: ``--facet-labels``, else the model's, else none."""
    from recllm.tasks import TaskBuilder, TaskConfig

    labels = dict(pair.split("=", 1) for pair in args.facet_labels or [])
    if args.model_dir and not labels:
        from recllm.tasks.prompting import PromptSpec

        labels = dict(PromptSpec.from_model_dir(args.model_dir).task.get("facet_labels") or {})
    task_cfg = TaskConfig(
        facet_labels=labels, **({"prompts_dir": args.prompts_dir} if args.prompts_dir else {})
    )
    return labels, TaskBuilder(dataset.catalog, sid_text or (lambda i: ""), task_cfg)


def _dialogue_record(args, cfg, dataset, split, labels, teacher, cache, convs, run) -> dict:
    """``dialogues.json``: data fingerprint, settings, teacher, counts, versions (the run's
    ``seconds`` and ``started`` are set by the caller, in this order's place)."""
    from recllm.data.fingerprint import data_fingerprint
    from recllm.provenance import library_versions
    from recllm.tasks.dialogue import DIALOGUE_VERSION

    return {
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
        "seconds": None,
        "started": None,
        "versions": library_versions(),
    }


def _add_source_args(g: Any, model_dir_help: str) -> None:
    """What ``reason generate`` and ``dialogue generate`` read: a model directory or data,
    the first users, and the source (item metadata or a teacher model)."""
    g.add_argument(
        "--model-dir", "--model_dir", dest="model_dir", default=None, help=model_dir_help
    )
    _add_data_args(g, positional=False)
    _flag(
        g,
        "max_users",
        type=_positive,
        default=None,
        help="first N users (N >= 1, with --data; default: all)",
    )
    g.add_argument("--source", choices=("metadata", "teacher"), default="metadata")


def add_dialogue_parser(sub: Any) -> None:
    """``recllm dialogue generate``."""
    d = sub.add_parser("dialogue", help="conversations for the dialogue task")
    dsub = d.add_subparsers(dest="dialogue_command", required=True)
    g = dsub.add_parser(
        "generate",
        help="conversations from the training split and item metadata, optionally reworded "
        "by a teacher model (the training's --dialogues DIR)",
    )
    _add_source_args(
        g, "a recllm model directory: its data, split, SID map and facet labels; else --data"
    )
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


def add_parsers(sub: Any) -> None:
    """``recllm reason generate``, ``recllm think-ahead`` and ``recllm dialogue generate``."""
    from recllm.cli import think

    add_reason_parser(sub)
    think.add_parsers(sub)
    add_dialogue_parser(sub)


def add_reason_parser(sub: Any) -> None:
    """``recllm reason generate``."""
    r = sub.add_parser("reason", help="OneRec-Think rationales: why a user picks the next item")
    rsub = r.add_subparsers(dest="reason_command", required=True)
    g = rsub.add_parser(
        "generate",
        help="one rationale per training example (training split only), from a teacher model "
        "or from item metadata",
    )
    _add_source_args(
        g,
        "a recllm model directory: its data, split and SID map (the leakage filter also drops "
        "rationales quoting the target's SID); else --data and the data flags",
    )
    _flag(g, "per_user", type=_positive, default=1, help="last N training transitions per user")
    _flag(g, "max_examples", type=_positive, default=None, help="the first N examples only")
    _add_teacher_args(g, "longest rationale, in tokens", 160)
    _flag(g, "prompts_dir", default=None, help="folder with reason_teacher.jinja (default: ours)")
    g.add_argument("--out", required=True, help="output directory (written atomically)")
    g.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    g.set_defaults(func=cmd_reason_generate)
