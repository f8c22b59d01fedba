"""recipes/plum_sft.py as users launch it: `accelerate launch`, tiny Qwen3 / Qwen3-MoE, ml-100k."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from recllm.data import load_rec_dataset
from recllm.data.config import DataConfig
from recllm.testing import save_tiny_model
from recllm.vocab import extend_vocab, load_model_with_sids

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "plum_sft.py"


def accelerate_launch(
    *args: str, cwd: Path, launch: list[str] | None = None
) -> subprocess.CompletedProcess:
    """Run the recipe as users do; one CPU process unless ``launch`` says otherwise."""
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", *(launch or ["--cpu", "--num_processes", "1"])]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [*cmd, str(RECIPE), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=900
    )


@pytest.fixture(scope="module")
def ml100k_subset(shared_data_or_none, tmp_path_factory) -> str:
    """ml-100k from ../shared when present, else the toolkit's own fetch (PyPI)."""
    if shared_data_or_none is not None:
        return str(shared_data_or_none / "ml-100k")
    return "ml-100k"


@pytest.mark.parametrize("moe", [False, True], ids=["dense", "moe"])
def test_recipe_trains_and_saves(tmp_path, moe, ml100k_subset):
    base = save_tiny_model(tmp_path / "base", moe=moe, tie_word_embeddings=False)
    out = tmp_path / "run"
    proc = accelerate_launch(
        "--config",
        str(ROOT / "recipes" / "plum_sft.yaml"),
        "--model_name_or_path",
        str(base),
        "--data_path",
        ml100k_subset,
        "--max_users",
        "40",
        "--codebook_size",
        "16",
        "--warmup_steps_embed",
        "5",
        "--max_steps",
        "25",
        "--learning_rate",
        "3e-3",
        "--warmup_steps",
        "0",
        "--per_device_train_batch_size",
        "8",
        "--max_train_examples",
        "200",
        "--logging_steps",
        "1",
        "--output_dir",
        str(out),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert f"saved to {out / 'model'}" in proc.stdout
    resolved = json.loads((out / "resolved_config.json").read_text())
    assert (
        resolved["sft"]["train_sampling_strategy"] == "group_by_length"
        and resolved["data"]["max_users"] == 40
    )
    assert resolved["model"]["model_name_or_path"] == str(base) and resolved["versions"]["trl"]
    log = json.loads((out / "train_log.json").read_text())
    losses = [h["loss"] for h in log["sft"] if "loss" in h]
    assert len(losses) == 25 and all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5  # it learns
    assert len([h for h in log["warmup"] if "loss" in h]) == 5

    model, tok, sid_map = load_model_with_sids(out / "model")
    assert len(sid_map) > 0 and (out / "sids" / "metrics.json").is_file()
    # SID rows moved away from their initialization
    fresh = type(model).from_pretrained(base)
    fresh_tok = type(tok).from_pretrained(base)
    ds = load_rec_dataset(ml100k_subset, DataConfig(max_users=40))
    ext = extend_vocab(fresh, fresh_tok, sid_map, init="item_text", catalog=ds.catalog)
    ids = ext.ids()
    trained = model.get_input_embeddings().weight[ids]
    initial = fresh.get_input_embeddings().weight[ids]
    assert not torch.allclose(trained, initial)
    assert model.config.model_type == ("qwen3_moe" if moe else "qwen3")


def test_every_recipe_yaml_parses():
    from recllm.train.plum import parse_recipe_args

    for path in sorted((ROOT / "recipes").glob("*.yaml")):
        parsed = parse_recipe_args(["--config", str(path)])
        keys = set(yaml.safe_load(path.read_text()))
        assert keys, path
        _, data, _, _, sft, model = parsed
        assert model.model_name_or_path and sft.output_dir and data.data_path
    for path in sorted((ROOT / "recipes" / "accelerate").glob("*.yaml")):
        cfg = yaml.safe_load(path.read_text())
        assert cfg["distributed_type"] in {"MULTI_GPU", "FSDP", "DEEPSPEED"}, path


def test_unknown_yaml_key_fails(tmp_path):
    bad = tmp_path / "bad.yaml"
    shutil.copy(ROOT / "recipes" / "plum_sft.yaml", bad)
    with open(bad, "a") as f:
        f.write("learnin_rate: 1.0\n")
    proc = subprocess.run(
        [sys.executable, str(RECIPE), "--config", str(bad)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode != 0 and "learnin_rate" in proc.stderr


def run_small(base: Path, out: Path, data: str, *extra: str, launch: list[str] | None = None):
    args = [
        "--config",
        str(ROOT / "recipes" / "plum_sft.yaml"),
        "--model_name_or_path",
        str(base),
        "--data_path",
        data,
        "--max_users",
        "30",
        "--codebook_size",
        "16",
        "--warmup_steps_embed",
        "3",
        "--max_train_examples",
        "96",
        "--per_device_train_batch_size",
        "4",
        "--logging_steps",
        "1",
        "--warmup_steps",
        "0",
        "--output_dir",
        str(out),
        *extra,
    ]
    return accelerate_launch(*args, cwd=out.parent, launch=launch)


#: A small LoRA run that learns within a dozen steps on the tiny model.
LORA_ARGS = ("--use_peft", "--lora_r", "4", "--max_steps", "12", "--learning_rate", "1e-2")


def assert_adapters_merged_and_old_rows_kept(model_dir: Path, base: Path):
    """The merged (Q)LoRA moved the linear layers; embedding rows below the SIDs are untouched."""
    model, tok, _ = load_model_with_sids(model_dir)
    ref = type(model).from_pretrained(base)
    first = tok.convert_tokens_to_ids("<|sid_begin|>")
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        new, old = model.state_dict()[name], ref.state_dict()[name]
        assert torch.equal(new[:first], old[:first]), name
    q_new = model.state_dict()["model.layers.0.self_attn.q_proj.weight"]
    q_old = ref.state_dict()["model.layers.0.self_attn.q_proj.weight"]
    assert not torch.equal(q_new, q_old)
    return model


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_lora_trains_adapters_and_only_sid_rows(tmp_path, tied, ml100k_subset):
    base = save_tiny_model(tmp_path / "base", tie_word_embeddings=tied)
    out = tmp_path / "run"
    proc = run_small(base, out, ml100k_subset, *LORA_ARGS)
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = json.loads((out / "train_log.json").read_text())
    losses = [h["loss"] for h in log["sft"] if "loss" in h]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    model = assert_adapters_merged_and_old_rows_kept(out / "model", base)
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == tied


def test_two_process_data_parallel(tmp_path, ml100k_subset):
    """Two real gloo ranks (`--multi_gpu` on CPU; `--cpu --num_processes 2` runs one process)."""
    base = save_tiny_model(tmp_path / "base")
    out = tmp_path / "run"
    launch = ["--multi_gpu", "--num_processes", "2", "--main_process_port", "29561"]
    # unpacked, so that an epoch is a known number of rows
    proc = run_small(
        base, out, ml100k_subset, "--max_steps", "6", "--packing", "false", launch=launch
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = json.loads((out / "train_log.json").read_text())
    assert log["world_size"] == 2
    epochs = [h["epoch"] for h in log["sft"] if "loss" in h]
    # each step consumes 2 ranks x 4 examples of the 96
    assert epochs[-1] == pytest.approx(6 * 2 * 4 / 96)
    assert proc.stdout.count("saved to") == 1  # rank 0 saves
    load_model_with_sids(out / "model")


def test_qlora_4bit_base_merges_into_full_precision(tmp_path, ml100k_subset):
    pytest.importorskip("bitsandbytes")
    base = save_tiny_model(tmp_path / "base")
    out = tmp_path / "run"
    proc = run_small(base, out, ml100k_subset, *LORA_ARGS, "--load_in_4bit")
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = json.loads((out / "train_log.json").read_text())
    assert log["quantized"] == "4bit" and "warmup" not in log
    losses = [h["loss"] for h in log["sft"] if "loss" in h]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    model = assert_adapters_merged_and_old_rows_kept(out / "model", base)
    assert model.model.layers[0].self_attn.q_proj.weight.dtype == torch.float32


def test_quantized_base_without_peft_is_refused(tmp_path, ml100k_subset):
    pytest.importorskip("bitsandbytes")
    base = save_tiny_model(tmp_path / "base")
    proc = run_small(base, tmp_path / "run", ml100k_subset, "--load_in_4bit", "--max_steps", "2")
    assert proc.returncode != 0
    assert "--load_in_4bit/--load_in_8bit need --use_peft" in proc.stderr
