"""Benchmark the PLUM recipe's SFT stage on CPU: against a bare TRL SFTTrainer, or a recipe
configuration's speed options side by side.

    python scripts/bench_sft.py                                        # tiny Qwen3, ml-100k texts
    python scripts/bench_sft.py --model SmolLM2-135M-Instruct --examples 128
    python scripts/bench_sft.py --model SmolLM2-135M-Instruct --config recipes/quickstart.yaml

Without ``--config`` (the recipe against TRL), all runs train one epoch over the same examples
(ml-100k training texts: behaviour, catalog and recommendation, SIDs included) from the same
starting weights, side by side in one process, alternating over ``--repeats`` rounds (best time
counts):

- baseline: ``SFTTrainer`` with TRL's defaults (the SFTConfig a user gets without a recipe:
  bf16 autocast, gradient checkpointing, random padded batches);
- recipe: the SFT stage of ``recipes/plum_sft.py`` with the settings of
  ``recipes/plum_sft.yaml`` (``train_stage`` and its config);
- the recipe with TRL's dense LM head (every position projected, the CPU default in TRL;
  the recipe projects only the completion positions, ``recllm.train.fast_head``), with random
  (padded) batches, and with TRL's padding-free bfd packing.

tokens/s = non-padding tokens of the epoch / train_runtime. CPU seconds (this process, all
threads) are printed beside wall seconds: on a machine shared with other jobs they are the fairer
comparison.

With ``--config YAML`` (a recipe configuration, e.g. ``recipes/quickstart.yaml``) the examples
are built exactly as ``recllm.train.plum.run_plum`` builds them from that YAML (data, split, SID
map, vocabulary extension, task mixture; flags the script does not know go to the recipe parser,
e.g. ``--data_path DIR --max_users 100``), and its SFT stage runs ``--steps`` steps at batch
``--batch`` from the same starting weights and on the same batches in four variants:

1. the configuration as is (``train_top_layers`` and ``bf16`` from the YAML);
2. the same with bf16 flipped (measured also on CPUs without native bf16, where the recipe
   itself would fall back to float32: how much slower emulated bf16 is is the point);
3. full fine-tuning (``train_top_layers`` null) with bf16 off and on (a different method than
   the top layers: its loss differs by design; bf16 on/off of one method should agree).

The embedding-only warm-up is not run (it is the same in every variant). Each run is timed from
the first forward of its first step to the end of training (tokenization and trainer set-up,
the same in every run, are outside); non-padding tokens and supervised (label != -100)
positions are counted from the batches the model received. With SmolLM2-135M on 2 cores the
defaults (8 steps x batch 8 = 64 examples each seen once, 4 runs, 2 rounds) should take about
7 minutes including the data and SID build: an estimate, not measured (the README's 6.4 s per
full-fine-tuning bf16 step, float32 1.6x slower, 6 top layers ~40% of a full step: ~23 s per
step of the four runs; longer rec_sequence rows make it more); ``--steps 16`` doubles it.
Without ``--model`` both modes train a tiny random Qwen3 (a smoke run, not a measurement).
``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`` before the command approximates a CPU
without AVX512/AMX.

The last line is one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

from recllm.bench.sft_speed import bench_config, bench_trl


def main() -> None:
    p = argparse.ArgumentParser(
        description="recipe SFT stage vs bare TRL SFTTrainer (default), or a recipe "
        "configuration's speed options side by side (--config YAML); flags not listed here go "
        "to the recipe parser in --config mode"
    )
    p.add_argument(
        "--model", default=None, help="causal-LM directory or known name (default: a tiny Qwen3)"
    )
    p.add_argument(
        "--config",
        default=None,
        help="recipe YAML (e.g. recipes/quickstart.yaml): benchmark its speed options "
        "(top layers / full fine-tuning x bf16 on / off); default: recipe vs TRL on "
        "recipes/plum_sft.yaml",
    )
    p.add_argument(
        "--examples",
        type=int,
        default=None,
        help="training examples (default: 512; with --config steps x batch, each seen once, "
        "or all the configuration builds when fewer)",
    )
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=None, help="SFT steps per run (--config; 8)")
    p.add_argument("--repeats", type=int, default=2, help="alternating rounds; best time counts")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pack-length", type=int, default=512, help="row length of the packed run")
    p.add_argument(
        "--pack-batch", type=int, default=2, help="packed rows per step (one flattened row each)"
    )
    args, rest = p.parse_known_args()
    logging.basicConfig(level=logging.WARNING)
    if args.model is None:  # a smoke run: a tiny random Qwen3
        from recllm.testing import save_tiny_model

        args.model = str(save_tiny_model(Path(tempfile.mkdtemp(prefix="bench_sft.")) / "tiny"))
    if args.config is None:
        if rest:
            p.error(f"unrecognized arguments: {' '.join(rest)} (recipe flags need --config)")
        if args.steps is not None:
            p.error("--steps needs --config (without it each run is one epoch)")
        args.examples = 512 if args.examples is None else args.examples
        figures = bench_trl(args, emit)
    else:
        args.steps = 8 if args.steps is None else args.steps
        figures = bench_config(args, rest, emit)
    print(json.dumps(figures))


def emit(line: str) -> None:
    print(line, flush=True)


if __name__ == "__main__":
    main()
