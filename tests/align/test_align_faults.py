"""Faults of the align recipes found by probing (issue 29, item 7), each reproduced on the real
recipe functions with a tiny recommender: bad input stops with one error before anything is
written, and ``--overwrite_output_dir`` leaves nothing of the earlier run behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from trl import DPOConfig, GRPOConfig, SFTConfig

from recllm.align.awsft import AWSFTArguments, run_awsft
from recllm.align.dpo import PreferenceArguments, run_dpo
from recllm.align.grpo import GRPOArguments, run_grpo
from recllm.errors import UserError
from recllm.testing import save_tiny_recommender
from recllm.train.recipe_args import parse_recipe_args
from tests.scripts.running import ROOT

RECIPES = {
    "dpo": ((PreferenceArguments, DPOConfig), run_dpo),
    "awsft": ((AWSFTArguments, SFTConfig), run_awsft),
    "grpo": ((GRPOArguments, GRPOConfig), run_grpo),
}
#: A few seconds of each recipe on the tiny recommender.
SMALL = {
    "dpo": ["--beams", "4", "--loss_type", "sigmoid", "--loss_weights", "1.0"],
    "awsft": ["--beams", "4"],
    "grpo": ["--num_generations", "4", "--per_device_train_batch_size", "4"],
}
COMMON = ["--mining_users", "4", "--max_steps", "1", "--bf16", "false", "--report_to", "none"]


def parse(recipe: str, out: Path, *args: str):
    types, _ = RECIPES[recipe]
    argv = ["--config", str(ROOT / "recipes" / f"{recipe}.yaml"), "--output_dir", str(out)]
    return parse_recipe_args(types, [*argv, *SMALL[recipe], *COMMON, *args], prog=recipe)


def run(recipe: str, out: Path, *args: str) -> Path:
    return RECIPES[recipe][1](*parse(recipe, out, *args))


@pytest.fixture(scope="module")
def sft(tmp_path_factory) -> Path:
    return save_tiny_recommender(tmp_path_factory.mktemp("tiny") / "tiny")


@pytest.fixture(scope="module")
def sasrec_dir(sft, tmp_path_factory) -> Path:
    """A SASRec reward model trained on the tiny recommender's own split."""
    from recllm.baselines.sasrec import SASRecConfig, save_sasrec, train_sasrec
    from recllm.data import DataConfig, load_rec_dataset, split_dataset
    from recllm.data.fingerprint import data_fingerprint
    from recllm.tasks.prompting import PromptSpec

    cfg = DataConfig(**PromptSpec.from_model_dir(sft).data)
    dataset = load_rec_dataset(config=cfg)
    split = split_dataset(dataset, cfg)
    rm, _ = train_sasrec(split, dataset.catalog, SASRecConfig(epochs=1), progress=False)
    meta = {"data_fingerprint": data_fingerprint(split, dataset.catalog)}
    return save_sasrec(rm, tmp_path_factory.mktemp("rm") / "sasrec", meta=meta)


@pytest.mark.parametrize("recipe", ["dpo", "awsft", "grpo"])
def test_overwrite_removes_everything_the_recipe_wrote(sft, tmp_path, recipe):
    """Before: only resolved_config.json and model/ went; the seed-1 rerun reused the seed-0
    reward model (and dpo's round2/)."""
    out = tmp_path / "out"
    reward = ["--reward", "sasrec=1", "--reward_model_minutes", "0.005"]
    rounds = ["--rounds", "2"] if recipe != "grpo" else []
    run(recipe, out, "--model_dir", str(sft), *reward, *rounds)
    first = json.loads((out / "reward_model" / "sasrec.json").read_text())
    assert first["config"]["seed"] == 0
    if recipe != "grpo":
        assert (out / "round2" / "model").is_dir()
    rounds = ["--rounds", "1"] if recipe != "grpo" else []
    run(recipe, out, "--model_dir", str(sft), *reward, *rounds, "--overwrite_output_dir", "true",
        "--seed", "1")  # fmt: skip
    second = json.loads((out / "reward_model" / "sasrec.json").read_text())
    assert second["config"]["seed"] == 1  # retrained for this run, not the seed-0 one
    assert not (out / "round2").exists()  # one round now: the old round 2 is gone
    assert (
        json.loads((out / "resolved_config.json").read_text())[
            "dpo" if recipe == "dpo" else "grpo" if recipe == "grpo" else "sft"
        ]["seed"]
        == 1
    )


def test_bad_reward_model_writes_nothing_so_the_corrected_rerun_runs(sft, sasrec_dir, tmp_path):
    """Before: exit 2 but resolved_config.json was left, and the corrected rerun was refused
    ("holds a run made with other settings")."""
    out = tmp_path / "out"
    with pytest.raises(UserError, match="--reward_model nowhere"):
        run(
            "dpo", out, "--model_dir", str(sft), "--reward", "sasrec=1", "--reward_model", "nowhere"
        )
    assert not out.exists()
    final = run("dpo", out, "--model_dir", str(sft), "--reward", "sasrec=1", "--reward_model",
                str(sasrec_dir))  # fmt: skip
    assert (final / "sid_map.json").is_file()


def test_unloadable_model_dir_writes_nothing(sft, tmp_path):
    """A model directory with its record but truncated weights: one error naming it."""
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(sft, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    out = tmp_path / "out"
    with pytest.raises(UserError, match=f"--model_dir {broken}: cannot be loaded") as e:
        run("dpo", out, "--model_dir", str(broken), "--reward", "exact_hit=1")
    assert "Fix:" in str(e.value)
    assert not out.exists()


def test_truncated_reward_model_names_the_file(sft, sasrec_dir, tmp_path):
    import shutil

    rm = tmp_path / "rm"
    shutil.copytree(sasrec_dir, rm)
    weights = rm / "sasrec.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    out = tmp_path / "out"
    with pytest.raises(UserError) as e:
        run("dpo", out, "--model_dir", str(sft), "--reward", "sasrec=1", "--reward_model", str(rm))
    assert str(weights) in str(e.value) and "Fix:" in str(e.value)
    assert "\n" not in str(e.value)
    assert not out.exists()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("exact_hit=nan", "weight nan is not a finite number"),
        ("exact_hit=inf", "weight inf is not a finite number"),
        ("exact_hit=1,exact_hit=2", "names exact_hit twice"),
    ],
)
@pytest.mark.parametrize("recipe", ["dpo", "awsft", "grpo"])
def test_bad_reward_weights_are_refused_when_parsed(tmp_path, recipe, spec, message):
    """Before: exact_hit=nan was accepted and the run failed after writing round1/."""
    with pytest.raises(UserError) as e:
        parse(recipe, tmp_path / "out", "--model_dir", "x", "--reward", spec)
    assert f"--reward {spec}" in str(e.value) and message in str(e.value)
    assert not (tmp_path / "out").exists()


BAD_NUMBERS = [
    ("--learning_rate", "-1", "--learning_rate -1.0: must be a finite number > 0"),
    ("--learning_rate", "nan", "--learning_rate nan: must be a finite number > 0"),
    ("--max_length", "1", "--max_length 1: too short"),
]


@pytest.mark.parametrize(
    ("recipe", "flag", "value", "message"),
    [
        (recipe, *case)
        for recipe in ("dpo", "awsft", "grpo")
        for case in BAD_NUMBERS
        if not (recipe == "grpo" and case[0] == "--max_length")  # GRPOConfig has no max_length
    ],
)
def test_bad_training_numbers_are_refused_when_parsed(tmp_path, recipe, flag, value, message):
    with pytest.raises(UserError) as e:
        parse(recipe, tmp_path / "out", "--model_dir", "x", flag, value)
    assert message in str(e.value) and "Fix:" in str(e.value)


def test_max_length_shorter_than_every_prompt_stops_before_writing(sft, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(UserError, match="--max_length 8: shorter than every training row") as e:
        run("dpo", out, "--model_dir", str(sft), "--reward", "prefix_credit=1", "--max_length", "8")
    assert "Fix:" in str(e.value)
    assert not out.exists()


def test_zero_generations_is_refused_when_parsed(tmp_path):
    """Before: a ZeroDivisionError traceback from GRPOConfig."""
    with pytest.raises(UserError, match="--num_generations 0: must be >= 2"):
        parse("grpo", tmp_path / "out", "--model_dir", "x", "--num_generations", "0")


def test_more_generations_than_catalog_items_is_refused(sft, tmp_path):
    """Before: 64 generations on a 60-item catalog padded each group with 4 copies of the last
    item (duplicates that skew GRPO's group-normalised advantages)."""
    out = tmp_path / "out"
    args = ["--model_dir", str(sft), "--reward", "exact_hit=1", "--num_generations", "64"]
    with pytest.raises(UserError, match="--num_generations 64: more than the 60 catalog items"):
        run("grpo", out, *args, "--per_device_train_batch_size", "64")
    assert not out.exists()
