"""``recllm think-ahead``: OneRec-Think's offline half. Per user, a reasoning model samples
rationales and decodes the best SID prefixes after each; their union goes to a Parquet file that
``recllm eval --prefixes`` restricts a fast model with.

The file records what it was made of: the split its users come from and the fingerprint of the
data (:func:`recllm.eval.run.prefix_file_record`); ``recllm eval --prefixes`` refuses a file of
another split or other data (:func:`recllm.eval.run.check_prefix_file`).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from recllm.cli.args import _flag, _positive
from recllm.errors import UserError

logger = logging.getLogger(__name__)


def cmd_think_ahead(args: argparse.Namespace) -> int:
    """Per user: ``--paths`` rationales, the best ``--prefixes`` prefixes of ``--depth`` levels
    after each, their union written to a Parquet file (think-ahead's offline half)."""
    from recllm.cli.args import _check_out_file
    from recllm.decode.prefixes import write_prefix_file
    from recllm.decode.think import think_ahead_prefixes
    from recllm.eval.run import eval_examples, prefix_file_record
    from recllm.tasks.prompting import build_prompts
    from recllm.vocab.catalog_add import model_catalog

    _check_out_file(args.out)
    model_dir, spec, engine = _check_model(args)
    data_fields, dataset, examples = eval_examples(model_dir, args.data, args.split, 0)
    if args.max_users:
        from recllm.eval.run import select_users

        examples = select_users(examples, args.max_users, seed=args.sample_seed)
    model, llm, tokenizer, sid_map = _load_thinker(args, model_dir, engine)
    catalog = model_catalog(model_dir, dataset.catalog)  # + items added by `recllm catalog add`
    prompts = build_prompts(spec, examples, sid_map, catalog, think=True)
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
    data = prefix_file_record(data_fields, dataset, args.split)
    record = {
        "model": str(model_dir),
        "split": data["split"],
        "data": data["data"],
        **_figures(args, engine, examples, found, sid_map, seconds),
        "data_fingerprint": data["data_fingerprint"],
    }
    users = [ex.user_id for ex in examples]
    write_prefix_file(args.out, users, found, sid_map_hash=sid_map.content_hash, record=record)
    print(
        f"wrote {args.out}: prefix-set recall {record['prefix_recall']:.4f} (share of targets "
        f"whose first {args.depth} levels are in the set), set size mean "
        f"{record['set_size_mean']} / median {record['set_size_median']} / max "
        f"{record['set_size_max']} (about {record['items_per_set_mean']} items under a set of "
        f"the {len(sid_map):,}), {record['users_per_second']} users/s"
    )
    hidden = ("data", "versions", "data_fingerprint")
    print(json.dumps({k: v for k, v in record.items() if k not in hidden}))
    return 0


def _check_model(args: argparse.Namespace) -> tuple[Path, Any, str]:
    """``(model_dir, spec, engine)``: a complete model trained to think, ``--depth`` within its
    SID levels, the engine resolved (auto: vLLM when installed), before any data is read."""
    import importlib.util

    from recllm.sid.sidmap import SIDMap
    from recllm.tasks.prompting import PromptSpec
    from recllm.vocab.checkpoint import check_model_dir

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
    levels = SIDMap.load(model_dir).levels
    if args.depth > levels:
        raise UserError(
            f"--depth {args.depth}",
            f"the SIDs of {model_dir} have {levels} levels",
            f"pass --depth 1 to {levels} (2, the default, restricts the first two levels)",
        )
    return model_dir, spec, engine


def _load_thinker(args: argparse.Namespace, model_dir: Path, engine: str):
    """``(model, llm, tokenizer, sid_map)``: a transformers model, or a vLLM engine."""
    import torch

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
        return None, llm, tokenizer, sid_map
    from recllm.vocab import load_model_with_sids

    model, tokenizer, sid_map = load_model_with_sids(model_dir, dtype=torch.float32)
    model.eval()
    return model, None, tokenizer, sid_map


def _figures(args, engine, examples, found, sid_map, seconds) -> dict[str, Any]:
    """The settings and figures of a think-ahead run (its data: :func:`prefix_file_record`)."""
    from recllm.eval.run import prefix_recall
    from recllm.provenance import library_versions

    by_user = {ex.user_id: f for ex, f in zip(examples, found, strict=True)}
    sizes = sorted(len(f) for f in found)
    return {
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
        "prefix_recall": prefix_recall(examples, by_user, sid_map),
        "set_size_mean": round(sum(sizes) / max(1, len(sizes)), 2),
        "set_size_median": sizes[len(sizes) // 2] if sizes else 0,
        "set_size_max": sizes[-1] if sizes else 0,
        "items_per_set_mean": round(_items_under(found, sid_map, args.depth), 1),
        "versions": library_versions(),
    }


def _items_under(found, sid_map, depth: int) -> float:
    """Mean number of catalog items under a user's prefix set."""
    from collections import Counter

    per_prefix = Counter(tuple(int(c) for c in code[:depth]) for code in sid_map.codes)
    if not found:
        return 0.0
    return sum(sum(per_prefix[tuple(p)] for p in f) for f in found) / len(found)


def add_parsers(sub: Any) -> None:
    """``recllm think-ahead``."""
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
