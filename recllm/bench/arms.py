"""Train one arm of a comparison: a recipe under ``accelerate launch`` into its own folder.

An arm is a recipe (``recipes/plum_sft.py``, ``recipes/onerec_think.py``, ``recipes/dpo.py``...)
run from a YAML with overrides (a mapping of recipe keys, merged into the YAML, and/or flags
after it) into ``arm_dir``. The arm is trained once: ``arm_dir/arm.json`` records the recipe,
the resolved YAML, the flags and the minutes after a successful run, and a later call with the
same settings returns the model without training; other settings train it again (the recipe is
told to overwrite its output directory).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["Arm", "arm_minutes", "train_arm"]


@dataclass(frozen=True)
class Arm:
    """A trained arm: its model directory, its training minutes and whether this call trained it."""

    model_dir: Path
    minutes: float
    trained: bool


def _record(recipe: Path, config: Mapping[str, Any] | None, args: Sequence[str]) -> dict:
    return {
        "recipe": str(recipe),
        "config": json.loads(json.dumps(dict(config), default=str)) if config else None,
        "args": [str(a) for a in args],
    }


def train_arm(
    recipe: str | os.PathLike[str],
    arm_dir: str | os.PathLike[str],
    *,
    config: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> Arm:
    """Train ``recipe`` into ``arm_dir`` unless an earlier run with the same settings did.

    Args:
        recipe: The recipe script.
        arm_dir: The arm's output directory (the recipe's ``output_dir``); the model lands in
            ``arm_dir/model``.
        config: The recipe YAML the arm starts from.
        overrides: Recipe keys replacing the YAML's (a ``mixture`` mapping is merged into the
            YAML's mixture). With overrides the resolved YAML is written to
            ``<arm_dir>.yaml`` beside the arm (so the run can be repeated by hand); without,
            ``config`` is passed as it is.
        args: Flags after the YAML (they override its keys).
        env: Environment variables for the recipe's process (``HF_HUB_OFFLINE=1`` is added).

    Raises:
        FileNotFoundError: ``recipe`` or ``config`` does not exist (checked before anything is
            written).
        subprocess.CalledProcessError: The recipe failed; ``arm.json`` is not written, so the
            next call trains again.
    """
    import yaml

    from recllm.io import write_json_atomic
    from recllm.train.launch import launch_recipe

    recipe, arm = Path(recipe), Path(arm_dir)
    for path, what in ((recipe, "recipe"), (config, "recipe YAML")):
        if path is not None and not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no such {what}. Fix: pass an existing file.")
    resolved: dict[str, Any] | None = None
    if overrides is not None:
        resolved = yaml.safe_load(Path(config).read_text()) if config is not None else {}
        resolved = dict(resolved or {})
        changes = dict(overrides)
        if isinstance(changes.get("mixture"), Mapping):
            changes["mixture"] = {**(resolved.get("mixture") or {}), **changes["mixture"]}
        resolved.update(changes, output_dir=str(arm), overwrite_output_dir=True)
        flags = list(args)
    else:
        flags = [*args, "--output_dir", str(arm), "--overwrite_output_dir", "true"]
    if resolved is None and config is not None:  # the YAML's text: an edited YAML retrains
        given = {"yaml": str(config), "text": Path(config).read_text()}
    else:
        given = resolved
    record = _record(recipe, given, flags)
    done = arm / "arm.json"
    if done.is_file() and (arm / "model").is_dir():
        stored = json.loads(done.read_text())
        if {k: stored.get(k) for k in record} == record:
            logger.info("%s: trained in an earlier run with the same settings", arm)
            return Arm(arm / "model", stored["minutes"], trained=False)
        logger.info("%s: trained with other settings; training again", arm)
    if done.is_file():
        done.unlink()  # the arm is stale from here on, whatever happens next
    seconds = launch_recipe(
        recipe,
        config=resolved,
        config_path=arm.with_name(arm.name + ".yaml") if resolved is not None else config,
        args=flags,
        env={"HF_HUB_OFFLINE": "1", **(env or {})},
    )
    minutes = seconds / 60
    write_json_atomic(done, {**record, "minutes": minutes})
    return Arm(arm / "model", minutes, trained=True)


def arm_minutes(arm_dirs: Mapping[str, str | os.PathLike[str]]) -> dict[str, float]:
    """The training minutes (one decimal) of each named arm that was trained."""
    out = {}
    for name, arm in arm_dirs.items():
        done = Path(arm) / "arm.json"
        if done.is_file():
            out[name] = round(json.loads(done.read_text())["minutes"], 1)
    return out
