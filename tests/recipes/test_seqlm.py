"""recipes/seqlm.py as users run it: the YAML parses into its dataclasses, and a tiny run writes
model directories that `recllm eval` scores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import yaml
from trl import SFTConfig

from recllm.baselines.sasrec import run_teacher
from recllm.data import DataConfig
from recllm.errors import UserError
from recllm.sid.config import SIDConfig
from recllm.testing import save_tiny_recommender
from recllm.train.recipe_args import parse_recipe_args
from recllm.train.seqlm import SeqLMArguments

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "seqlm.py"
YAML = ROOT / "recipes" / "seqlm.yaml"
TYPES = (SeqLMArguments, DataConfig, SIDConfig, SFTConfig)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
#: A decoder and SID map small enough for a few seconds of CPU.
TINY = [
    *("--codebook_size", "4", "--hidden_size", "32", "--num_heads", "2"),
    *("--intermediate_size", "64", "--per_device_train_batch_size", "8", "--warmup_steps", "0"),
    *("--learning_rate", "3e-3", "--logging_steps", "1", "--time_budget_minutes", "null"),
]


def test_yaml_parses_into_the_recipe_dataclasses():
    seqlm, data, sid, sft = parse_recipe_args(TYPES, ["--config", str(YAML)], prog="seqlm")
    assert isinstance(seqlm, SeqLMArguments) and isinstance(sft, SFTConfig)
    assert (seqlm.hidden_size, seqlm.num_layers, seqlm.ensemble) == (256, 2, 2)
    assert (seqlm.valid_users, seqlm.select_metric, seqlm.time_budget_minutes) == (
        2000,
        "recall@10",
        30,
    )
    assert (data.data_path, data.max_history, data.split) == ("ml-100k", 20, "loo")
    assert (sid.method, sid.levels, sid.codebook_size, sid.collab_weight) == (
        "balanced",
        3,
        256,
        0.6,
    )
    assert (sft.learning_rate, sft.num_train_epochs, sft.max_length) == (2e-3, 14, None)
    # every key of the YAML carries a comment on its effect
    for line in YAML.read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            assert "#" in line, f"uncommented key: {line}"


def test_item_token_yaml_is_seqlm_yaml_with_item_tokens_and_a_teacher():
    """recipes/seqlm_items.yaml: the settings of docs/quality.md's item-token decoder, and
    otherwise the SID recipe's (a key of one that the other lacks would be a silent default)."""
    items_yaml = ROOT / "recipes" / "seqlm_items.yaml"
    seqlm, _, _, sft = parse_recipe_args(TYPES, ["--config", str(items_yaml)], prog="seqlm")
    assert seqlm.item_tokens and seqlm.distill_weight == 1.0 and seqlm.ensemble == 1
    assert (seqlm.hidden_size, seqlm.num_layers, seqlm.teacher_dropout) == (256, 2, 0.5)
    assert (sft.num_train_epochs, seqlm.time_budget_minutes) == (6, 30)
    a, b = yaml.safe_load(YAML.read_text()), yaml.safe_load(items_yaml.read_text())
    assert set(a) == set(b)
    changed = {k for k in a if a[k] != b[k]}
    assert changed == {
        "item_tokens",
        "ensemble",
        "num_train_epochs",
        "output_dir",
    }
    for line in items_yaml.read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            assert "#" in line, f"uncommented key: {line}"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--hiden_size", "3"], "--hiden_size: unknown flag. Fix: did you mean --hidden_size?"),
        (["--select_metric", "mrr"], "'mrr' is not one of recall@5, recall@10"),
        (["--ensemble", "0"], "--ensemble: must be >= 1"),
        (["--hidden_size", "30", "--num_heads", "4"], "is not a multiple of num_heads 4"),
        (["--learning_rate", "-1"], "--learning_rate -1.0: must be a finite number > 0"),
        (["--max_length", "1"], "--max_length 1: too short"),
    ],
    ids=["typo", "metric", "ensemble", "heads", "lr", "max_length"],
)
def test_bad_flags_fail_in_one_line(argv, message):
    with pytest.raises(UserError) as e:
        parse_recipe_args(TYPES, ["--config", str(YAML), *argv], prog="seqlm")
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=ENV, timeout=600
    )


def test_recipe_trains_saves_and_evaluates(tmp_path):
    data = save_tiny_recommender(tmp_path / "tiny").parent / "data"
    out = tmp_path / "run"
    proc = run(
        str(RECIPE),
        *("--config", str(YAML), "--data_path", str(data), "--output_dir", str(out)),
        *("--ensemble", "2", "--valid_users", "20", "--num_train_epochs", "2", *TINY),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert f"model 2/2 saved to {out / 'model_seed1'}" in proc.stdout
    # the SID quantizer travels with each saved decoder (new items get codes from it later)
    assert all(
        (out / m / "sid_quantizer" / "quantizer.json").is_file() for m in ("model", "model_seed1")
    )
    resolved = json.loads((out / "resolved_config.json").read_text())
    assert resolved["seqlm"]["ensemble"] == 2 and resolved["sid"]["codebook_size"] == 4
    log = json.loads((out / "train_log.json").read_text())
    for seed in ("0", "1"):
        member = log["seeds"][seed]
        assert member["final_loss"] < member["first_loss"]  # it learned something
        assert [h["epoch"] for h in member["valid"]] == [1.0, 2.0]
        assert member["best_epoch"] in (1.0, 2.0)

    recllm = str(Path(sys.executable).with_name("recllm"))
    proc = subprocess.run(
        [recllm, "eval", "--model", str(out / "model"), str(out / "model_seed1")],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    metrics = json.loads((out / "model" / "eval_test" / "metrics.json").read_text())["metrics"]
    assert metrics["users"] == 40 and metrics["invalid_rate"] == 0.0
    assert 0.0 <= metrics["recall@10"] <= 1.0 and "ndcg@10" in metrics

    # a rerun with other settings stops before writing, naming what differs
    proc = run(
        str(RECIPE),
        *("--config", str(YAML), "--data_path", str(data), "--output_dir", str(out), *TINY),
        *("--codebook_size", "5"),
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "sid.codebook_size: 4 -> 5" in proc.stderr
    assert json.loads((out / "resolved_config.json").read_text()) == resolved


HARNESS = Path(__file__).with_name("kill_harness.py")
#: Two decoders of six steps each, a checkpoint every two steps, no validation.
RESUMABLE = [
    *TINY,
    *("--ensemble", "2", "--valid_users", "0", "--max_steps", "6", "--save_strategy", "steps"),
    *("--save_steps", "2", "--bf16", "false"),
]


def weights(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(model_dir / "model.safetensors")


def same(a: dict, b: dict) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow  # three recipe processes: over a minute on one shared CPU thread
def test_sigkill_in_the_second_decoder_then_resume_is_bit_identical(tmp_path):
    """Before: seqlm ignored --resume_from_checkpoint and trained every decoder again."""
    data = save_tiny_recommender(tmp_path / "tiny").parent / "data"
    common = ["--config", str(YAML), "--data_path", str(data), *RESUMABLE]
    reference = tmp_path / "reference"
    proc = run(str(RECIPE), *common, "--output_dir", str(reference), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "run"
    killed = subprocess.run(
        [sys.executable, str(HARNESS), str(RECIPE), *common, "--output_dir", str(out)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**ENV, "KILL": f"{out / 'runs' / 'seed1'}:3:step"},
        timeout=600,
    )
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert (out / "runs" / "seed1" / "checkpoint-2" / "recllm_complete.json").is_file()
    first = (out / "model" / "model.safetensors").stat().st_mtime_ns
    resumed = run(
        str(RECIPE), *common, "--output_dir", str(out), "--resume_from_checkpoint", "true",
        cwd=tmp_path,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "decoder 1 (seed 0) was finished in an earlier run" in resumed.stderr
    assert (out / "model" / "model.safetensors").stat().st_mtime_ns == first  # not redone
    for name in ("model", "model_seed1"):
        assert same(weights(reference / name), weights(out / name)), name
    # the control: the half-trained checkpoint differs from the finished decoder
    half = weights(out / "runs" / "seed1" / "checkpoint-2")
    assert not same(half, weights(out / "model_seed1"))


def test_resume_keeps_finished_decoders_and_refuses_what_it_cannot_continue(tmp_path):
    """In process: a finished run resumed redoes nothing; a rerun without the flag is refused
    (its checkpoints would be silently trained over); validation-based selection cannot
    resume (its best weights lived in memory)."""
    from recllm.train.seqlm import run_seqlm

    run_seqlm = partial(run_seqlm, teacher_provider=run_teacher)  # the YAML's teacher

    data = save_tiny_recommender(tmp_path / "tiny").parent / "data"
    out = tmp_path / "run"
    argv = ["--config", str(YAML), "--data_path", str(data), "--output_dir", str(out)]
    argv += [*RESUMABLE, "--ensemble", "1"]
    first = run_seqlm(*parse_recipe_args(TYPES, argv, prog="seqlm"))
    stamp = (out / "model" / "model.safetensors").stat().st_mtime_ns
    with pytest.raises(UserError, match="--resume_from_checkpoint true"):
        run_seqlm(*parse_recipe_args(TYPES, argv, prog="seqlm"))
    again = run_seqlm(
        *parse_recipe_args(TYPES, [*argv, "--resume_from_checkpoint", "true"], prog="seqlm")
    )
    assert again.model_dirs == first.model_dirs == [out / "model"]
    assert (out / "model" / "model.safetensors").stat().st_mtime_ns == stamp
    assert again.log["seeds"]["0"]["steps"] == 6
    with pytest.raises(UserError, match="cannot continue a run with --valid_users > 0"):
        run_seqlm(
            *parse_recipe_args(
                TYPES,
                [*argv, "--resume_from_checkpoint", "true", "--valid_users", "5",
                 "--output_dir", str(tmp_path / "other")],
                prog="seqlm",
            ),
            evaluate=lambda *a, **k: None,  # refused before any validation would run
        )  # fmt: skip
    assert not (tmp_path / "other").exists()


def test_resume_after_the_data_changed_is_refused(tmp_path):
    """The data at the same path changed after a run: resuming it would keep decoders and SIDs
    of the old data, so it is refused, naming the data fingerprint (issue 29: the run's
    fingerprint covers the data's content, not only its path and settings)."""
    from recllm.train.seqlm import run_seqlm

    run_seqlm = partial(run_seqlm, teacher_provider=run_teacher)  # the YAML's teacher

    data = save_tiny_recommender(tmp_path / "tiny").parent / "data"
    out = tmp_path / "run"
    argv = ["--config", str(YAML), "--data_path", str(data), "--output_dir", str(out)]
    argv += [*RESUMABLE, "--ensemble", "1", "--resume_from_checkpoint", "true"]
    run_seqlm(*parse_recipe_args(TYPES, argv, prog="seqlm"))
    sid_meta = json.loads((out / "sids" / "sid_map.json").read_text())["meta"]
    assert sid_meta["data_fingerprint"]["users"] > 0  # the SID map records the data it came from
    # control: the same data resumes (nothing to redo)
    run_seqlm(*parse_recipe_args(TYPES, argv, prog="seqlm"))
    interactions = data / "interactions.csv"
    lines = interactions.read_text().splitlines(keepends=True)
    interactions.write_text("".join(lines[:-3]))  # same path and settings, other content
    stamp = (out / "resolved_config.json").read_bytes()
    with pytest.raises(UserError, match="data_fingerprint"):
        run_seqlm(*parse_recipe_args(TYPES, argv, prog="seqlm"))
    assert (out / "resolved_config.json").read_bytes() == stamp


def test_distillation_trains_a_teacher_and_refuses_one_of_other_data(tmp_path):
    """--distill_weight > 0: a SASRec teacher is trained on the training split into
    OUTPUT_DIR/teacher, recording the data it saw, and every step logs its KL. A teacher of
    other data is refused by --teacher (control: the same teacher on its own data is taken)."""
    from recllm.train.seqlm import run_seqlm

    with pytest.raises(ValueError, match="needs teacher_provider"):  # training sits below it
        run_seqlm(*parse_recipe_args(TYPES, ["--config", str(YAML), "--distill_weight", "1"]))
    run_seqlm = partial(run_seqlm, teacher_provider=run_teacher)
    data = save_tiny_recommender(tmp_path / "tiny").parent / "data"
    out = tmp_path / "run"
    argv = ["--config", str(YAML), "--data_path", str(data), *TINY, "--valid_users", "0"]
    argv += ["--max_steps", "4", "--bf16", "false", "--ensemble", "1"]
    distill = ["--distill_weight", "0.5", "--teacher_minutes", "0.05"]
    run = run_seqlm(*parse_recipe_args(TYPES, [*argv, *distill, "--output_dir", str(out)]))
    teacher = json.loads((out / "teacher" / "sasrec.json").read_text())
    assert teacher["meta"]["data_fingerprint"]["users"] > 0 and teacher["meta"]["history"]
    assert run.log["teacher"] == {"dir": str(out / "teacher"), "weight": 0.5, "temperature": 1.0}
    steps = [h for h in run.log["seeds"]["0"]["log_history"] if "loss" in h]
    assert len(steps) == 4 and all(h["distill_kl"] > 0 and h["distill_items"] > 0 for h in steps)
    # control: the same teacher on the same data is accepted as --teacher
    given = [*distill[:2], "--teacher", str(out / "teacher")]
    run_seqlm(*parse_recipe_args(TYPES, [*argv, *given, "--output_dir", str(tmp_path / "b")]))
    # other data (fewer users): refused before anything is trained
    other = [*argv, *given, "--output_dir", str(tmp_path / "c"), "--max_users", "30"]
    with pytest.raises(UserError, match=r"--teacher .*was not trained on this model's data"):
        run_seqlm(*parse_recipe_args(TYPES, other))
    assert not (tmp_path / "c").exists()  # nothing written
    with pytest.raises(UserError, match="--distill_weight is 0"):
        parse_recipe_args(
            TYPES, [*argv, "--distill_weight", "0", "--teacher", str(out / "teacher")]
        )
