"""Reasoning SFT (OneRec-Think) as a function: the PLUM recipe with rationale rows in the mixture.

``recipes/onerec_think.py`` parses its YAML and command line and calls :func:`run_think`, which
runs the PLUM recipe's stages (:mod:`recllm.train.stages`): it validates the settings and loads
the data as ``plum_sft`` does, checks the rationale dataset against that data and records the
set (path and content hash) with the run's settings, then trains with the ``reason_rec`` task fed
from the rationales (:func:`recllm.train.plum.train_and_save`):

- from a PLUM-aligned model directory (``--model_name_or_path outputs/plum_sft/model``): its SID
  map and vocabulary are reused (no new rows; set ``warmup_steps_embed: 0``), and the data must
  be the data the model records (same fingerprint);
- from a base LM: the whole PLUM pipeline runs (SIDs, vocabulary, warm-up, alignment tasks) with
  the reasoning rows mixed in.

Rows ``history -> <think>rationale</think> -> SID`` are trained with the loss on the whole
answer (rationale and SID), mixed with plain recommendation rows (``rec`` / ``rec_sequence``);
the two prompts differ only in their last instruction, so one model serves both (think or not).
Full fine-tuning, LoRA with trainable SID rows and QLoRA work as in ``plum_sft`` (same flags,
same accelerate configs).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from trl import ModelConfig, SFTConfig

from recllm.data import DataConfig
from recllm.errors import UserError
from recllm.sid.config import SIDConfig
from recllm.tasks import TaskConfig
from recllm.train import recipe_args, stages
from recllm.train.plum import PlumArguments, train_and_save

logger = logging.getLogger(__name__)


@dataclass
class ThinkArguments:
    """Options of the reasoning recipe (the rest: the PLUM recipe's configs)."""

    rationales: str | None = field(
        default=None,
        metadata={
            "help": "Rationale dataset directory (`recllm reason generate --out DIR`); its rows "
            "feed the reason_rec task of the mixture."
        },
    )
    control: bool = field(
        default=False,
        metadata={
            "help": "Train the no-think control arm: the same data, mixture (without the "
            "reason_rec rows), steps and settings; the rationales are still checked against "
            "the data, and the model is saved without a `think` record."
        },
    )


def run_think(
    think: ThinkArguments,
    plum: PlumArguments,
    data_cfg: DataConfig,
    sid_cfg: SIDConfig,
    task_cfg: TaskConfig,
    sft_cfg: SFTConfig,
    model_cfg: ModelConfig,
) -> Path:
    """Check the rationales and the start model, then run the PLUM stages with them.

    The rationale set (its path and a SHA-256 of its rows) is part of the run's recorded
    settings, so a rerun or a resume into the same output directory with another set stops
    with the settings that differ instead of mixing the two sets.

    Raises:
        UserError: No or a bad rationale dataset, one made from other data, a mixture without
            ``reason_rec``, or a start model trained on other data.
    """
    from recllm.tasks.reasoning import load_rationales

    if not think.rationales:
        raise UserError(
            "--rationales",
            "is required",
            "make a rationale dataset with `recllm reason generate --out DIR` and pass DIR",
        )
    if think.control:
        task_cfg = replace(task_cfg, mixture={**task_cfg.mixture, "reason_rec": 0.0})
    elif task_cfg.mixture.get("reason_rec", 0) <= 0:
        raise UserError(
            "mixture.reason_rec",
            "is 0, so no reasoning row would be trained",
            "set mixture.reason_rec to 1.0 (every rationale once) or more",
        )
    rows, record = load_rationales(think.rationales)
    start = Path(model_cfg.model_name_or_path)
    aligned = (start / "recllm_vocab.json").is_file()
    if aligned:
        if plum.sid_map is None:
            plum = replace(plum, sid_map=str(start))  # reuse its SIDs (and its vocabulary)
        if plum.warmup_steps_embed:
            logger.info(
                "starting from the aligned model %s: no embedding-only warm-up (its SID rows are "
                "trained)",
                start,
            )
            plum = replace(plum, warmup_steps_embed=0)
    run = stages.validate(plum, data_cfg, sid_cfg, task_cfg, sft_cfg, model_cfg)
    stages.load_data(run)
    _check_same_data(run, think.rationales, record, start if aligned else None)
    rationales = {
        "rationales": str(think.rationales),
        "rationales_sha256": stages.rows_sha256(rows),
        "control": think.control,
    }
    run.resolved["think"] = rationales
    think_record = (
        None
        if think.control
        else {
            "task": "reason_rec",
            "rationales": str(think.rationales),
            "rationales_sha256": rationales["rationales_sha256"],
            "rationale_source": record.get("source"),
            "teacher": (record.get("teacher") or {}).get("model"),
            "rationale_rows": len(rows),
            "start_model": str(start),
        }
    )
    return train_and_save(
        run, rationales=None if think.control else list(rows), think_record=think_record
    )


def _check_same_data(
    run: stages.PlumRun, rationales: str, record: dict[str, Any], start: Path | None
) -> None:
    """The rationales and an aligned start model must come from this run's data."""
    actual = _plain(run.fingerprint)
    if record.get("data_fingerprint") != actual:
        raise UserError(
            f"--rationales {rationales}",
            "was made from other data than this run's (its data fingerprint differs)",
            "generate the rationales from the same data settings (recllm reason generate "
            "--model-dir START_MODEL, or the same --data and flags)",
        )
    if start is not None:
        from recllm.vocab.checkpoint import read_vocab_record

        rec = read_vocab_record(start).get("recommender") or {}
        if _plain(rec.get("data_fingerprint")) != actual:
            raise UserError(
                f"--model_name_or_path {start}",
                "was trained on other data than this run's (its data fingerprint differs)",
                "pass the data settings the model was trained with",
            )


def _plain(obj):
    """A fingerprint as plain JSON values (tuples -> lists), for comparison with a read file."""
    return None if obj is None else json.loads(json.dumps(obj))


RECIPE_TYPES = (
    ThinkArguments,
    PlumArguments,
    DataConfig,
    SIDConfig,
    TaskConfig,
    SFTConfig,
    ModelConfig,
)


def parse_recipe_args(argv: list[str] | None = None):
    """Parse YAML + command line into the seven configs of :func:`run_think`."""
    return recipe_args.parse_recipe_args(RECIPE_TYPES, argv, prog="onerec_think")
