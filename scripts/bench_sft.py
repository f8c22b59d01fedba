"""Benchmark: training tokens/s of the PLUM recipe's SFT stage against a bare TRL SFTTrainer.

    python scripts/bench_sft.py                                        # tiny Qwen3, ml-100k texts
    python scripts/bench_sft.py --model SmolLM2-135M-Instruct --examples 128

All runs train one epoch over the same examples (ml-100k training texts: behaviour, catalog and
recommendation, SIDs included) from the same starting weights, side by side in one process,
alternating over ``--repeats`` rounds (best time counts):

- baseline: ``SFTTrainer`` with TRL's defaults (the SFTConfig a user gets without a recipe:
  bf16 autocast, gradient checkpointing, random padded batches);
- recipe: the SFT stage of ``recipes/plum_sft.py`` with the settings of
  ``recipes/plum_sft.yaml`` (``train_stage`` and its config);
- the recipe with TRL's dense LM head (every position projected, the CPU default in TRL;
  the recipe projects only the completion positions, ``recllm.train.fast_head``), with random
  (padded) batches, and with TRL's padding-free bfd packing.

tokens/s = non-padding tokens of the epoch / train_runtime. CPU seconds (this process, all
threads) are printed beside wall seconds: on a machine shared with other jobs they are the fairer
comparison. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def build_examples(model_dir: str, examples: int, seed: int):
    """(model with SID vocabulary, tokenizer, dataset) from ml-100k, as the recipe builds them."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from recllm.data import DataConfig, load_rec_dataset, split_dataset
    from recllm.sid.build import build_sid_map
    from recllm.sid.config import SIDConfig
    from recllm.tasks import TaskBuilder, TaskConfig
    from recllm.vocab import SID_FORMAT, extend_vocab

    data_cfg = DataConfig(max_users=200)
    ds = load_rec_dataset("ml-100k", data_cfg)
    split = split_dataset(ds, data_cfg)
    sid_map = build_sid_map(
        ds, SIDConfig(codebook_size=64, collab_weight=0.3), data_cfg, split=split
    ).sid_map
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="float32")
    extend_vocab(model, tok, sid_map, init="item_text", catalog=ds.catalog)
    builder = TaskBuilder(ds.catalog, lambda i: SID_FORMAT.render(sid_map.code(i)), TaskConfig())
    train = builder.build(split)["train"].shuffle(seed=seed).select(range(examples))
    train = train.remove_columns(
        [c for c in train.column_names if c not in ("prompt", "completion")]
    )
    return model, tok, train


def count_tokens(tok, train) -> int:
    total = 0
    for row in train:
        enc = tok.apply_chat_template(
            row["prompt"] + row["completion"], tokenize=True, return_dict=True
        )
        total += len(enc["input_ids"])
    return total


def recipe_sft_config(out: str, batch: int, seed: int, **overrides):
    """The SFT settings of recipes/plum_sft.yaml, as the recipe parses them (+ ``overrides``)."""
    from recllm.train.plum import parse_recipe_args

    sft = parse_recipe_args(["--config", str(ROOT / "recipes" / "plum_sft.yaml")])[4]
    return replace(
        sft,
        output_dir=out,
        max_steps=-1,
        num_train_epochs=1,
        per_device_train_batch_size=batch,
        use_cpu=True,
        seed=seed,
        logging_steps=10_000,
        report_to="none",
        save_strategy="no",
        **overrides,
    )


def run_bare(model, tok, train, out: str, batch: int, seed: int) -> float:
    """Seconds of one epoch with TRL's defaults (what a user gets without a recipe)."""
    from trl import SFTConfig, SFTTrainer

    cfg = SFTConfig(
        output_dir=out,
        num_train_epochs=1,
        per_device_train_batch_size=batch,
        use_cpu=True,
        seed=seed,
        report_to="none",
        save_strategy="no",
        logging_steps=10_000,
    )
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=train, processing_class=tok)
    return trainer.train().metrics["train_runtime"]


def run_recipe(
    model, tok, train, out: str, batch: int, seed: int, compact_head: bool = True, **overrides
) -> float:
    """Seconds of one epoch of the recipe's SFT stage (``train_stage`` + the YAML's settings)."""
    from recllm.train.sft import train_stage

    cfg = recipe_sft_config(out, batch, seed, **overrides)
    trainer = train_stage(model, tok, train, cfg, compact_head=compact_head)
    return trainer.state.log_history[-1]["train_runtime"]


def main() -> None:
    p = argparse.ArgumentParser(description="recipe SFT stage vs bare TRL SFTTrainer, tokens/s")
    p.add_argument("--model", default=None, help="causal-LM directory (default: a tiny Qwen3)")
    p.add_argument("--examples", type=int, default=512)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2, help="alternating rounds; best time counts")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pack-length", type=int, default=512, help="row length of the packed run")
    p.add_argument(
        "--pack-batch", type=int, default=2, help="packed rows per step (one flattened row each)"
    )
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import torch
    import trl

    from recllm.testing import save_tiny_model

    tmp = Path(tempfile.mkdtemp(prefix="bench_sft."))
    from recllm.models import resolve_model

    model_dir = resolve_model(args.model) if args.model else str(save_tiny_model(tmp / "tiny"))
    model, tok, train = build_examples(model_dir, args.examples, args.seed)
    tokens = count_tokens(tok, train)
    yaml_cfg = recipe_sft_config(str(tmp / "probe"), args.batch, args.seed)
    print(f"command: python {' '.join(sys.argv)}")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), trl {trl.__version__}"
    )
    print(
        f"model: {model_dir} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params), "
        f"{args.examples} examples, {tokens:,} tokens, batch {args.batch}, "
        f"best of {args.repeats} alternating rounds"
    )
    # Same examples, same starting weights, one epoch each: TRL's defaults, the recipe as shipped
    # (plum_sft.yaml: no gradient checkpointing, length-grouped batches), the recipe with random
    # (padded) batches, and the recipe with TRL's padding-free bfd packing.
    runs = {
        "bare TRL SFTTrainer (defaults)": lambda m, o: run_bare(
            m, tok, train, o, args.batch, args.seed
        ),
        "recipe SFT stage (plum_sft.yaml)": lambda m, o: run_recipe(
            m, tok, train, o, args.batch, args.seed
        ),
        "recipe, TRL's dense LM head": lambda m, o: run_recipe(
            m, tok, train, o, args.batch, args.seed, compact_head=False
        ),
        "recipe, random batches (padded)": lambda m, o: run_recipe(
            m, tok, train, o, args.batch, args.seed, train_sampling_strategy="random"
        ),
        f"recipe, packed (bfd, {args.pack_length} tokens)": lambda m, o: run_recipe(
            m,
            tok,
            train,
            o,
            args.pack_batch,
            args.seed,
            train_sampling_strategy="random",
            packing=True,
            packing_strategy="bfd",
            max_length=args.pack_length,
        ),
    }
    best: dict[str, float] = {}
    best_cpu: dict[str, float] = {}
    for r in range(args.repeats):
        for i, (name, fn) in enumerate(runs.items()):
            m = copy.deepcopy(model)
            cpu0 = time.process_time()
            seconds = fn(m, str(tmp / f"run{r}_{i}"))
            cpu = time.process_time() - cpu0  # all threads of this process: robust to other jobs
            best[name] = min(best.get(name, float("inf")), seconds)
            best_cpu[name] = min(best_cpu.get(name, float("inf")), cpu)
            print(f"  round {r + 1}: {name}: {seconds:.2f} s wall, {cpu:.2f} s CPU", flush=True)

    names = list(runs)
    keys = ["bare", "recipe", "recipe_dense_head", "recipe_random_batches", "recipe_packed"]
    rates = {n: tokens / best[n] for n in names}
    print(
        f"{'run':40s} {'seconds':>8s} {'tokens/s':>9s} {'vs bare':>8s} {'CPU s':>8s} {'vs bare':>8s}"
    )
    for n in names:
        print(
            f"{n:40s} {best[n]:8.2f} {rates[n]:9.0f} {rates[n] / rates[names[0]]:8.2f} "
            f"{best_cpu[n]:8.2f} {best_cpu[names[0]] / best_cpu[n]:8.2f}"
        )
    ratios = {k: rates[n] / rates[names[0]] for k, n in zip(keys, names, strict=True)}
    cpu_ratios = {k: best_cpu[names[0]] / best_cpu[n] for k, n in zip(keys, names, strict=True)}
    print(
        f"ratio recipe / bare TRL: {ratios['recipe']:.2f} (targets: >= 1.0; >= 1.5 with "
        f"padding-free batching or packing)"
    )
    print(
        json.dumps(
            {
                "command": "python " + " ".join(sys.argv),
                "model": model_dir,
                "examples": args.examples,
                "tokens": tokens,
                "batch": args.batch,
                "pack_batch": args.pack_batch,
                "pack_length": args.pack_length,
                "repeats": args.repeats,
                "seconds": {k: round(best[n], 3) for k, n in zip(keys, names, strict=True)},
                "tokens_per_s": {k: round(rates[n], 1) for k, n in zip(keys, names, strict=True)},
                "ratio_vs_bare": {k: round(v, 3) for k, v in ratios.items()},
                "cpu_seconds": {k: round(best_cpu[n], 3) for k, n in zip(keys, names, strict=True)},
                "cpu_ratio_vs_bare": {k: round(v, 3) for k, v in cpu_ratios.items()},
                "ratio": round(ratios["recipe"], 3),
                "recipe_settings": {
                    "bf16": yaml_cfg.bf16,
                    "gradient_checkpointing": yaml_cfg.gradient_checkpointing,
                    "train_sampling_strategy": yaml_cfg.train_sampling_strategy,
                    "padding_free": yaml_cfg.padding_free,
                    "packing": yaml_cfg.packing,
                    "max_length": yaml_cfg.max_length,
                },
            }
        )
    )


if __name__ == "__main__":
    main()
