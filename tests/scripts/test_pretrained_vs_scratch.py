"""scripts/pretrained_vs_scratch.py on a tiny model and data set: the same recipe run twice, once
from the checkpoint's weights and once from freshly drawn ones, on the same SID map, steps and
users; the summary, the PNG and a rerun that skips finished parts."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from recllm.testing import save_tiny_model, save_tiny_recommender
from tests.scripts.running import run_script


def _weights(model_dir):
    return {k: v for f in sorted(model_dir.glob("*.safetensors")) for k, v in load_file(f).items()}


@pytest.mark.slow  # default-suite budget (README, Tests): a script run of two trainings
def test_both_inits_same_sids_steps_and_users(tmp_path):
    data = save_tiny_recommender(tmp_path / "tiny").parent / "data"
    base = save_tiny_model(tmp_path / "base")
    out = tmp_path / "pvs"
    recipe = ["--model_name_or_path", str(base), "--data_path", str(data), "--bf16", "false"]
    recipe += ["--codebook_size", "8", "--per_device_train_batch_size", "2"]
    recipe += ["--max_steps", "4", "--learning_rate", "1e-4"]  # small steps: the init shows
    recipe += ["--seed", "7"]  # the tiny "pretrained" base was itself drawn with seed 0
    args = ["--out", str(out), "--every", "2", "--eval-users", "10", "--eval-seed", "1"]
    _, summary = run_script(
        "pretrained_vs_scratch.py", *args, "--seqlm-minutes", "0", *recipe, cwd=tmp_path
    )
    curves = summary["curves"]
    assert set(curves) == {"pretrained", "random"}
    for curve in curves.values():
        assert [p["step"] for p in curve] == [2, 4]
        assert {p["popR10"] for p in curve} == {summary["popular"]["R10"]}  # same users
    assert summary["users"] == 10 and summary["eval_seed"] == 1

    runs = {label: out / label / "run" for label in curves}
    pre = json.loads((runs["pretrained"] / "resolved_config.json").read_text())
    rnd = json.loads((runs["random"] / "resolved_config.json").read_text())
    assert (pre["plum"]["init_weights"], rnd["plum"]["init_weights"]) == ("pretrained", "random")
    assert pre["plum"]["train_top_layers"] is None  # full fine-tuning in both
    assert rnd["plum"]["sid_map"] == str(runs["pretrained"] / "sids")  # the same codes
    for key in ("sft", "data"):
        a = {k: v for k, v in pre[key].items() if k not in ("output_dir", "logging_dir")}
        b = {k: v for k, v in rnd[key].items() if k not in ("output_dir", "logging_dir")}
        assert a == b

    # 4 small steps barely move the pretrained run off the checkpoint; the random run is
    # elsewhere (control: the pretrained run itself)
    start = _weights(base)
    for label, far in (("pretrained", False), ("random", True)):
        trained = _weights(runs[label] / "model")
        name = next(k for k in start if "layers.0.mlp.down_proj" in k)
        gap = (trained[name] - start[name]).norm() / start[name].norm()
        assert bool(gap > 0.5) == far, (label, float(gap))
        assert trained[name].shape == start[name].shape

    assert (out / "pretrained_vs_scratch.png").read_bytes()[:4] == b"\x89PNG"
    # a rerun finds both curves done and trains nothing
    proc, again = run_script(
        "pretrained_vs_scratch.py", *args, "--seqlm-minutes", "0", *recipe, cwd=tmp_path
    )
    assert proc.stdout.count("done in an earlier run") == 2
    assert again["curves"] == curves
