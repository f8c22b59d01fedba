"""Every recipe prints its --help (argparse %-formats help strings, so a bare ``%`` in a field's
help once made ``recipes/plum_sft.py --help`` exit 2 with a traceback)."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes").glob("*.py"))


def test_there_are_recipes():
    assert {p.stem for p in RECIPES} >= {"plum_sft", "onerec_think", "dpo", "awsft", "grpo"}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_help_prints_and_exits_0(recipe, monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", [str(recipe), "--help"])
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(str(recipe), run_name="__main__")
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:") and "--output_dir" in out and "--learning_rate" in out
