"""Imports flow one way: data -> sid -> vocab -> tasks -> train / decode -> eval -> baselines ->
align -> apps.

Every module under recllm/ is parsed with ``ast`` and every import in it is checked, wherever it
sits: at module level, inside a function (the lazy imports recllm uses to keep start-up cheap),
under ``if TYPE_CHECKING:``, or as ``importlib.import_module("recllm...")`` with a literal name.
A module may import its own package and any package in a lower layer; packages in one layer are
siblings and never import each other (train and decode), and eval and apps never import train.
The control tests show the checker catching forbidden imports in a synthetic tree, so a pass
means something.
"""

from __future__ import annotations

import ast
from pathlib import Path

import recllm

#: Lowest layer first. A new top-level package or module of recllm must be placed here.
LAYERS: tuple[tuple[str, ...], ...] = (
    # the error contract, under everything (atomic writes name a bad output path with it)
    ("errors",),
    # foundation: the package root, atomic writes, version records
    ("", "io", "provenance"),
    ("data",),
    # pretrained model files (GGUF conversion); sid may embed items with such a model
    ("models",),
    ("sid",),
    ("vocab",),
    # text building: training tasks, the packaged templates, evaluation/serving prompts
    ("tasks",),
    # siblings: neither imports the other
    ("train", "decode"),
    # may use decode, never train
    ("eval",),
    # the SASRec baseline is scored with eval's metrics
    ("baselines",),
    # alignment after SFT: decodes with the policy, rewards with baselines, trains through train
    ("align",),
    ("apps",),
    # benchmark building blocks (arm training, cached scoring, paired differences, tables): they
    # drive recipes, decoding and evaluation, and nothing below imports them
    ("bench",),
    # entry points and test helpers may use anything (recllm/cli/ is one unit: the command's
    # groups and their shared argparse pieces)
    ("cli", "testing"),
)
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}
#: Pairs forbidden although the first sits higher: evaluation and serving judge and use a saved
#: model, whatever trained it, so they never reach into training code.
FORBIDDEN = {("eval", "train"), ("apps", "train"), ("apps", "align")}
PACKAGE_DIR = Path(recllm.__file__).resolve().parent


def module_name(path: Path, root: Path) -> str:
    """Dotted name of a file under ``root`` (the ``recllm`` folder)."""
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def unit_of(dotted: str) -> str:
    """The layer unit of a dotted recllm name: its first component under ``recllm``."""
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else ""


def imported_names(tree: ast.Module, module: str, is_package: bool) -> list[tuple[int, str]]:
    """``(line, dotted recllm name)`` of every import anywhere in ``tree``.

    ``from recllm import x`` yields ``recllm.x`` (x may be a subpackage); relative imports are
    resolved against ``module``.
    """
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                # a package's own name is its anchor for level 1; a module's is its parent
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            found += [(node.lineno, f"{base}.{a.name}" if base else a.name) for a in node.names]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (getattr(node.func, "attr", None) or getattr(node.func, "id", None))
            == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return [(line, name) for line, name in found if name.split(".")[0] == "recllm"]


def layer_violations(root: Path) -> list[str]:
    """Every import under ``root`` (a ``recllm`` folder) that goes against :data:`LAYERS`."""
    problems: list[str] = []
    for path in sorted(root.rglob("*.py")):
        module = module_name(path, root)
        unit = unit_of(module)
        where = f"{path.relative_to(root.parent)}"
        if unit not in RANK:
            problems.append(f"{where}: package {unit!r} is in no layer; add it to LAYERS")
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for line, name in imported_names(tree, module, path.name == "__init__.py"):
            target = unit_of(name)
            if not ((root / target).is_dir() or (root / f"{target}.py").is_file()):
                target = ""  # `from recllm import __version__`: a name of the package root
            if target == unit:
                continue
            if target not in RANK:
                problems.append(f"{where}:{line}: imports {name}, whose package is in no layer")
            elif RANK[target] >= RANK[unit]:
                kind = "a sibling" if RANK[target] == RANK[unit] else "a higher layer"
                problems.append(f"{where}:{line}: {unit} imports {name} ({kind})")
            elif (unit, target) in FORBIDDEN:
                problems.append(f"{where}:{line}: {unit} imports {name} (never {target})")
    return problems


def test_recllm_imports_flow_one_way():
    assert layer_violations(PACKAGE_DIR) == []


def test_every_package_has_a_layer():
    units = {unit_of(module_name(p, PACKAGE_DIR)) for p in PACKAGE_DIR.rglob("*.py")}
    assert units <= set(RANK), sorted(units - set(RANK))
    # the pipeline's order itself, as the README states it
    order = ["data", "sid", "vocab", "tasks", "train", "eval", "apps"]
    assert [RANK[u] for u in order] == sorted(RANK[u] for u in order)
    assert RANK["train"] == RANK["decode"] < RANK["eval"]


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_control_synthetic_forbidden_imports_are_caught(tmp_path):
    """The checker's control: a tree with one allowed and several forbidden imports of every
    kind (module level, in a function, under TYPE_CHECKING, relative, import_module)."""
    root = tmp_path / "recllm"
    for rel in ("__init__.py", "decode/__init__.py", "vocab/__init__.py", "sid/build.py"):
        _write(root, rel, "")
    _write(root, "apps/serve.py", "from recllm import __version__\n")  # the root: allowed
    _write(root, "eval/__init__.py", "from recllm.decode import x\n")  # allowed: eval > decode
    _write(
        root,
        "eval/run.py",
        "def f():\n    from recllm.train.seqlm import history_text\n",  # eval -> train
    )
    _write(
        root,
        "train/select.py",
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from recllm.eval.run import PromptSpec\n"  # train -> eval
        "import importlib\n"
        "m = importlib.import_module('recllm.apps.serve')\n",  # train -> apps
    )
    _write(root, "decode/beam.py", "from ..train import plum\n")  # decode -> train (sibling)
    _write(root, "tasks/__init__.py", "from . import builders\nfrom recllm import vocab\n")
    _write(root, "data/x.py", "import recllm.sid.build\n")  # data -> sid
    _write(root, "newpkg/a.py", "")  # a package nobody placed
    assert layer_violations(root) == [
        "recllm/data/x.py:1: data imports recllm.sid.build (a higher layer)",
        "recllm/decode/beam.py:1: decode imports recllm.train.plum (a sibling)",
        "recllm/eval/run.py:2: eval imports recllm.train.seqlm.history_text (never train)",
        "recllm/newpkg/a.py: package 'newpkg' is in no layer; add it to LAYERS",
        "recllm/train/select.py:3: train imports recllm.eval.run.PromptSpec (a higher layer)",
        "recllm/train/select.py:5: train imports recllm.apps.serve (a higher layer)",
    ]


def test_control_the_old_tree_fails(tmp_path):
    """The imports issue 15 found (eval.run -> train.seqlm, train.select -> eval.run) fail."""
    root = tmp_path / "recllm"
    _write(root, "__init__.py", "")
    _write(root, "eval/run.py", "def g():\n    from recllm.train.seqlm import history_text\n")
    _write(root, "train/select.py", "def h():\n    from recllm.eval.run import evaluate\n")
    assert len(layer_violations(root)) == 2


def test_every_package_folder_is_a_package_and_train_imports_light():
    """``recllm/train/`` had no ``__init__.py``, so it was an implicit namespace package (any
    ``recllm/train`` folder elsewhere on the path merges into it; tools that need regular
    packages skip it). Every folder of modules is a regular package, and ``import recllm.train``
    pulls in neither torch nor transformers nor trl (its modules import what they need)."""
    import subprocess
    import sys

    folders = {p.parent for p in PACKAGE_DIR.rglob("*.py") if "__pycache__" not in p.parts}
    assert sorted(str(f) for f in folders if not (f / "__init__.py").is_file()) == []
    probe = "import sys, recllm.train; print(sorted({'torch', 'transformers', 'trl'} & set(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=300
    )
    assert out.stdout.strip() == "[]"
