"""The options of teacher distillation (:mod:`recllm.train.distill`), shared by the recipes that
train a SID model (``recipes/seqlm.py``, ``recipes/plum_sft.py``). The teacher itself is made by
:func:`recllm.baselines.sasrec.run_teacher`, which the recipes pass in (training sits below the
baselines)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TEACHER_DIR = "teacher"  # the in-run teacher's artifact, under the recipe's output directory


@dataclass
class DistillArguments:
    """A SASRec teacher beside the next-token loss (off while ``distill_weight`` is 0)."""

    distill_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight of the teacher's loss beside the next-token loss (issue 30): a SASRec "
            "teaches every SID level its share of the next-item distribution "
            "(recllm.train.distill); 0 = no teacher."
        },
    )
    teacher: str | None = field(
        default=None,
        metadata={
            "help": "A SASRec artifact trained on this split (sasrec.json), e.g. "
            "OUTPUT_DIR/teacher of an earlier run; null with distill_weight > 0: the recipe "
            "trains one into OUTPUT_DIR/teacher first."
        },
    )
    teacher_minutes: float = field(
        default=10.0, metadata={"help": "Training budget of the in-run teacher, in minutes."}
    )
    teacher_dropout: float = field(
        default=0.5, metadata={"help": "Dropout of the in-run teacher (0.5: sparse data)."}
    )
    distill_temperature: float = field(
        default=1.0,
        metadata={"help": "Softens the teacher and the student alike (> 1: softer targets)."},
    )

    def __post_init__(self) -> None:
        from recllm.errors import UserError

        if self.distill_weight < 0:
            raise UserError(
                f"--distill_weight {self.distill_weight}", "must be 0 or more", "pass 0 or 0.5"
            )
        if self.teacher is not None and not self.distill_weight:
            raise UserError(
                f"--teacher {self.teacher}",
                "is read only when a teacher's loss is on, and --distill_weight is 0",
                "add --distill_weight 0.5, or drop --teacher",
            )
        if self.distill_temperature <= 0 or self.teacher_minutes <= 0:
            raise UserError(
                "--distill_temperature/--teacher_minutes", "must be > 0", "pass 1.0 and 10"
            )


def check_teacher_provider(args: DistillArguments, provider: Any) -> None:
    """Training sits below the baselines, so the recipe hands the teacher's maker in
    (:func:`recllm.baselines.sasrec.run_teacher`); refuse a teacher's loss without it."""
    if args.distill_weight and provider is None:
        raise ValueError(
            "distill_weight > 0 needs teacher_provider=recllm.baselines.sasrec.run_teacher "
            "(recipes/seqlm.py and recipes/plum_sft.py pass it)"
        )


def teacher_record(args: DistillArguments, out: Path) -> dict[str, Any]:
    """What a run's log records of its teacher."""
    return {
        "dir": args.teacher or str(Path(out) / TEACHER_DIR),
        "weight": args.distill_weight,
        "temperature": args.distill_temperature,
    }
