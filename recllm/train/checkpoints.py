"""Trainer checkpoints a killed run can trust, and where a resumed run starts.

transformers' ``Trainer`` writes ``checkpoint-N/`` file by file (model, optimizer, scheduler, RNG
state, ``trainer_state.json`` last) and its ``get_last_checkpoint`` picks the highest N whatever
is inside, so a ``kill -9`` during a save leaves a half-written directory that a resume then
loads (a truncated ``optimizer.pt``, no ``trainer_state.json``). recllm marks a checkpoint
complete only after the trainer has finished writing it, on every rank
(:class:`MarkCompleteCheckpoints` writes ``recllm_complete.json`` atomically in ``on_save``), and
resumes only from marked checkpoints; unmarked ones are set aside before training starts, so
neither recllm nor the trainer's own rotation ever treats them as the latest.

A recipe has two stages: the embedding-only warm-up (checkpoints under ``OUTPUT_DIR/warmup``)
and SFT (``OUTPUT_DIR/checkpoint-N``). When the warm-up ends, its SID rows are saved
(:func:`save_stage_rows`) so that a resumed SFT stage, LoRA included (whose checkpoints hold only
the adapter), starts from exactly the rows the warm-up produced.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers import TrainerCallback

from recllm.errors import UserError
from recllm.io import atomic_path, write_json_atomic

if TYPE_CHECKING:
    from torch import nn

logger = logging.getLogger(__name__)

#: Written into ``checkpoint-N/`` once every rank has finished writing it.
COMPLETE = "recllm_complete.json"
#: The warm-up stage's result: its SID rows and loss log (``OUTPUT_DIR/warmup/``).
STAGE_ROWS = "sid_rows.pt"
STAGE_LOG = "log_history.json"

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
#: Values of ``--resume_from_checkpoint`` that mean "the latest complete checkpoint".
LATEST = ("true", "True", "latest", "1", "yes")


class MarkCompleteCheckpoints(TrainerCallback):
    """Mark ``checkpoint-N`` complete after the trainer has written all of it, on all ranks."""

    def on_save(self, args, state, control, **kwargs):
        from accelerate import PartialState

        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        PartialState().wait_for_everyone()  # every rank's shard and RNG state is on disk
        if state.is_world_process_zero:
            if not (ckpt / "trainer_state.json").is_file():
                logger.warning("%s has no trainer_state.json; not marking it complete", ckpt)
            else:
                write_json_atomic(ckpt / COMPLETE, {"global_step": state.global_step})
        PartialState().wait_for_everyone()
        return control


def checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every ``checkpoint-N`` directory under ``directory``, by step."""
    if not directory.is_dir():
        return []
    found = []
    for p in directory.iterdir():
        m = _CHECKPOINT.match(p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p))
    return sorted(found)


def is_complete(checkpoint: Path) -> bool:
    """Whether ``checkpoint`` was marked complete by :class:`MarkCompleteCheckpoints`."""
    return (checkpoint / COMPLETE).is_file() and (checkpoint / "trainer_state.json").is_file()


def latest_complete(directory: Path) -> Path | None:
    """The complete checkpoint with the highest step under ``directory``, or None."""
    done = [p for _, p in checkpoints(directory) if is_complete(p)]
    return done[-1] if done else None


def set_aside_incomplete(directory: Path) -> list[Path]:
    """Move unmarked ``checkpoint-N`` dirs (a save that was killed) out of the trainer's sight.

    They go to ``directory/incomplete/checkpoint-N`` (kept for inspection, never loaded).
    Returns the moved paths.
    """
    moved = []
    for _step, p in checkpoints(directory):
        if is_complete(p):
            continue
        dest = directory / "incomplete" / p.name
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        p.rename(dest)
        moved.append(dest)
        logger.warning(
            "%s was not completely written (the run was stopped during its save): moved to %s; "
            "it will not be resumed from",
            p,
            dest,
        )
    return moved


@dataclass(frozen=True)
class ResumePlan:
    """Where each stage of a recipe run starts.

    Attributes:
        warmup_rows: A finished warm-up's saved rows to load instead of rerunning it.
        warmup_checkpoint: A warm-up checkpoint to resume the warm-up from.
        sft_checkpoint: An SFT checkpoint to resume SFT from.
    """

    warmup_rows: Path | None = None
    warmup_checkpoint: Path | None = None
    sft_checkpoint: Path | None = None

    @property
    def resuming(self) -> bool:
        return any((self.warmup_rows, self.warmup_checkpoint, self.sft_checkpoint))


def plan_resume(resume: str | bool | None, out: Path, *, warmup: bool) -> ResumePlan:
    """Turn ``--resume_from_checkpoint`` into a :class:`ResumePlan` for output dir ``out``.

    Args:
        resume: None/false (start over), true/"latest" (the latest complete checkpoint of
            either stage), or the path of a ``checkpoint-N`` directory.
        out: The recipe's output directory (SFT checkpoints; the warm-up's under ``warmup/``).
        warmup: Whether this run has a warm-up stage.

    Raises:
        UserError: A path that is not a complete checkpoint of this output directory, or
            checkpoints of an earlier run while not resuming.
    """
    warm_dir = out / "warmup"
    rows = warm_dir / STAGE_ROWS if warmup and (warm_dir / STAGE_ROWS).is_file() else None
    if resume in (None, False, "", "false", "False", "no", "0"):
        latest = [p for p in (latest_complete(out), latest_complete(warm_dir)) if p]
        if latest:
            raise UserError(
                out,
                f"holds checkpoints of an earlier run of these settings ({', '.join(map(str, latest))})",
                "pass --resume_from_checkpoint true to continue it, or --overwrite_output_dir true "
                "to start over",
            )
        return ResumePlan()
    if resume is True or resume in LATEST:
        sft = latest_complete(out)
        if sft is not None:
            return _sft_resume(sft, rows, warmup, warm_dir)
        if rows is not None:
            return ResumePlan(warmup_rows=rows)
        warm = latest_complete(warm_dir) if warmup else None
        if warm is None:
            logger.warning(
                "--resume_from_checkpoint: no complete checkpoint in %s; starting at step 1", out
            )
        return ResumePlan(warmup_checkpoint=warm)
    path = Path(str(resume)).expanduser()
    if not _CHECKPOINT.match(path.name) or not path.is_dir():
        raise UserError(
            f"--resume_from_checkpoint {resume}",
            "not a checkpoint-N directory",
            f"pass true (the latest complete checkpoint in {out}) or an existing checkpoint-N path",
        )
    if not is_complete(path):
        raise UserError(
            path,
            "incomplete checkpoint (no trainer_state.json or recllm_complete.json: the run was "
            "probably stopped while saving it)",
            "resume from an earlier checkpoint, or pass --resume_from_checkpoint true",
        )
    if path.resolve().parent == warm_dir.resolve():
        return ResumePlan(warmup_checkpoint=path)
    if path.resolve().parent != out.resolve():
        raise UserError(
            path,
            f"not a checkpoint of this run's output directory {out}",
            f"pass --output_dir {path.parent} to continue that run",
        )
    return _sft_resume(path, rows, warmup, warm_dir)


def plan_trainer_resume(resume: str | bool | None, trainer_dir: Path) -> Path | None:
    """The complete checkpoint of a one-stage trainer directory to resume from (None: start at
    step 1), after moving half-written checkpoints aside (rank 0 first; again on the other
    ranks, where it then finds nothing to move). See :func:`plan_resume` for ``resume``.

    Raises:
        UserError: As :func:`plan_resume`.
    """
    set_aside_incomplete(trainer_dir)
    return plan_resume(resume, trainer_dir, warmup=False).sft_checkpoint


def train_from(trainer: Any, checkpoint: Path | None) -> None:
    """``trainer.train()``, continued from ``checkpoint`` when given.

    A checkpoint of the run's last step (a kill after the final save, before the result was
    written) is loaded, not trained from: transformers checks ``max_steps`` only after a step,
    so ``train(resume_from_checkpoint=...)`` would train one step more than the run it resumes.
    """
    if checkpoint is not None:
        from transformers import TrainerState

        state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))
        if state.max_steps and state.global_step >= state.max_steps:
            trainer._load_from_checkpoint(str(checkpoint))
            trainer.state = state
            logger.info(
                "%s is the run's last step: its weights loaded, no step trained", checkpoint
            )
            return
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint is not None else None)


def _sft_resume(sft: Path, rows: Path | None, warmup: bool, warm_dir: Path) -> ResumePlan:
    """Resume SFT from ``sft``, which needs the warm-up's saved rows when there was a warm-up."""
    if warmup and rows is None:
        raise UserError(
            warm_dir / STAGE_ROWS,
            f"missing: {sft} continues a run whose warm-up result is gone",
            "restore it, or start over with --overwrite_output_dir true",
        )
    return ResumePlan(warmup_rows=rows, sft_checkpoint=sft)


def save_stage_rows(
    model: nn.Module, rows: list[int], log_history: list, directory: Path, *, write: bool = True
) -> None:
    """Save the given rows of the model's embedding matrices and the stage's loss log.

    Under FSDP the matrices are sharded (DTensors): every rank must call this, since gathering
    them is a collective; only the rank with ``write`` True writes.
    """
    from recllm.train.rows import embedding_params

    index = torch.as_tensor(sorted(rows), dtype=torch.long)
    full = [p.detach() for p in embedding_params(model)]
    full = [t.full_tensor() if hasattr(t, "full_tensor") else t for t in full]
    if not write:
        return
    payload = {"rows": index, "weights": [t[index].clone().cpu() for t in full]}
    with atomic_path(directory / STAGE_ROWS) as tmp:
        torch.save(payload, tmp)
    write_json_atomic(directory / STAGE_LOG, log_history)


def load_stage_rows(model: nn.Module, rows: list[int], directory: Path) -> list:
    """Write the rows saved by :func:`save_stage_rows` back; returns the stage's loss log.

    Raises:
        UserError: The file holds other rows or matrices than this model has (another SID map
            or model).
    """
    from recllm.train.rows import embedding_params

    path = directory / STAGE_ROWS
    payload = torch.load(path, weights_only=True)
    params = embedding_params(model)
    if payload["rows"].tolist() != sorted(rows) or len(payload["weights"]) != len(params):
        raise UserError(
            path,
            "holds the rows of another SID vocabulary or model",
            "start over with --overwrite_output_dir true",
        )
    with torch.no_grad():
        for p, w in zip(params, payload["weights"], strict=True):
            p[payload["rows"]] = w.to(p.dtype)
    log_file = directory / STAGE_LOG
    return json.loads(log_file.read_text()) if log_file.is_file() else []
