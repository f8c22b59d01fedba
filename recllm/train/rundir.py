"""A recipe's output directory is never silently stale.

A rerun into an existing ``--output_dir`` reuses what is there (the SID map, checkpoints to
resume from) only when the settings recorded with it (``resolved_config.json``, the SID map's
own ``meta``) equal this run's exactly; otherwise it stops with an error that names every key
that differs and the fix (``--overwrite_output_dir true``, or another ``--output_dir``). Before,
a rerun with ``--codebook_size 8`` recorded 8 while the model used the old 16-code map.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from recllm.errors import UserError

logger = logging.getLogger(__name__)

#: Trainer settings that may change between a run and its continuation without changing what it
#: makes (under every recipe's trainer section: sft, dpo, grpo).
_VOLATILE_TRAINER = (
    "resume_from_checkpoint",
    "logging_dir",
    "logging_steps",
    "logging_first_step",
    "report_to",
    "run_name",
    "disable_tqdm",
    "dataloader_num_workers",
    "save_steps",
    "save_strategy",
    "save_total_limit",
)
#: Settings that may change between a run and its continuation without changing what it makes.
VOLATILE = (
    "versions",
    "plum.overwrite_output_dir",
    "seqlm.overwrite_output_dir",
    "policy.overwrite_output_dir",  # dpo, awsft, grpo
    *(f"{section}.{key}" for section in ("sft", "dpo", "grpo") for key in _VOLATILE_TRAINER),
)
#: What the recipes write into their output directory (removed by ``--overwrite_output_dir``).
RECIPE_ENTRIES = (
    "resolved_config.json",
    "train_log.json",
    "sids",
    "model",
    ".model.tmp",  # the align recipes' final model, before its rename
    "adapter",
    "warmup",
    "incomplete",
    "runs",  # recipes/seqlm.py: one trainer directory per seed
    "reward_model",  # dpo, awsft, grpo: the SASRec reward model trained for the run
    "trainer",  # grpo's checkpoints
    "dpo_log.json",
    "awsft_log.json",
    "grpo_log.json",
    "rollouts.jsonl",
    "rewards.jsonl",
)
#: Directories of which a recipe writes one per round, seed or checkpoint.
RECIPE_GLOBS = ("checkpoint-*", "model_seed*", "round[0-9]*")


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists and scalars are leaves)."""
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: obj}


def config_diff(old: dict, new: dict, ignore: tuple[str, ...] = VOLATILE) -> list[str]:
    """Human-readable ``key: old -> new`` lines for every differing leaf, ``ignore`` aside."""

    def keep(key: str) -> bool:
        return not any(key == i or key.startswith(i + ".") for i in ignore)

    a, b = flatten(json.loads(json.dumps(old))), flatten(json.loads(json.dumps(new)))
    missing = object()
    return [
        f"{k}: {a.get(k, missing)!r} -> {b.get(k, missing)!r}".replace(repr(missing), "(absent)")
        for k in sorted(set(a) | set(b))
        if keep(k) and a.get(k, missing) != b.get(k, missing)
    ]


def _recipe_entries(out: Path) -> list[Path]:
    found = [out / name for name in RECIPE_ENTRIES if (out / name).exists()]
    for pattern in RECIPE_GLOBS:
        found += sorted(p for p in out.glob(pattern) if p.is_dir())
    return found


def check_output_dir(out: Path, resolved: dict, *, overwrite: bool) -> None:
    """Stop if ``out`` holds a run with other settings; clear it first under ``overwrite``.

    Call it on the main process only, before anything is written.

    Raises:
        UserError: ``out`` is a file, or holds recipe artifacts made with other settings (or
            with no record of their settings).
    """
    if out.exists() and not out.is_dir():
        raise UserError(out, "--output_dir is a file", "pass a directory path")
    entries = _recipe_entries(out) if out.is_dir() else []
    if not entries:
        return
    if overwrite:
        for p in entries:
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()
        logger.warning("--overwrite_output_dir: removed %s", ", ".join(p.name for p in entries))
        return
    record = out / "resolved_config.json"
    fix = "pass --overwrite_output_dir true to replace that run, or choose another --output_dir"
    if not record.is_file():
        raise UserError(
            out,
            "holds recipe artifacts ("
            + ", ".join(p.name for p in entries)
            + ") but no resolved_config.json saying how they were made",
            fix,
        )
    try:
        old = json.loads(record.read_text())
    except (OSError, ValueError) as e:
        raise UserError(record, f"unreadable ({e})", fix) from None
    diff = config_diff(old, resolved)
    if diff:
        shown = "; ".join(diff[:8]) + (f"; and {len(diff) - 8} more" if len(diff) > 8 else "")
        raise UserError(
            out,
            f"holds a run made with other settings ({shown}); reusing its artifacts would "
            "silently mix the two",
            fix,
        )


def check_sid_artifact(sid_dir: Path, meta: dict, expected: dict[str, Any]) -> None:
    """Stop if the SID map in ``sid_dir`` was built with other settings than ``expected``.

    Args:
        meta: The map's recorded ``meta``.
        expected: ``{"sid_config": ..., "data_config": ..., "data_fingerprint": ...}`` of this
            run: the data's content too, so a map built from data that changed since at the
            same path and settings is refused (``recllm.data.fingerprint``).
    """
    diff = config_diff({k: meta.get(k) for k in expected}, expected, ignore=())
    if diff:
        raise UserError(
            sid_dir / "sid_map.json",
            f"was built with other settings ({'; '.join(diff[:8])})",
            "pass --overwrite_output_dir true to rebuild it, or --sid_map DIR to use it on purpose",
        )
