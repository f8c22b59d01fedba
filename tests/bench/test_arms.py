"""recllm.bench.arms: an arm trained once through ``accelerate launch``, again when its settings
change; the real recipes on the tiny settings of tests/scripts (slow)."""

from __future__ import annotations

import json
import subprocess
import textwrap

import pytest
import yaml

from recllm.bench.arms import arm_minutes, train_arm

#: A recipe as small as a recipe gets: it reads its YAML and flags and writes what it was given.
RECIPE = textwrap.dedent(
    """
    import argparse, json, pathlib, sys, yaml
    p = argparse.ArgumentParser()
    p.add_argument("--config")
    p.add_argument("--output_dir")
    p.add_argument("--overwrite_output_dir")
    p.add_argument("--seed", default=None)
    args = p.parse_args()
    cfg = yaml.safe_load(open(args.config)) if args.config else {}
    if cfg.get("fail"):
        sys.exit(3)
    out = pathlib.Path(args.output_dir or cfg["output_dir"]) / "model"
    out.mkdir(parents=True, exist_ok=True)
    runs = out / "runs.txt"
    runs.write_text(runs.read_text() + "x" if runs.exists() else "x")
    (out / "seen.json").write_text(json.dumps({"cfg": cfg, "seed": args.seed}))
    """
)


@pytest.fixture
def recipe(tmp_path):
    path = tmp_path / "recipe.py"
    path.write_text(RECIPE)
    base = tmp_path / "recipe.yaml"
    base.write_text(yaml.safe_dump({"learning_rate": 0.1, "mixture": {"rec": 1.0, "text": 1.0}}))
    return path, base


@pytest.mark.slow  # default-suite budget (15 min on 2 cores): runs in CI's slow step
def test_an_arm_trains_once_again_when_its_settings_change_and_not_after_a_failure(
    tmp_path, recipe
):
    script, base = recipe
    arm = tmp_path / "out" / "think"
    first = train_arm(script, arm, config=base, overrides={"mixture": {"text": 0.0}, "seed": 1})
    assert first.trained and first.model_dir == arm / "model" and first.minutes > 0
    seen = json.loads((arm / "model" / "seen.json").read_text())["cfg"]
    # the YAML's keys, the overrides (the mixture merged), the arm's folder
    assert seen == {
        "learning_rate": 0.1,
        "mixture": {"rec": 1.0, "text": 0.0},
        "seed": 1,
        "output_dir": str(arm),
        "overwrite_output_dir": True,
    }
    assert yaml.safe_load((tmp_path / "out" / "think.yaml").read_text()) == seen  # by hand

    again = train_arm(script, arm, config=base, overrides={"mixture": {"text": 0.0}, "seed": 1})
    assert not again.trained and again.minutes == first.minutes
    assert (arm / "model" / "runs.txt").read_text() == "x"  # not launched again
    assert arm_minutes({"think": arm, "none": tmp_path / "nothing"}) == {
        "think": round(first.minutes, 1)
    }

    # control: another setting trains again
    other = train_arm(script, arm, config=base, overrides={"mixture": {"text": 0.0}, "seed": 2})
    assert other.trained and (arm / "model" / "runs.txt").read_text() == "xx"

    # a failed run is not taken for a trained arm: the old arm.json was for other settings,
    # and the model folder the failed run left behind is no trained arm of any settings
    with pytest.raises(subprocess.CalledProcessError):
        train_arm(script, arm, config=base, overrides={"fail": True})
    assert not (arm / "arm.json").exists() and (arm / "model").is_dir()


@pytest.mark.slow  # three launches (~25 s on a loaded machine): the default run has two tests
def test_flags_without_overrides_and_an_edited_yaml_retrains(tmp_path, recipe):
    script, base = recipe
    arm = tmp_path / "dpo_seed0"
    assert train_arm(script, arm, config=base, args=["--seed", "0"]).trained
    seen = json.loads((arm / "model" / "seen.json").read_text())
    assert seen["seed"] == "0" and seen["cfg"]["learning_rate"] == 0.1
    assert not train_arm(script, arm, config=base, args=["--seed", "0"]).trained
    base.write_text(yaml.safe_dump({"learning_rate": 0.2}))
    assert train_arm(script, arm, config=base, args=["--seed", "0"]).trained


def test_missing_files_are_named_before_anything_is_written(tmp_path, recipe):
    script, _ = recipe
    with pytest.raises(FileNotFoundError, match=r"nope\.yaml: no such recipe YAML"):
        train_arm(script, tmp_path / "arm", config=tmp_path / "nope.yaml", overrides={})
    with pytest.raises(FileNotFoundError, match="no such recipe"):
        train_arm(tmp_path / "none.py", tmp_path / "arm")
    assert not (tmp_path / "arm").exists() and not (tmp_path / "arm.yaml").exists()


@pytest.mark.slow  # two real recipe runs under accelerate launch (~1 min)
def test_the_plum_recipe_as_an_arm_on_the_tiny_settings(tmp_path):
    from recllm.testing import save_tiny_model, save_tiny_recommender
    from tests.scripts.running import ROOT

    data = save_tiny_recommender(tmp_path / "tiny").parent / "data"
    base = save_tiny_model(tmp_path / "base")
    overrides = {
        "model_name_or_path": str(base),
        "data_path": str(data),
        "bf16": False,
        "codebook_size": 8,
        "max_steps": 2,
        "per_device_train_batch_size": 2,
    }
    recipe, yaml_path = ROOT / "recipes" / "plum_sft.py", ROOT / "recipes" / "quickstart.yaml"
    arm = train_arm(recipe, tmp_path / "arm", config=yaml_path, overrides=overrides)
    assert arm.trained and (arm.model_dir / "sid_map.json").is_file()
    weights = sorted(arm.model_dir.glob("*.safetensors"))
    stamp = [w.stat().st_mtime_ns for w in weights]
    assert not train_arm(recipe, tmp_path / "arm", config=yaml_path, overrides=overrides).trained
    assert [w.stat().st_mtime_ns for w in weights] == stamp
