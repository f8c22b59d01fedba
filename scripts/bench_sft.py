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


def recipe_sft_config(out: str, batch: int, seed: int):
    """The SFT settings of recipes/plum_sft.yaml, as the recipe parses them."""
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
    )


def main() -> None:
    p = argparse.ArgumentParser(description="recipe SFT stage vs bare TRL SFTTrainer, tokens/s")
    p.add_argument("--model", default=None, help="causal-LM directory (default: a tiny Qwen3)")
    p.add_argument("--examples", type=int, default=512)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import torch
    import trl
    from trl import SFTConfig, SFTTrainer

    from recllm.testing import save_tiny_model
    from recllm.train.sft import train_stage

    tmp = Path(tempfile.mkdtemp(prefix="bench_sft."))
    model_dir = args.model or str(save_tiny_model(tmp / "tiny"))
    model, tok, train = build_examples(model_dir, args.examples, args.seed)
    tokens = count_tokens(tok, train)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), trl {trl.__version__}"
    )
    print(
        f"model: {model_dir} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params), "
        f"{args.examples} examples, {tokens:,} tokens, batch {args.batch}"
    )

    base_cfg = SFTConfig(
        output_dir=str(tmp / "bare"),
        num_train_epochs=1,
        per_device_train_batch_size=args.batch,
        use_cpu=True,
        bf16=False,
        seed=args.seed,
        report_to="none",
        save_strategy="no",
        logging_steps=10_000,
    )
    bare = SFTTrainer(
        model=copy.deepcopy(model), args=base_cfg, train_dataset=train, processing_class=tok
    )
    t_bare = bare.train().metrics["train_runtime"]
    ours = train_stage(
        copy.deepcopy(model),
        tok,
        train,
        recipe_sft_config(str(tmp / "ours"), args.batch, args.seed),
    )
    t_ours = ours.state.log_history[-1]["train_runtime"]

    rate_bare, rate_ours = tokens / t_bare, tokens / t_ours
    print(f"{'run':34s} {'seconds':>8s} {'tokens/s':>9s}")
    print(f"{'bare TRL SFTTrainer (defaults)':34s} {t_bare:8.2f} {rate_bare:9.0f}")
    print(f"{'recllm recipe SFT stage':34s} {t_ours:8.2f} {rate_ours:9.0f}")
    print(f"ratio recipe / bare: {rate_ours / rate_bare:.2f} (target >= 1.0)")
    print(
        json.dumps(
            {
                "model": model_dir,
                "examples": args.examples,
                "tokens": tokens,
                "batch": args.batch,
                "seconds_bare": round(t_bare, 3),
                "seconds_recipe": round(t_ours, 3),
                "tokens_per_s_bare": round(rate_bare, 1),
                "tokens_per_s_recipe": round(rate_ours, 1),
                "ratio": round(rate_ours / rate_bare, 3),
                "recipe_settings": {
                    "gradient_checkpointing": False,
                    "padding_free": False,
                    "packing": False,
                },
            }
        )
    )


if __name__ == "__main__":
    main()
