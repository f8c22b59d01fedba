"""Benchmark: training tokens/s of the PLUM recipe's SFT stage against a bare TRL SFTTrainer.

    python scripts/bench_sft.py                                   # tiny Qwen3, ml-100k texts
    python scripts/bench_sft.py --model outputs/models/smollm2-135m --examples 128

Both runs train one epoch over the same examples (ml-100k training texts: behaviour, catalog
and recommendation, SIDs included) from the same starting weights, side by side in one process:

- baseline: ``SFTTrainer`` with TRL's defaults (the SFTConfig a user gets without a recipe);
- recllm: the SFT stage of ``recipes/plum_sft.py`` with the settings of
  ``recipes/plum_sft.yaml`` (``train_stage`` and its config).

tokens/s = non-padding tokens of the epoch / train_runtime. The last line is one JSON object.
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
    from trl import ModelConfig, SFTConfig, TrlParser

    sys.path.insert(0, str(ROOT / "recipes"))
    import plum_sft

    from recllm.data import DataConfig
    from recllm.sid.config import SIDConfig
    from recllm.tasks import TaskConfig

    parser = TrlParser(
        (plum_sft.PlumArguments, DataConfig, SIDConfig, TaskConfig, SFTConfig, ModelConfig)
    )
    sft = parser.parse_args_and_config(["--config", str(ROOT / "recipes" / "plum_sft.yaml")])[4]
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
        bf16=False,  # TRL defaults to bf16, which is much slower than float32 on most CPUs
        seed=seed,
        report_to="none",
        save_strategy="no",
        logging_steps=10_000,
    )
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=train, processing_class=tok)
    return trainer.train().metrics["train_runtime"]


def run_recipe(model, tok, train, out: str, batch: int, seed: int, **overrides) -> float:
    """Seconds of one epoch of the recipe's SFT stage (``train_stage`` + the YAML's settings)."""
    from recllm.train.sft import train_stage

    cfg = recipe_sft_config(out, batch, seed, **overrides)
    trainer = train_stage(model, tok, train, cfg)
    return trainer.state.log_history[-1]["train_runtime"]


def main() -> None:
    p = argparse.ArgumentParser(description="recipe SFT stage vs bare TRL SFTTrainer, tokens/s")
    p.add_argument("--model", default=None, help="causal-LM directory (default: a tiny Qwen3)")
    p.add_argument("--examples", type=int, default=512)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2, help="alternating rounds; best time counts")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import torch
    import trl

    from recllm.testing import save_tiny_model

    tmp = Path(tempfile.mkdtemp(prefix="bench_sft."))
    model_dir = args.model or str(save_tiny_model(tmp / "tiny"))
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
    # Same examples, same starting weights, one epoch each. The recipe as shipped (YAML) plus
    # the same stage with padded batches, to show what padding-free packing contributes.
    runs = {
        "bare TRL SFTTrainer (defaults)": lambda m, o: run_bare(
            m, tok, train, o, args.batch, args.seed
        ),
        "recipe SFT stage, padded batches": lambda m, o: run_recipe(
            m,
            tok,
            train,
            o,
            args.batch,
            args.seed,
            packing=False,
            padding_free=False,
            max_length=yaml_cfg.max_length or 1024,
        ),
        "recipe SFT stage (plum_sft.yaml)": lambda m, o: run_recipe(
            m, tok, train, o, args.batch, args.seed
        ),
    }
    best: dict[str, float] = {}
    for r in range(args.repeats):
        for i, (name, fn) in enumerate(runs.items()):
            seconds = fn(copy.deepcopy(model), str(tmp / f"run{r}_{i}"))
            best[name] = min(best.get(name, float("inf")), seconds)
            print(f"  round {r + 1}: {name}: {seconds:.2f} s", flush=True)

    names = list(runs)
    rates = {n: tokens / best[n] for n in names}
    print(f"{'run':36s} {'seconds':>8s} {'tokens/s':>9s} {'ratio':>6s}")
    for n in names:
        print(f"{n:36s} {best[n]:8.2f} {rates[n]:9.0f} {rates[n] / rates[names[0]]:6.2f}")
    ratio = rates[names[2]] / rates[names[0]]
    ratio_padded = rates[names[1]] / rates[names[0]]
    print(
        f"ratio recipe / bare: {ratio:.2f} (target >= 1.5 with packing); "
        f"padded recipe / bare: {ratio_padded:.2f} (target >= 1.0)"
    )
    print(
        json.dumps(
            {
                "model": model_dir,
                "examples": args.examples,
                "tokens": tokens,
                "batch": args.batch,
                "repeats": args.repeats,
                "seconds_bare": round(best[names[0]], 3),
                "seconds_recipe_padded": round(best[names[1]], 3),
                "seconds_recipe": round(best[names[2]], 3),
                "tokens_per_s_bare": round(rates[names[0]], 1),
                "tokens_per_s_recipe_padded": round(rates[names[1]], 1),
                "tokens_per_s_recipe": round(rates[names[2]], 1),
                "ratio_padded": round(ratio_padded, 3),
                "ratio": round(ratio, 3),
                "recipe_settings": {
                    "gradient_checkpointing": yaml_cfg.gradient_checkpointing,
                    "padding_free": yaml_cfg.padding_free,
                    "packing": yaml_cfg.packing,
                    "packing_strategy": yaml_cfg.packing_strategy if yaml_cfg.packing else None,
                    "max_length": yaml_cfg.max_length,
                },
            }
        )
    )


if __name__ == "__main__":
    main()
