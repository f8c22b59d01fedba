"""The SFT-speed benchmark (``scripts/bench_sft.py``): the recipe's SFT stage against a bare TRL
``SFTTrainer``, or a recipe configuration's speed options side by side.

:func:`bench_trl` and :func:`bench_config` run the variants of :mod:`recllm.bench.sft_runs`
alternately over the rounds (the best time counts), hand every report line to ``emit`` (the
script prints them) and return the figures of the last output line.
"""

from __future__ import annotations

import copy
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from recllm.bench.sft_runs import (
    build_config_examples,
    build_examples,
    count_tokens,
    describe_machine,
    machine_text,
    recipe_sft_config,
    run_bare,
    run_config,
    run_recipe,
)

__all__ = ["bench_config", "bench_trl", "matmul_flops_per_s", "step_flops"]


def step_flops(model: Any, tokens: int, supervised: int, top: int | None) -> float:
    """Matmul FLOPs of one run: every decoder layer's linear weights forward over ``tokens``
    (2 per weight and token), the trained layers' backward (4: input and weight gradients;
    all layers for full fine-tuning), and the LM head's rows over the ``supervised``
    positions forward and back to the hidden state (2 + 2 per weight). Attention scores,
    norms and the optimizer are left out, so the share below is a lower bound."""
    layers = model.get_decoder().layers
    per_layer = [
        sum(p.numel() for n, p in layer.named_parameters() if p.dim() == 2) for layer in layers
    ]
    trained = per_layer if top is None else per_layer[len(per_layer) - top :]
    head = model.get_output_embeddings().weight.numel()
    return 2.0 * sum(per_layer) * tokens + 4.0 * sum(trained) * tokens + 4.0 * head * supervised


def matmul_flops_per_s(rows: int, hidden: int, inner: int, bf16: bool, repeats: int = 20) -> float:
    """A bare ``(rows, hidden) @ (hidden, inner)`` matmul's FLOP/s on these cores and threads,
    in float32 or bfloat16 (the best of ``repeats``): the ceiling a training step's matmuls
    of that shape could reach here."""
    import torch

    dtype = torch.bfloat16 if bf16 else torch.float32
    a = torch.randn(rows, hidden, dtype=dtype)
    b = torch.randn(hidden, inner, dtype=dtype)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2.0 * rows * hidden * inner / best


def bench_config(args: Any, recipe_flags: list[str], emit: Callable[[str], None]) -> dict:
    """The configuration's speed options side by side (module docstring)."""
    machine = describe_machine()
    tmp = Path(tempfile.mkdtemp(prefix="bench_sft."))
    steps, batch = args.steps, args.batch
    model_dir = args.model
    setup = build_config_examples(args.config, model_dir, args.seed, recipe_flags)
    if args.examples is not None and args.examples > len(setup.train):
        raise SystemExit(f"--examples {args.examples}: the configuration builds {len(setup.train)}")
    # default: each example once (fewer when the configuration builds fewer: they repeat)
    examples = min(args.examples or steps * batch, len(setup.train))
    setup.train = setup.train.select(range(examples))
    n_params = sum(p.numel() for p in setup.model.parameters())
    layers = setup.model.config.num_hidden_layers
    emit(f"command: python {' '.join(sys.argv)}")
    emit(machine_text(machine))
    emit(
        f"model: {setup.model_dir} ({n_params / 1e6:.1f}M params with the SID rows, {layers} "
        f"layers, {setup.model.dtype}); config {args.config}: mixture {setup.mixture}, "
        f"train_top_layers {setup.train_top_layers}, bf16 {setup.sft.bf16}"
    )
    emit(
        f"sizes: {examples} examples, batch {batch}, {steps} steps per run, best of "
        f"{args.repeats} alternating rounds"
    )
    if not machine["bf16_native"]:
        emit("  (no native bf16 here: the bf16-on runs use emulated bf16, as measured)")

    variants = _variants(setup.train_top_layers, bool(setup.sft.bf16))
    as_is = next(iter(variants))
    results = _run_rounds(setup, variants, tmp, args, emit)
    figures = {k: _rates(v, steps) for k, v in results.items()}
    shapes = setup.model.config
    rows = max(1, results[as_is]["tokens"] // steps)  # a step's tokens: the matmuls' rows
    ceiling = {
        bf16: matmul_flops_per_s(rows, shapes.hidden_size, shapes.intermediate_size, bf16)
        for bf16 in (False, True)
    }
    for key, (_, top, bf16) in variants.items():
        res = results[key]
        flops = step_flops(setup.model, res["tokens"], res["supervised"], top)
        figures[key]["gflops_per_s"] = flops / res["wall"] / 1e9
        figures[key]["matmul_share"] = flops / res["wall"] / ceiling[bf16]
    ref = figures[as_is]
    # this run's figure / run 1's: seconds < 1 and rates > 1 = faster than the config as is
    ratios = {k: {m: v / ref[m] for m, v in f.items()} for k, f in figures.items()}
    for line in _config_lines(variants, figures, ratios, results, steps, setup.train_top_layers):
        emit(line)
    emit(
        f"bare matmul ({rows} x {shapes.hidden_size} @ {shapes.hidden_size} x "
        f"{shapes.intermediate_size}, these threads): {ceiling[False] / 1e9:.1f} GFLOP/s float32, "
        f"{ceiling[True] / 1e9:.1f} GFLOP/s bf16"
    )
    for key, (name, _, bf16) in variants.items():
        emit(
            f"  {name}: {figures[key]['gflops_per_s']:.1f} GFLOP/s of the step's matmuls = "
            f"{figures[key]['matmul_share']:.0%} of the bare {'bf16' if bf16 else 'float32'} matmul"
        )
    return dict(
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
            "matmul_gflops_per_s": {
                "float32": round(ceiling[False] / 1e9, 2),
                "bf16": round(ceiling[True] / 1e9, 2),
            },
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


def _label(top: int | None, bf16: bool) -> tuple[str, str]:
    """A variant's printed name and its key in the JSON."""
    method = f"top {top} layers" if top is not None else "full fine-tuning"
    key = f"top{top}" if top is not None else "full"
    return f"{method}, bf16 {'on' if bf16 else 'off'}", f"{key}_bf16_{'on' if bf16 else 'off'}"


def _variants(yaml_top: int | None, yaml_bf16: bool) -> dict[str, tuple[str, int | None, bool]]:
    """The configuration as is first, bf16 flipped, then full fine-tuning off and on."""
    variants: dict[str, tuple[str, int | None, bool]] = {}
    for top, bf16 in [
        (yaml_top, yaml_bf16),
        (yaml_top, not yaml_bf16),
        (None, False),
        (None, True),
    ]:
        name, key = _label(top, bf16)
        variants.setdefault(key, (name, top, bf16))  # a YAML without top layers: 2 runs
    return variants


def _run_rounds(
    setup: Any, variants: dict, tmp: Path, args: Any, emit: Callable[[str], None]
) -> dict[str, dict[str, float]]:
    """Every variant once per round, alternating; the best wall and CPU seconds count."""
    results: dict[str, dict[str, float]] = {}
    for r in range(args.repeats):
        for i, (key, (name, top, bf16)) in enumerate(variants.items()):
            out = str(tmp / f"run{r}_{i}")
            res = run_config(setup, out, args.steps, args.batch, args.seed, top, bf16)
            emit(
                f"  round {r + 1}: {name}: {res['wall']:.2f} s wall, {res['cpu']:.2f} s CPU, "
                f"loss {res['final_loss']:.4f}"
            )
            best = results.get(key)
            if best is None:
                results[key] = res
            else:
                best["wall"] = min(best["wall"], res["wall"])
                best["cpu"] = min(best["cpu"], res["cpu"])
    return results


def _rates(res: dict[str, float], steps: int) -> dict[str, float]:
    return {
        "s_per_step": res["wall"] / steps,
        "examples_per_s": res["examples"] / res["wall"],
        "tokens_per_s": res["tokens"] / res["wall"],
        "supervised_per_s": res["supervised"] / res["wall"],
        "wall_s": res["wall"],
        "cpu_s": res["cpu"],
    }


def _config_lines(
    variants: dict, figures: dict, ratios: dict, results: dict, steps: int, yaml_top: int | None
) -> list[str]:
    """The table of the variants, the loss of each method with bf16 off and on."""
    as_is = next(iter(variants))
    lines: list[str] = []
    emit = lines.append
    emit(
        f"{'run':32s} {'s/step':>7s} {'ex/s':>6s} {'tok/s':>7s} {'sup/s':>7s} {'wall s':>7s} "
        f"{'CPU s':>7s} {'tok/s x':>7s} {'CPU s x':>7s} {'loss':>7s} {'trainable':>10s}"
    )
    for key, (name, _, _) in variants.items():
        f, res = figures[key], results[key]
        emit(
            f"{name + (' (as is)' if key == as_is else ''):32s} {f['s_per_step']:7.2f} "
            f"{f['examples_per_s']:6.2f} {f['tokens_per_s']:7.0f} {f['supervised_per_s']:7.1f} "
            f"{f['wall_s']:7.2f} {f['cpu_s']:7.2f} {ratios[key]['tokens_per_s']:7.2f} "
            f"{ratios[key]['cpu_s']:7.2f} {res['final_loss']:7.4f} "
            f"{res['trainable_params'] / 1e6:9.2f}M"
        )
    emit(
        f"x = this run's figure / run 1's (as is): tok/s x > 1 and CPU s x < 1 = faster; "
        f"every ratio is in the JSON. Each run: {results[as_is]['examples']} examples, "
        f"{results[as_is]['tokens']:,} non-padding tokens, {results[as_is]['supervised']:,} "
        "supervised positions."
    )
    for method_top in dict.fromkeys(top for _, top, _ in variants.values()):
        on, off = _label(method_top, True)[1], _label(method_top, False)[1]
        gap = abs(results[on]["final_loss"] - results[off]["final_loss"])
        emit(
            f"loss after {steps} steps, {_label(method_top, False)[0].split(',')[0]}: bf16 off "
            f"{results[off]['final_loss']:.4f}, bf16 on {results[on]['final_loss']:.4f} "
            f"(|diff| {gap:.4f}: same method, should be noise)"
        )
    if yaml_top is not None:
        emit(
            f"top {yaml_top} layers vs full fine-tuning: different methods (fewer trained "
            "parameters), their losses differ by design"
        )
    return lines


def _trl_runs(tok: Any, train: Any, args: Any) -> dict[str, Callable[[Any, str], float]]:
    """The five runs, each ``(model, output_dir) -> seconds``."""
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
    return runs


def bench_trl(args: Any, emit: Callable[[str], None]) -> dict:
    """The recipe's SFT stage (plum_sft.yaml) against a bare TRL SFTTrainer (module docstring)."""
    from recllm.models import resolve_model

    tmp = Path(tempfile.mkdtemp(prefix="bench_sft."))

    model_dir = resolve_model(args.model)
    model, tok, train = build_examples(model_dir, args.examples, args.seed)
    tokens = count_tokens(tok, train)
    yaml_cfg = recipe_sft_config(str(tmp / "probe"), args.batch, args.seed)
    emit(f"command: python {' '.join(sys.argv)}")
    machine = describe_machine()
    emit(machine_text(machine))
    emit(
        f"model: {model_dir} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params), "
        f"{args.examples} examples, {tokens:,} tokens, batch {args.batch}, "
        f"best of {args.repeats} alternating rounds"
    )
    runs = _trl_runs(tok, train, args)
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
            emit(f"  round {r + 1}: {name}: {seconds:.2f} s wall, {cpu:.2f} s CPU")

    names = list(runs)
    keys = ["bare", "recipe", "recipe_dense_head", "recipe_random_batches", "recipe_packed"]
    rates = {n: tokens / best[n] for n in names}
    emit(
        f"{'run':40s} {'seconds':>8s} {'tokens/s':>9s} {'vs bare':>8s} {'CPU s':>8s} {'vs bare':>8s}"
    )
    for n in names:
        emit(
            f"{n:40s} {best[n]:8.2f} {rates[n]:9.0f} {rates[n] / rates[names[0]]:8.2f} "
            f"{best_cpu[n]:8.2f} {best_cpu[names[0]] / best_cpu[n]:8.2f}"
        )
    ratios = {k: rates[n] / rates[names[0]] for k, n in zip(keys, names, strict=True)}
    cpu_ratios = {k: best_cpu[names[0]] / best_cpu[n] for k, n in zip(keys, names, strict=True)}
    emit(
        f"ratio recipe / bare TRL: {ratios['recipe']:.2f} (targets: >= 1.0; >= 1.5 with "
        f"padding-free batching or packing)"
    )
    return dict(
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
