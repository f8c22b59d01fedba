"""launch_recipe runs a recipe under a real ``accelerate launch``: YAML written, flags passed,
CPU threads set, the caller's environment added, a failing recipe raised."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from recllm.train.launch import launch_command, launch_recipe

RECIPE = """
import json, os, sys, torch
out = sys.argv[sys.argv.index("--out") + 1]
cfg = sys.argv[sys.argv.index("--config") + 1]
json.dump({"argv": sys.argv[1:], "threads": torch.get_num_threads(),
           "omp": os.environ.get("OMP_NUM_THREADS"), "marker": os.environ.get("MARKER"),
           "config": open(cfg).read()}, open(out, "w"))
sys.exit(int(os.environ.get("FAIL", "0")))
"""


def test_recipe_runs_with_its_yaml_flags_threads_and_env(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # the default: every usable core
    recipe = tmp_path / "recipe.py"
    recipe.write_text(RECIPE)
    cfg = {"model_name_or_path": "m", "mixture": {"rec": 1.0, "dialogue": 0.5}, "max_steps": 3}
    seconds = launch_recipe(
        recipe,
        config=cfg,
        config_path=tmp_path / "arm" / "arm.yaml",
        args=["--out", tmp_path / "seen.json"],
        env={"MARKER": "x1"},
    )
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert yaml.safe_load(seen["config"]) == cfg
    assert seen["argv"] == [
        "--config",
        str(tmp_path / "arm" / "arm.yaml"),
        "--out",
        str(tmp_path / "seen.json"),
    ]
    cores = len(os.sched_getaffinity(0))
    # without --num_cpu_threads_per_process accelerate leaves a CPU process 1 thread
    assert (seen["threads"], seen["omp"]) == (cores, str(cores))
    assert seen["marker"] == "x1" and seconds > 0
    assert not list((tmp_path / "arm").glob("*.tmp*"))  # the YAML was renamed into place


def test_failing_recipe_raises_and_config_needs_a_path(tmp_path: Path):
    recipe = tmp_path / "recipe.py"
    recipe.write_text(RECIPE)
    (tmp_path / "c.yaml").write_text("a: 1\n")
    with pytest.raises(subprocess.CalledProcessError):
        launch_recipe(
            recipe,
            config_path=tmp_path / "c.yaml",
            args=["--out", tmp_path / "o.json"],
            env={"FAIL": "3"},
        )
    with pytest.raises(ValueError, match="config_path"):
        launch_recipe(recipe, config={"a": 1})


def test_threads_default_to_the_callers_omp_setting_else_the_cores(tmp_path, monkeypatch):
    recipe = tmp_path / "r.py"

    def threads():
        cmd = launch_command(recipe, num_processes=2, threads=None)
        return cmd[cmd.index("--num_cpu_threads_per_process") + 1]

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads() == str(max(1, len(os.sched_getaffinity(0)) // 2))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # one thread beside other work, as asked
    assert threads() == "1"
    cmd = launch_command(recipe, threads=3)  # an explicit count wins
    assert cmd[cmd.index("--num_cpu_threads_per_process") + 1] == "3"
