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
import contextlib
import copy
import json
import logging
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, replace
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


def describe_machine() -> dict[str, object]:
    """CPU model, native bf16 (AVX512-BF16/AMX), the ISA caps set in the environment, threads."""
    import torch

    from recllm.train.sft import bf16_fast

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "bf16_native": bf16_fast(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "env": {
            k: os.environ[k]
            for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "OMP_NUM_THREADS")
            if k in os.environ
        },
        "torch": torch.__version__,
    }


def print_machine(machine: dict[str, object]) -> None:
    import trl

    env = " ".join(f"{k}={v}" for k, v in machine["env"].items()) or "no ISA caps set"
    print(
        f"machine: {machine['cpu']}, {machine['cores']} cores, native bf16 (AVX512-BF16/AMX): "
        f"{'yes' if machine['bf16_native'] else 'no'}, ATen CPU capability "
        f"{machine['cpu_capability']} ({env}); torch {machine['torch']} "
        f"({machine['threads']} threads), trl {trl.__version__}"
    )


@dataclass
class ConfigSetup:
    """What one recipe configuration trains in the SFT stage, built as ``run_plum`` builds it."""

    model: object  # the extended model: every run trains a deep copy
    tokenizer: object
    train: object  # datasets.Dataset of the recipe's mixture, shuffled
    sft: object  # trl.SFTConfig as parsed from the YAML and flags
    train_top_layers: int | None
    sid_rows: list[int]
    history_sids: tuple[list[int], int]
    model_dir: str
    mixture: dict[str, float]


def build_config_examples(
    config: str, model_dir: str | None, seed: int, recipe_flags: list[str]
) -> ConfigSetup:
    """The SFT stage's model and examples of the recipe configuration ``config``, exactly as
    ``recllm.train.plum.run_plum`` builds them (``model_dir`` replaces the YAML's model; the SID
    map is built in memory; no warm-up), the examples shuffled with ``seed``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

    from recllm.data import load_rec_dataset, split_dataset
    from recllm.models import resolve_model
    from recllm.sid.build import build_sid_map
    from recllm.tasks import TaskBuilder
    from recllm.train.plum import parse_recipe_args
    from recllm.vocab import SID_FORMAT, extend_vocab

    plum, data_cfg, sid_cfg, task_cfg, sft_cfg, model_cfg = parse_recipe_args(
        ["--config", config, *recipe_flags]
    )
    set_seed(sft_cfg.seed)
    model_path = resolve_model(model_dir or model_cfg.model_name_or_path)
    dataset = load_rec_dataset(config=data_cfg)
    split = split_dataset(dataset, data_cfg)
    sid_map = build_sid_map(dataset, sid_cfg, data_cfg, split=split).sid_map
    tok = AutoTokenizer.from_pretrained(model_path)
    dtype = getattr(torch, model_cfg.dtype) if model_cfg.dtype not in (None, "auto") else "auto"
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
    ext = extend_vocab(model, tok, sid_map, init=plum.vocab_init, catalog=dataset.catalog)
    builder = TaskBuilder(dataset.catalog, lambda i: SID_FORMAT.render(sid_map.code(i)), task_cfg)
    train = builder.build(split)["train"]
    if plum.max_train_examples is not None and len(train) > plum.max_train_examples:
        train = train.shuffle(seed=task_cfg.task_seed).select(range(plum.max_train_examples))
    train = train.shuffle(seed=seed)
    code_ids = [t for level in range(sid_map.levels) for t in ext.level_ids(level).tolist()]
    return ConfigSetup(
        model=model,
        tokenizer=tok,
        train=train,
        sft=sft_cfg,
        train_top_layers=plum.train_top_layers,
        sid_rows=ext.ids().tolist(),
        history_sids=(code_ids, sid_map.levels),
        model_dir=model_path,
        mixture={k: v for k, v in task_cfg.mixture.items() if v > 0},
    )


class BatchProbe:
    """Forward pre-hook on the model: starts the clocks at the first forward and counts the
    steps, examples, non-padding tokens and supervised (label != -100) positions of every
    batch."""

    def __init__(self, model) -> None:
        self.forwards = self.examples = self.tokens = self.supervised = 0
        self.wall0 = self.cpu0 = None
        self.handle = model.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs) -> None:
        if self.wall0 is None:
            self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask")
        labels = kwargs.get("labels")
        positions = kwargs.get("position_ids")
        self.forwards += 1
        if mask is None and positions is not None:  # padding-free: sequences restart at 0
            self.examples += int((positions == 0).sum())
        else:
            self.examples += int(ids.shape[0])
        self.tokens += int(mask.sum()) if mask is not None else int(ids.numel())
        if labels is not None:
            self.supervised += int((labels != -100).sum())


def run_config(
    setup: ConfigSetup, out: str, steps: int, batch: int, seed: int, top: int | None, bf16: bool
) -> dict[str, float]:
    """One SFT stage of ``setup``'s configuration on a deep copy of its model: ``steps`` steps of
    ``batch`` examples, with ``top`` layers training (None = full fine-tuning) and ``bf16``."""
    from recllm.train.rows import embedding_params, train_top_layers
    from recllm.train.sft import train_stage

    model = copy.deepcopy(setup.model)
    cfg = replace(
        setup.sft,
        output_dir=out,
        max_steps=steps,
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=1,
        bf16=bf16,
        seed=seed,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
    )
    handles = None
    if top is not None:  # as run_plum wires it: row masks, frozen lower blocks, no weight decay
        handles = train_top_layers(model, top, setup.sid_rows)
        cfg = replace(cfg, weight_decay=0.0)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if top is not None:  # of the embedding matrices only the SID rows move
        for p in embedding_params(model):
            trainable -= (p.shape[0] - len(setup.sid_rows)) * p.shape[1]
    probe = BatchProbe(model)
    try:
        # the trainer prints every step's log dict: to stderr, beside its progress bars
        with contextlib.redirect_stdout(sys.stderr):
            trainer = train_stage(
                model, setup.tokenizer, setup.train, cfg, history_sids=setup.history_sids
            )
        wall = time.perf_counter() - probe.wall0
        cpu = time.process_time() - probe.cpu0
    finally:
        probe.handle.remove()
        if handles is not None:
            handles.remove()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    if probe.forwards != steps or len(losses) != steps:
        raise RuntimeError(f"expected {steps} steps, got {probe.forwards} forwards")
    return {
        "wall": wall,
        "cpu": cpu,
        "tokens": probe.tokens,
        "supervised": probe.supervised,
        "examples": probe.examples,
        "final_loss": losses[-1],
        "mean_loss": sum(losses) / len(losses),
        "trainable_params": trainable,
    }


def bench_config(args: argparse.Namespace, recipe_flags: list[str]) -> None:
    """The configuration's speed options side by side (module docstring)."""
    from recllm.testing import save_tiny_model

    machine = describe_machine()
    tmp = Path(tempfile.mkdtemp(prefix="bench_sft."))
    steps, batch = args.steps, args.batch
    model_dir = args.model if args.model else str(save_tiny_model(tmp / "tiny"))
    setup = build_config_examples(args.config, model_dir, args.seed, recipe_flags)
    if args.examples is not None and args.examples > len(setup.train):
        raise SystemExit(f"--examples {args.examples}: the configuration builds {len(setup.train)}")
    # default: each example once (fewer when the configuration builds fewer: they repeat)
    examples = min(args.examples or steps * batch, len(setup.train))
    setup.train = setup.train.select(range(examples))
    n_params = sum(p.numel() for p in setup.model.parameters())
    layers = setup.model.config.num_hidden_layers
    print(f"command: python {' '.join(sys.argv)}")
    print_machine(machine)
    print(
        f"model: {setup.model_dir} ({n_params / 1e6:.1f}M params with the SID rows, {layers} "
        f"layers, {setup.model.dtype}); config {args.config}: mixture {setup.mixture}, "
        f"train_top_layers {setup.train_top_layers}, bf16 {setup.sft.bf16}"
    )
    print(
        f"sizes: {examples} examples, batch {batch}, {steps} steps per run, best of "
        f"{args.repeats} alternating rounds"
    )
    if not machine["bf16_native"]:
        print("  (no native bf16 here: the bf16-on runs use emulated bf16, as measured)")

    def label(top: int | None, bf16: bool) -> tuple[str, str]:
        method = f"top {top} layers" if top is not None else "full fine-tuning"
        key = f"top{top}" if top is not None else "full"
        return f"{method}, bf16 {'on' if bf16 else 'off'}", f"{key}_bf16_{'on' if bf16 else 'off'}"

    yaml_top, yaml_bf16 = setup.train_top_layers, bool(setup.sft.bf16)
    variants: dict[str, tuple[str, int | None, bool]] = {}
    for top, bf16 in [
        (yaml_top, yaml_bf16),
        (yaml_top, not yaml_bf16),
        (None, False),
        (None, True),
    ]:
        name, key = label(top, bf16)
        variants.setdefault(key, (name, top, bf16))  # a YAML without top layers: 2 runs
    as_is = next(iter(variants))
    results: dict[str, dict[str, float]] = {}
    for r in range(args.repeats):
        for i, (key, (name, top, bf16)) in enumerate(variants.items()):
            res = run_config(setup, str(tmp / f"run{r}_{i}"), steps, batch, args.seed, top, bf16)
            print(
                f"  round {r + 1}: {name}: {res['wall']:.2f} s wall, {res['cpu']:.2f} s CPU, "
                f"loss {res['final_loss']:.4f}",
                flush=True,
            )
            best = results.get(key)
            if best is None:
                results[key] = res
            else:  # the best wall and the best CPU seconds of the rounds count
                best["wall"] = min(best["wall"], res["wall"])
                best["cpu"] = min(best["cpu"], res["cpu"])

    def rates(res: dict[str, float]) -> dict[str, float]:
        return {
            "s_per_step": res["wall"] / steps,
            "examples_per_s": res["examples"] / res["wall"],
            "tokens_per_s": res["tokens"] / res["wall"],
            "supervised_per_s": res["supervised"] / res["wall"],
            "wall_s": res["wall"],
            "cpu_s": res["cpu"],
        }

    figures = {k: rates(v) for k, v in results.items()}
    ref = figures[as_is]
    # this run's figure / run 1's: seconds < 1 and rates > 1 = faster than the config as is
    ratios = {k: {m: v / ref[m] for m, v in f.items()} for k, f in figures.items()}
    print(
        f"{'run':32s} {'s/step':>7s} {'ex/s':>6s} {'tok/s':>7s} {'sup/s':>7s} {'wall s':>7s} "
        f"{'CPU s':>7s} {'tok/s x':>7s} {'CPU s x':>7s} {'loss':>7s} {'trainable':>10s}"
    )
    for key, (name, _, _) in variants.items():
        f, res = figures[key], results[key]
        print(
            f"{name + (' (as is)' if key == as_is else ''):32s} {f['s_per_step']:7.2f} "
            f"{f['examples_per_s']:6.2f} {f['tokens_per_s']:7.0f} {f['supervised_per_s']:7.1f} "
            f"{f['wall_s']:7.2f} {f['cpu_s']:7.2f} {ratios[key]['tokens_per_s']:7.2f} "
            f"{ratios[key]['cpu_s']:7.2f} {res['final_loss']:7.4f} "
            f"{res['trainable_params'] / 1e6:9.2f}M"
        )
    print(
        f"x = this run's figure / run 1's (as is): tok/s x > 1 and CPU s x < 1 = faster; "
        f"every ratio is in the JSON. Each run: {results[as_is]['examples']} examples, "
        f"{results[as_is]['tokens']:,} non-padding tokens, {results[as_is]['supervised']:,} "
        "supervised positions."
    )
    for method_top in dict.fromkeys(top for _, top, _ in variants.values()):
        on, off = label(method_top, True)[1], label(method_top, False)[1]
        gap = abs(results[on]["final_loss"] - results[off]["final_loss"])
        print(
            f"loss after {steps} steps, {label(method_top, False)[0].split(',')[0]}: bf16 off "
            f"{results[off]['final_loss']:.4f}, bf16 on {results[on]['final_loss']:.4f} "
            f"(|diff| {gap:.4f}: same method, should be noise)"
        )
    if yaml_top is not None:
        print(
            f"top {yaml_top} layers vs full fine-tuning: different methods (fewer trained "
            "parameters), their losses differ by design"
        )
    print(
        json.dumps(
            {
                "command": "python " + " ".join(sys.argv),
                "mode": "config",
                "config": args.config,
                "machine": machine,
                "model": setup.model_dir,
                "model_params": n_params,
                "model_dtype": str(setup.model.dtype).removeprefix("torch."),
                "examples": examples,
                "batch": batch,
                "steps": steps,
                "repeats": args.repeats,
                "as_is": as_is,
                "runs": {
                    key: {
                        "label": name,
                        "method": "full fine-tuning" if top is None else f"top {top} layers",
                        "train_top_layers": top,
                        "bf16": bf16,
                        **{m: round(v, 4) for m, v in figures[key].items()},
                        "ratio_vs_as_is": {m: round(v, 3) for m, v in ratios[key].items()},
                        "examples": results[key]["examples"],
                        "tokens": results[key]["tokens"],
                        "supervised": results[key]["supervised"],
                        "final_loss": round(results[key]["final_loss"], 5),
                        "mean_loss": round(results[key]["mean_loss"], 5),
                        "trainable_params": results[key]["trainable_params"],
                    }
                    for key, (name, top, bf16) in variants.items()
                },
            }
        )
    )


def bench_trl(args: argparse.Namespace) -> None:
    """The recipe's SFT stage (plum_sft.yaml) against a bare TRL SFTTrainer (module docstring)."""
    from recllm.models import resolve_model
    from recllm.testing import save_tiny_model

    tmp = Path(tempfile.mkdtemp(prefix="bench_sft."))

    model_dir = resolve_model(args.model) if args.model else str(save_tiny_model(tmp / "tiny"))
    model, tok, train = build_examples(model_dir, args.examples, args.seed)
    tokens = count_tokens(tok, train)
    yaml_cfg = recipe_sft_config(str(tmp / "probe"), args.batch, args.seed)
    print(f"command: python {' '.join(sys.argv)}")
    machine = describe_machine()
    print_machine(machine)
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
                "mode": "trl",
                "machine": machine,
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
    if args.config is None:
        if rest:
            p.error(f"unrecognized arguments: {' '.join(rest)} (recipe flags need --config)")
        if args.steps is not None:
            p.error("--steps needs --config (without it each run is one epoch)")
        args.examples = 512 if args.examples is None else args.examples
        bench_trl(args)
    else:
        args.steps = 8 if args.steps is None else args.steps
        bench_config(args, rest)


if __name__ == "__main__":
    main()
