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
    # --quiet: on a failed run accelerate prints no CalledProcessError traceback of its own
    cmd = [str(accelerate), "launch", *(launch or ["--quiet", "--cpu", "--num_processes", "1"])]
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


@pytest.mark.parametrize(
    "moe",
    # budget: the MoE path of run_plum also runs in tests/think (onerec_think from a MoE base)
    [False, pytest.param(True, marks=pytest.mark.slow)],
    ids=["dense", "moe"],
)
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

    # the PLUM recipe's YAMLs: every one but those of another recipe script (recipes/seqlm.py
    # parses seqlm.yaml and seqlm_items.yaml; tests/recipes/test_seqlm.py checks them)
    own = [
        p
        for p in sorted((ROOT / "recipes").glob("*.yaml"))
        if p.stem == "plum_sft"
        or not ((ROOT / "recipes" / f"{p.stem}.py").exists() or p.stem.startswith("seqlm_"))
    ]
    assert [p.name for p in own] == ["chat_ml100k.yaml", "plum_sft.yaml", "quickstart.yaml"]
    for path in own:
        parsed = parse_recipe_args(["--config", str(path)])
        keys = set(yaml.safe_load(path.read_text()))
        assert keys, path
        _, data, _, _, sft, model = parsed
        assert model.model_name_or_path and sft.output_dir and data.data_path
    for path in sorted((ROOT / "recipes" / "accelerate").glob("*.yaml")):
        cfg = yaml.safe_load(path.read_text())
        assert cfg["distributed_type"] in {"MULTI_GPU", "FSDP", "DEEPSPEED"}, path


def recipe(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, str(RECIPE), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=600,
    )


def bad_yaml(tmp_path: Path, name: str, line: str) -> str:
    bad = tmp_path / name
    shutil.copy(ROOT / "recipes" / "plum_sft.yaml", bad)
    with open(bad, "a") as f:
        f.write(line)
    return str(bad)


@pytest.mark.parametrize(
    ("line", "expect"),
    [
        (
            "learnin_rate: 1.0\n",
            "[key 'learnin_rate']: unknown key. Fix: did you mean 'learning_rate'?",
        ),
        ("mixture: [1,\n", "invalid YAML ("),
    ],
    ids=["yaml_key", "yaml_syntax"],
)
def test_config_file_errors_name_the_file_and_line_or_key(tmp_path, line, expect):
    from recllm.errors import UserError
    from recllm.train.plum import parse_recipe_args

    config = ROOT / "recipes" / "plum_sft.yaml"
    bad = bad_yaml(tmp_path, "bad.yaml", line)
    with pytest.raises(UserError) as e:
        parse_recipe_args(["--config", bad])
    assert expect in str(e.value) and str(e.value).startswith(bad)
    if "YAML" in expect:  # the line where the parser gave up: the end of the file
        assert str(e.value).startswith(f"{bad}:{len(config.read_text().splitlines()) + 2}:")


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (
            ["--max_steps", "abc"],
            "command line: argument --max_steps/--max-steps: invalid int value: 'abc'",
        ),
        (["--max_stepz", "3"], "--max_stepz: unknown flag. Fix: did you mean --max_steps?"),
        (["--config", "missing.yaml"], "--config missing.yaml: no such file"),
    ],
    ids=["int_value", "flag", "config_file"],
)
def test_bad_flags_are_one_user_error(args, expect):
    from recllm.errors import UserError
    from recllm.train.plum import parse_recipe_args

    if args[0] != "--config":
        args = ["--config", str(ROOT / "recipes" / "plum_sft.yaml"), *args]
    with pytest.raises(UserError) as e:
        parse_recipe_args(args)
    assert str(e.value).startswith(expect) and ". Fix: " in str(e.value)


@pytest.mark.parametrize(
    "case",
    # budget: bad flags are also checked in-process (test_bad_flags_are_one_user_error)
    [pytest.param("flag", marks=pytest.mark.slow), "model", "data"],
)
def test_recipe_errors_are_one_line_and_write_nothing(tmp_path, case, ml100k_subset):
    """As a user sees them: exit 2, one `plum_sft: error: WHERE: WHAT. Fix: HOW` line, no
    traceback, no usage dump, and no output directory left behind (the model and the data are
    checked before the SID build and before anything is written)."""
    base = save_tiny_model(tmp_path / "base")
    out = tmp_path / "run"
    config = str(ROOT / "recipes" / "plum_sft.yaml")
    args, expect = {
        "flag": (
            ["--model_name_or_path", str(base), "--data_path", ml100k_subset, "--max_stepz", "3"],
            "did you mean --max_steps",
        ),
        "model": (
            ["--model_name_or_path", str(tmp_path / "nope"), "--data_path", ml100k_subset],
            "nope",
        ),
        "data": (
            ["--model_name_or_path", str(base), "--data_path", str(tmp_path / "nodata")],
            "nodata",
        ),
    }[case]
    proc = recipe("--config", config, *args, "--output_dir", str(out), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("plum_sft: error: "), proc.stderr[-3000:]
    assert expect in errors[0] and "Fix: " in errors[0]
    assert "Traceback" not in proc.stderr and "usage:" not in proc.stderr
    assert not out.exists()


def test_a_rerun_never_reuses_stale_artifacts(tmp_path, ml100k_subset):
    """Other settings into the same --output_dir stop with the keys that differ; the same
    settings reuse the SID map; --overwrite_output_dir rebuilds."""
    base = save_tiny_model(tmp_path / "base")
    out = tmp_path / "run"
    first = run_small(base, out, ml100k_subset, "--max_steps", "2", accelerate=False)
    assert first.returncode == 0, first.stderr[-3000:]
    sid_file = out / "sids" / "sid_map.json"
    built = sid_file.stat().st_mtime_ns
    model_file = next((out / "model").glob("*.safetensors"))
    trained = model_file.read_bytes()

    for flags, diff in [
        (("--codebook_size", "32"), "sid.codebook_size: 16 -> 32"),
        (("--max_users", "40"), "data.max_users: 30 -> 40"),
    ]:
        proc = run_small(base, out, ml100k_subset, "--max_steps", "2", *flags, accelerate=False)
        assert proc.returncode != 0 and diff in proc.stderr, proc.stderr[-3000:]
        assert "--overwrite_output_dir true" in proc.stderr and "Traceback" not in proc.stderr
        assert sid_file.stat().st_mtime_ns == built and model_file.read_bytes() == trained

    again = run_small(base, out, ml100k_subset, "--max_steps", "2", accelerate=False)
    assert again.returncode == 0, again.stderr[-3000:]
    assert sid_file.stat().st_mtime_ns == built  # same settings: the SID map is reused

    over = run_small(
        base,
        out,
        ml100k_subset,
        "--max_steps",
        "2",
        "--codebook_size",
        "32",
        "--overwrite_output_dir",
        "true",
        accelerate=False,
    )
    assert over.returncode == 0, over.stderr[-3000:]
    _, _, sid_map = load_model_with_sids(out / "model")
    assert sid_map.codebook_sizes == (32, 32, 32)
    assert json.loads((out / "resolved_config.json").read_text())["sid"]["codebook_size"] == 32


def run_small(
    base: Path,
    out: Path,
    data: str,
    *extra: str,
    launch: list[str] | None = None,
    accelerate: bool = True,
):
    """A small recipe run; ``accelerate=False`` runs ``python recipes/plum_sft.py`` directly
    (one process either way; saves accelerate's start-up where the launcher is not the point)."""
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
    if not accelerate:
        return recipe(*args, cwd=out.parent)
    return accelerate_launch(*args, cwd=out.parent, launch=launch)


#: A small LoRA run that learns within a dozen steps on the tiny model.
LORA_ARGS = ("--use_peft", "--lora_r", "4", "--max_steps", "12", "--learning_rate", "1e-2")


def assert_adapters_merged_and_old_rows_kept(model_dir: Path, base: Path, data: str):
    """The merged (Q)LoRA moved the linear layers and the SID rows (from their initialization,
    rebuilt here with the run's own SID map); embedding rows below the SIDs are untouched."""
    model, tok, sid_map = load_model_with_sids(model_dir)
    ref = type(model).from_pretrained(base)
    first = tok.convert_tokens_to_ids("<|sid_begin|>")
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        new, old = model.state_dict()[name], ref.state_dict()[name]
        assert torch.equal(new[:first], old[:first]), name
    init = type(model).from_pretrained(base)
    init_tok = type(tok).from_pretrained(base)
    catalog = load_rec_dataset(data, DataConfig(max_users=30)).catalog
    ids = extend_vocab(init, init_tok, sid_map, init="item_text", catalog=catalog).ids()
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        moved = (model.state_dict()[name][ids] - init.state_dict()[name][ids]).abs().amax(1)
        # every code some training text used moved: the SID rows trained through the adapter
        assert (moved > 0).float().mean() > 0.5, (name, moved)
    q_new = model.state_dict()["model.layers.0.self_attn.q_proj.weight"]
    q_old = ref.state_dict()["model.layers.0.self_attn.q_proj.weight"]
    assert not torch.equal(q_new, q_old)
    return model


@pytest.mark.parametrize(
    "tied",
    [True, pytest.param(False, marks=pytest.mark.slow)],  # budget: tied covers LoRA
    ids=["tied", "untied"],
)
def test_lora_trains_adapters_and_only_sid_rows(tmp_path, tied, ml100k_subset):
    base = save_tiny_model(tmp_path / "base", tie_word_embeddings=tied)
    out = tmp_path / "run"
    # no warm-up: whatever moved the SID rows is the LoRA stage
    proc = run_small(base, out, ml100k_subset, *LORA_ARGS, "--warmup_steps_embed", "0")
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = json.loads((out / "train_log.json").read_text())
    losses = [h["loss"] for h in log["sft"] if "loss" in h]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    model = assert_adapters_merged_and_old_rows_kept(out / "model", base, ml100k_subset)
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == tied


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
    model = assert_adapters_merged_and_old_rows_kept(out / "model", base, ml100k_subset)
    assert model.model.layers[0].self_attn.q_proj.weight.dtype == torch.float32


def test_quantized_base_without_peft_is_refused(tmp_path, ml100k_subset):
    pytest.importorskip("bitsandbytes")
    base = save_tiny_model(tmp_path / "base")
    # without accelerate's launcher: the refusal is the recipe's, not the launch's
    proc = run_small(
        base,
        tmp_path / "run",
        ml100k_subset,
        "--load_in_4bit",
        "--max_steps",
        "2",
        accelerate=False,
    )
    assert proc.returncode == 2
    assert (
        "--load_in_4bit/--load_in_8bit: a quantized base only trains through adapters"
        in proc.stderr
    )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--train_top_layers", "0"], "--train_top_layers 0: must be at least 1"),
        (
            ["--train_top_layers", "6", "--use_peft", "true"],
            "--train_top_layers 6: freezes layers of a full fine-tuning",
        ),
        (["--init_weights", "scratch"], "--init_weights scratch: is not a weight initialisation"),
    ],
)
def test_train_top_layers_errors_before_anything_is_written(tmp_path, flags, message):
    from recllm.baselines.sasrec import run_teacher
    from recllm.errors import UserError
    from recllm.train.plum import parse_recipe_args, run_plum

    out = tmp_path / "run"
    configs = parse_recipe_args(
        ["--config", str(ROOT / "recipes" / "quickstart.yaml"), "--output_dir", str(out), *flags]
    )
    with pytest.raises(UserError) as err:
        run_plum(*configs, teacher_provider=run_teacher)  # the quickstart distils
    assert str(err.value).startswith(message)
    assert not out.exists()


def test_single_cpu_thread_under_accelerate_is_named():
    from recllm.train.recipe_args import warn_single_cpu_thread

    launched = {"ACCELERATE_MIXED_PRECISION": "no", "OMP_NUM_THREADS": "1"}
    message = warn_single_cpu_thread(launched, cores=2)
    assert message and "--num_cpu_threads_per_process 2" in message
    assert warn_single_cpu_thread({**launched, "OMP_NUM_THREADS": "2"}, cores=2) is None
    assert warn_single_cpu_thread({**launched, "WORLD_SIZE": "2"}, cores=2) is None  # 1 each
    assert warn_single_cpu_thread({"OMP_NUM_THREADS": "1"}, cores=2) is None  # not launched
    assert "--num_cpu_threads_per_process 8" in warn_single_cpu_thread(launched, cores=8)


def test_distillation_joins_the_chat_model_sft(tmp_path, ml100k_subset):
    """--distill_weight on the chat recipe (LoRA, so the teacher's hook sits under PEFT): a
    SASRec teacher is trained into OUTPUT_DIR/teacher and every SFT step distills the
    recommendation rows' completions (their prompts list the history's SIDs)."""
    base = save_tiny_model(tmp_path / "base", tie_word_embeddings=True)
    out = tmp_path / "run"
    distill = ("--distill_weight", "1.0", "--teacher_minutes", "0.05")
    proc = run_small(base, out, ml100k_subset, *LORA_ARGS, *distill, accelerate=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = json.loads((out / "train_log.json").read_text())
    steps = [h for h in log["sft"] if "loss" in h]
    assert len(steps) == 12
    # a step's KL is positive exactly when its batch held a row to distill (history + target)
    assert all((h["distill_kl"] > 0) == (h["distill_items"] > 0) for h in steps)
    assert sum(h["distill_items"] > 0 for h in steps) >= 6, steps
    assert log["teacher"]["dir"] == str(out / "teacher")
    assert (out / "teacher" / "sasrec.json").is_file()
    assert "distill_kl" not in json.dumps(log["warmup"])  # the warm-up trains SID rows only
