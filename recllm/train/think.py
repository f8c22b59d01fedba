"""Reasoning SFT (OneRec-Think) as a function: the PLUM recipe with rationale rows in the mixture.

``recipes/onerec_think.py`` parses its YAML and command line and calls :func:`run_think`, which
checks the rationale dataset against the data, then runs :func:`recllm.train.plum.run_plum` with
the ``reason_rec`` task fed from the rationales:

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

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

from trl import ModelConfig, SFTConfig

from recllm.data import DataConfig
from recllm.errors import UserError
from recllm.sid.config import SIDConfig
from recllm.tasks import TaskConfig
from recllm.train import recipe_args
from recllm.train.plum import PlumArguments, run_plum

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

    Raises:
        UserError: No or a bad rationale dataset, one made from other data, a mixture without
            ``reason_rec``, or a start model trained on other data.
    """
    from recllm.data import load_rec_dataset, split_dataset
    from recllm.data.fingerprint import data_fingerprint
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
    dataset = load_rec_dataset(config=data_cfg)
    split = split_dataset(dataset, data_cfg)
    actual = _plain(data_fingerprint(split, dataset.catalog))
    if record.get("data_fingerprint") != actual:
        raise UserError(
            f"--rationales {think.rationales}",
            "was made from other data than this run's (its data fingerprint differs)",
            "generate the rationales from the same data settings (recllm reason generate "
            "--model-dir START_MODEL, or the same --data and flags)",
        )
    start = Path(model_cfg.model_name_or_path)
    if (start / "recllm_vocab.json").is_file():
        from recllm.vocab.checkpoint import read_vocab_record

        rec = read_vocab_record(start).get("recommender") or {}
        if _plain(rec.get("data_fingerprint")) != actual:
            raise UserError(
                f"--model_name_or_path {start}",
                "was trained on other data than this run's (its data fingerprint differs)",
                "pass the data settings the model was trained with",
            )
        if plum.sid_map is None:
            plum = replace(plum, sid_map=str(start))  # reuse its SIDs (and its vocabulary)
        if plum.warmup_steps_embed:
            logger.info(
                "starting from the aligned model %s: no embedding-only warm-up (its SID rows are "
                "trained)",
                start,
            )
            plum = replace(plum, warmup_steps_embed=0)
    think_record = (
        None
        if think.control
        else {
            "task": "reason_rec",
            "rationales": str(think.rationales),
            "rationale_source": record.get("source"),
            "teacher": (record.get("teacher") or {}).get("model"),
            "rationale_rows": len(rows),
            "start_model": str(start),
        }
    )
    return run_plum(
        plum,
        data_cfg,
        sid_cfg,
        task_cfg,
        sft_cfg,
        model_cfg,
        rationales=None if think.control else list(rows),
        think_record=think_record,
    )


def _plain(obj):
    """A fingerprint as plain JSON values (tuples -> lists), for comparison with a read file."""
    import json

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
