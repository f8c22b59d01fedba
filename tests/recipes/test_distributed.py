"""recipes/plum_sft.py under real 2-process launches on CPU (gloo): DDP, FSDP2 and ZeRO-3.

Each run goes through ``accelerate launch --config_file recipes/accelerate/X.yaml`` with the
test harness (``distributed_harness.py``), which records from inside every rank what each rank
holds after each stage (per-parameter sha256 and local shard shape) and, gathered the
shard-aware way, the full weights. The command line overrides what a CPU cannot do of the
GPU-sized YAMLs: ``--num_processes 2``, ``--mixed_precision no``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from recllm.data import load_rec_dataset
from recllm.data.config import DataConfig
from recllm.testing import save_tiny_model
from recllm.vocab import extend_vocab, load_model_with_sids

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "plum_sft.py"
HARNESS = Path(__file__).with_name("distributed_harness.py")


@pytest.fixture(scope="module")
def ml100k_subset(shared_data_or_none) -> str:
    """ml-100k from ../shared when present, else the toolkit's own fetch (PyPI)."""
    if shared_data_or_none is not None:
        return str(shared_data_or_none / "ml-100k")
    return "ml-100k"


def launch(
    config: str, base: Path, out: Path, data: str, port: int, *extra: str, **env: str
) -> tuple[subprocess.CompletedProcess, Path]:
    """Two ranks of the recipe under ``recipes/accelerate/<config>.yaml``; returns the process
    and the harness record directory."""
    records = out.parent / f"{out.name}-records"
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [
        str(accelerate),
        "launch",
        "--config_file",
        str(ROOT / "recipes" / "accelerate" / f"{config}.yaml"),
        "--num_processes",
        "2",
        "--main_process_port",
        str(port),
        "--mixed_precision",
        "no",
        str(HARNESS),
        str(RECIPE),
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
        "2",
        "--max_steps",
        "3",
        "--max_train_examples",
        "96",
        "--per_device_train_batch_size",
        "4",
        "--learning_rate",
        "3e-3",
        "--logging_steps",
        "1",
        "--warmup_steps",
        "0",
        "--packing",
        "false",  # unpacked: each rank's batch is 4 distinct examples
        "--bf16",
        "false",  # exact comparisons (ZeRO-3 would keep bf16 copies of the weights)
        "--output_dir",
        str(out),
        *extra,
    ]
    full_env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "HARNESS_OUT": str(records),
        **env,
    }
    proc = subprocess.run(
        cmd, capture_output=True, text=True, cwd=out.parent, env=full_env, timeout=900
    )
    return proc, records


def ranks(records: Path, stage: str) -> list[dict]:
    return [json.loads((records / f"{stage}-rank{r}.json").read_text()) for r in (0, 1)]


def initial_model(base: Path, model_dir: Path, data: str):
    """The base model extended as the recipe extended it, before any training."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, _, sid_map = load_model_with_sids(model_dir)
    model = AutoModelForCausalLM.from_pretrained(base)
    tok = AutoTokenizer.from_pretrained(base)
    ds = load_rec_dataset(data, DataConfig(max_users=30))
    ext = extend_vocab(model, tok, sid_map, init="item_text", catalog=ds.catalog)
    return model, ext.ids()


def assert_sharded_run_saved_full_model(out: Path, records: Path, base: Path, data: str, kind):
    """Both stages ran sharded, the warm-up moved only the SID rows, and the saved model is the
    full trained model (what the ranks hold, gathered), reloadable with its SID map."""
    sft = ranks(records, out.name)
    for rank in sft:
        assert rank["distributed_type"] == kind and rank["world_size"] == 2
        emb = rank["params"]["model.embed_tokens.weight"]
        # each rank holds half of the embedding, not all of it: the run really was sharded
        assert torch.Size(emb["shape"]).numel() * 2 == torch.Size(emb["global"]).numel()
    assert sft[0]["params"].keys() == sft[1]["params"].keys()

    model, _, sid_map = load_model_with_sids(out / "model")
    assert len(sid_map) > 0
    saved = model.state_dict()
    gathered = torch.load(records / f"{out.name}-full.pt", weights_only=True)
    assert saved.keys() == gathered.keys()
    for name, tensor in gathered.items():
        assert saved[name].shape == tensor.shape == tuple(sft[0]["params"][name]["global"]), name
        assert torch.equal(saved[name].float(), tensor), name

    initial, ids = initial_model(base, out / "model", data)
    first = int(ids.min())
    warm = torch.load(records / "warmup-full.pt", weights_only=True)
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        start = initial.state_dict()[name]
        # the warm-up trains the SID rows only: every other row stays bit-identical
        assert torch.equal(warm[name][:first], start[:first]), name
        assert not torch.equal(warm[name][ids], start[ids]), name
        assert not torch.equal(saved[name][ids], start[ids]), name
    q = "model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(warm[q], initial.state_dict()[q])  # frozen during the warm-up
    assert not torch.equal(saved[q], initial.state_dict()[q])  # trained in SFT
    log = json.loads((out / "train_log.json").read_text())
    losses = [h["loss"] for h in log["sft"] if "loss" in h]
    assert log["world_size"] == 2 and len(losses) == 3
    assert all(torch.isfinite(torch.tensor(losses)))
    return model


@pytest.mark.parametrize(
    "moe",
    [False, pytest.param(True, marks=pytest.mark.slow)],  # budget: dense covers FSDP
    ids=["dense", "moe"],
)
def test_fsdp_trains_and_saves_full_model(tmp_path, moe, ml100k_subset):
    """fsdp.yaml (FSDP2, full state dict) on 2 CPU ranks: sharded training of both stages, the
    warm-up's row mask holds on sharded parameters, and the save gathers the full model.

    accelerate 1.15 never enables FSDP for CPU processes (it silently runs DDP): the harness
    lets the launcher's FSDP plugin through (``HARNESS_SHARD_ON_CPU``).
    """
    base = save_tiny_model(tmp_path / "base", moe=moe, tie_word_embeddings=False)
    out = tmp_path / "run"
    port = 29581 + int(moe)
    proc, records = launch("fsdp", base, out, ml100k_subset, port, HARNESS_SHARD_ON_CPU="1")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.count("saved to") == 1
    model = assert_sharded_run_saved_full_model(
        out, records, base, ml100k_subset, "DistributedType.FSDP"
    )
    assert model.config.model_type == ("qwen3_moe" if moe else "qwen3")
    assert model.config.architectures == [type(model).__name__]


@pytest.mark.slow  # ~130 s on the shared 2-core machine
def test_zero3_trains_and_saves_full_model(tmp_path, ml100k_subset):
    """zero3.yaml (DeepSpeed ZeRO-3) on 2 CPU ranks, tested like FSDP (``pip install deepspeed``;
    its CPU accelerator builds a small shared-memory comm op on first use)."""
    pytest.importorskip("deepspeed")
    base = save_tiny_model(tmp_path / "base", tie_word_embeddings=False)
    out = tmp_path / "run"
    proc, records = launch("zero3", base, out, ml100k_subset, 29583, HARNESS_SHARD_ON_CPU="1")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert_sharded_run_saved_full_model(
        out, records, base, ml100k_subset, "DistributedType.DEEPSPEED"
    )


@pytest.mark.slow  # 27 s: a launcher warning; the FSDP path itself is tested above
def test_fsdp_yaml_on_cpu_without_the_harness_warns_it_runs_ddp(tmp_path, ml100k_subset):
    """Stock accelerate on CPU drops FSDP and runs DDP; the recipe says so instead of
    pretending (and still trains and saves)."""
    base = save_tiny_model(tmp_path / "base", tie_word_embeddings=False)
    out = tmp_path / "run"
    proc, records = launch("fsdp", base, out, ml100k_subset, 29584, "--warmup_steps_embed", "0")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "the launcher asked for FSDP but accelerate runs DistributedType.MULTI_CPU" in (
        proc.stderr
    )
    assert ranks(records, out.name)[0]["distributed_type"] == "DistributedType.MULTI_CPU"
    load_model_with_sids(out / "model")


@pytest.mark.parametrize("allreduce", [True, False], ids=["ddp", "no_allreduce"])
def test_ddp_ranks_hold_identical_weights(tmp_path, allreduce, ml100k_subset):
    """ddp.yaml on 2 CPU ranks: after steps on different data per rank (the distributed sampler
    gives each rank its own 4 examples), both ranks hold bit-identical weights, in both stages.

    The control (``no_allreduce``) replaces DDP's gradient all-reduce with a hook that
    keeps each rank's own gradient: then the trained weights differ between the ranks, which is
    what the first case would see without all-reduce.
    """
    base = save_tiny_model(tmp_path / "base", tie_word_embeddings=False)
    out = tmp_path / "run"
    env = {} if allreduce else {"HARNESS_NO_ALLREDUCE": "1"}
    proc, records = launch("ddp", base, out, ml100k_subset, 29585 + int(allreduce), **env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = json.loads((out / "train_log.json").read_text())
    epochs = [h["epoch"] for h in log["sft"] if "loss" in h]
    assert epochs[-1] == pytest.approx(3 * 2 * 4 / 96)  # 2 ranks x 4 examples per step
    for stage in ("warmup", out.name):
        r0, r1 = ranks(records, stage)
        assert r0["distributed_type"] == "DistributedType.MULTI_CPU" and r0["world_size"] == 2
        trainable = [n for n in r0["params"] if n.startswith(("model.embed_tokens", "lm_head"))]
        if stage == out.name:
            trainable = list(r0["params"])
        same = {n: r0["params"][n]["sha256"] == r1["params"][n]["sha256"] for n in trainable}
        if allreduce:
            assert all(same.values()), [n for n, s in same.items() if not s][:5]
        else:
            assert not any(same.values()), [n for n, s in same.items() if s][:5]
    load_model_with_sids(out / "model")


@pytest.mark.slow  # a third 2-rank launch; the distillation itself is tested in one process
def test_fsdp_with_a_teacher_distills_on_every_rank(tmp_path, ml100k_subset):
    """--distill_weight under FSDP2 on 2 CPU ranks: rank 0 trains the teacher while rank 1
    waits, both read it, and the student's code logits come from the gathered LM head inside
    the forward: finite losses, a KL on every step that had a recommendation row."""
    base = save_tiny_model(tmp_path / "base", tie_word_embeddings=False)
    out = tmp_path / "run"
    distill = ("--distill_weight", "1.0", "--teacher_minutes", "0.05")
    proc, records = launch(
        "fsdp", base, out, ml100k_subset, 29584, *distill, HARNESS_SHARD_ON_CPU="1"
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert_sharded_run_saved_full_model(out, records, base, ml100k_subset, "DistributedType.FSDP")
    steps = [h for h in json.loads((out / "train_log.json").read_text())["sft"] if "loss" in h]
    assert all((h["distill_kl"] > 0) == (h["distill_items"] > 0) for h in steps)
    assert any(h["distill_items"] > 0 for h in steps)
    assert (out / "teacher" / "sasrec.json").is_file()
