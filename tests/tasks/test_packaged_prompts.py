"""The prompt templates ship inside the package: a built wheel carries them and TaskConfig() finds
them without a clone (issue 15: a wheel install used to break TaskConfig() and the quickstart)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import recllm
from recllm.tasks import PROMPTS_DIR, TASKS, TaskConfig
from recllm.tasks.config import AUXILIARY_TEMPLATES, HISTORY_LOSS_TASKS

CHECKOUT = Path(recllm.__file__).resolve().parents[1]
PIP_WHEEL = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]


def test_default_prompts_dir_is_the_packaged_folder():
    folder = Path(TaskConfig().prompts_dir)
    assert folder == Path(recllm.__file__).resolve().parent / "prompts" == Path(PROMPTS_DIR)
    # rec_sequence rows are recommendation prompts: they render with rec.jinja
    own = sorted([t for t in TASKS if t not in HISTORY_LOSS_TASKS] + list(AUXILIARY_TEMPLATES))
    assert sorted(p.stem for p in folder.glob("*.jinja")) == own


def test_a_yaml_can_still_point_elsewhere(tmp_path):
    shutil.copytree(PROMPTS_DIR, tmp_path / "mine")
    (tmp_path / "mine" / "rec.jinja").write_text(
        "{% block user %}history: {{ history | map(attribute='sid') | join(' ') }}{% endblock %}"
        "{% block assistant %}{{ target.sid }}{% endblock %}"
    )
    from recllm.data import Catalog, Example
    from recllm.tasks import TaskBuilder

    catalog = Catalog({"1": {"title": "A"}, "2": {"title": "B"}}, ("title",))
    builder = TaskBuilder(
        catalog, lambda i: f"<s{i}>", TaskConfig(prompts_dir=str(tmp_path / "mine"))
    )
    row = next(builder.rec([Example("u", ("1",), "2")]))
    assert row["prompt"][0]["content"] == "history: <s1>"
    assert row["completion"][0]["content"] == "<s2>"


def _build_wheel(tmp_path: Path) -> Path:
    """A wheel of a copy of the checkout (the build never writes into the shared tree)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(CHECKOUT / name, src / name)
    shutil.copytree(
        CHECKOUT / "recllm", src / "recllm", ignore=shutil.ignore_patterns("__pycache__")
    )
    out = tmp_path / "dist"
    # No build isolation: setuptools of this environment builds it, offline.
    subprocess.run(
        [*PIP_WHEEL, str(src), "-w", str(out)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = out.glob("recllm-*.whl")
    return wheel


def test_wheel_carries_the_templates_and_renders_from_them(tmp_path):
    wheel = _build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"recllm/prompts/{t}.jinja" for t in TASKS if t not in HISTORY_LOSS_TASKS} <= names
    assert "recllm/recipes/quickstart.yaml" in names  # the main job's settings, as a file
    # the subpackages are in, recllm/train/ as a regular package (it was a namespace package)
    assert {
        "recllm/train/__init__.py",
        "recllm/train/plum.py",
        "recllm/tasks/prompting.py",
    } <= names
    # Unpacked on its own path (what an install puts in site-packages), away from the checkout:
    # TaskConfig() must find the packaged templates and render a prompt with them.
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    snippet = (
        "import json, recllm\n"
        "from recllm.data import Catalog, Example\n"
        "from recllm.tasks import TaskBuilder, TaskConfig\n"
        "cat = Catalog({'1': {'title': 'A'}, '2': {'title': 'B'}}, ('title',))\n"
        "b = TaskBuilder(cat, lambda i: '<s' + i + '>', TaskConfig())\n"
        "row = next(b.rec([Example('u', ('1',), '2')]))\n"
        "print(json.dumps({'file': recllm.__file__, 'dir': TaskConfig().prompts_dir,\n"
        "                  'user': row['prompt'][0]['content']}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", snippet],
        cwd=tmp_path,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert Path(got["file"]).resolve().is_relative_to(site.resolve())
    assert Path(got["dir"]) == site / "recllm" / "prompts"
    assert got["user"].splitlines()[1] == "<s1>"
