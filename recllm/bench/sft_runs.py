"""The SFT-speed benchmark's runs (``scripts/bench_sft.py``): the examples as the PLUM recipe
builds them, one timed SFT stage per variant, and what the machine is.

:mod:`recllm.bench.sft_speed` drives these runs side by side and reports them.
"""

from __future__ import annotations

import contextlib
import copy
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from recllm.bench.machine import cpu_name

__all__ = [
    "BatchProbe",
    "ConfigSetup",
    "build_config_examples",
    "build_examples",
    "count_tokens",
    "describe_machine",
    "machine_text",
    "recipe_sft_config",
    "run_bare",
    "run_config",
    "run_recipe",
]

ROOT = Path(__file__).resolve().parents[2]


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

    return {
        "cpu": cpu_name(),
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


def machine_text(machine: dict[str, object]) -> str:
    """The printed machine line of :func:`describe_machine`'s record."""
    import trl

    env = " ".join(f"{k}={v}" for k, v in machine["env"].items()) or "no ISA caps set"
    return (
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
