"""Where a resumed post-SFT run (DPO, advantage-weighted SFT) starts: round by round.

An iterated recipe writes ``OUTPUT_DIR/round<N>/`` per round: what it mined, the trainer's
checkpoints (``round<N>/trainer/checkpoint-K``, when ``save_strategy`` saves) and the round's
model. A round is *finished* only once its model directory is in place (written atomically by
:func:`recllm.vocab.save_model_with_sids`) and then its log is written atomically to
``round<N>/recllm_round_complete.json`` (:func:`mark_round_done`). So a ``kill -9`` leaves every
round either finished or not, never in between.

With ``--resume_from_checkpoint true`` (:func:`plan_rounds`) the finished rounds are never redone
(the policy is loaded from the last one's model) and the first unfinished round continues from
its latest complete trainer checkpoint (:mod:`recllm.train.checkpoints`) or, with none, restarts
from nothing: its partial directory is removed. Both give the weights an uninterrupted run gives:
a round depends only on the policy it starts from, the seed and its mined data, which a resumed
round reads back from disk.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recllm.errors import UserError
from recllm.io import write_json_atomic
from recllm.train.checkpoints import LATEST, is_complete, latest_complete, set_aside_incomplete

logger = logging.getLogger(__name__)

#: Written into ``round<N>/`` after its model: the round is finished.
ROUND_DONE = "recllm_round_complete.json"
_ROUND = re.compile(r"^round(\d+)$")
_NO = (None, False, "", "false", "False", "no", "0")


@dataclass(frozen=True)
class RoundPlan:
    """Where an iterated run starts.

    Attributes:
        done: The logs of the finished rounds 1..len(done), in order.
        first: The first round to run (``len(done) + 1``).
        checkpoint: A complete trainer checkpoint of round ``first`` to continue it from.
    """

    done: list[dict[str, Any]] = field(default_factory=list)
    first: int = 1
    checkpoint: Path | None = None

    def last_model(self, out: Path) -> Path | None:
        """The model directory of the last finished round (None: no round finished)."""
        return out / f"round{len(self.done)}" / "model" if self.done else None


def round_dir(out: Path, r: int) -> Path:
    return out / f"round{r}"


def is_round_done(directory: Path) -> bool:
    """Whether ``round<N>/`` is finished (its model and then its completion record written)."""
    return (directory / ROUND_DONE).is_file() and (directory / "model").is_dir()


def mark_round_done(directory: Path, entry: dict[str, Any]) -> None:
    """Record round ``directory`` as finished, with its log ``entry`` (call after its model)."""
    write_json_atomic(directory / ROUND_DONE, entry)


def _round_dirs(out: Path) -> list[tuple[int, Path]]:
    if not out.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in out.iterdir() if (m := _ROUND.match(p.name))]
    return sorted(found)


def plan_rounds(resume: str | bool | None, out: Path, rounds: int) -> RoundPlan:
    """Turn ``--resume_from_checkpoint`` into a :class:`RoundPlan` for ``out`` (rank 0 only:
    it moves half-written checkpoints aside and removes a restarted round's partial directory).

    Args:
        resume: None/false (start over; refused when ``out`` holds finished rounds or
            checkpoints), true/"latest", or the path of a ``round<N>/trainer/checkpoint-K``.
        out: The recipe's output directory.
        rounds: The run's ``--rounds``.

    Raises:
        UserError: Earlier work in ``out`` while not resuming, or a checkpoint path that is not
            a complete checkpoint of an unfinished round of this run.
    """
    found = _round_dirs(out)
    if resume in _NO:
        earlier = [p.name for _, p in found if is_round_done(p)]
        earlier += [str(c) for _, p in found if (c := latest_complete(p / "trainer"))]
        if earlier:
            raise UserError(
                out,
                f"holds rounds or checkpoints of an earlier run of these settings "
                f"({', '.join(earlier)})",
                "pass --resume_from_checkpoint true to continue it, or --overwrite_output_dir "
                "true to start over",
            )
        for _, p in found:  # unfinished rounds of a stopped run of these settings: redone whole
            shutil.rmtree(p)
        return RoundPlan()
    done: list[dict[str, Any]] = []
    while len(done) < rounds and is_round_done(round_dir(out, len(done) + 1)):
        done.append(json.loads((round_dir(out, len(done) + 1) / ROUND_DONE).read_text()))
    first = len(done) + 1
    if first > rounds:
        return RoundPlan(done, first)
    trainer_dir = round_dir(out, first) / "trainer"
    set_aside_incomplete(trainer_dir)
    if resume is True or resume in LATEST:
        checkpoint = latest_complete(trainer_dir)
    else:
        checkpoint = _checked_path(Path(str(resume)).expanduser(), out, first)
    if checkpoint is None and round_dir(out, first).exists():
        shutil.rmtree(round_dir(out, first))  # nothing of it to continue from: redo it whole
        logger.warning("round %d had no complete checkpoint: it restarts from its start", first)
    logger.info(
        "resuming: %d round(s) finished; round %d %s",
        len(done),
        first,
        f"continues from {checkpoint}" if checkpoint else "starts afresh",
    )
    return RoundPlan(done, first, checkpoint)


def _checked_path(path: Path, out: Path, first: int) -> Path:
    want = round_dir(out, first) / "trainer"
    if not path.is_dir() or path.resolve().parent != want.resolve():
        raise UserError(
            f"--resume_from_checkpoint {path}",
            f"is not a checkpoint of round {first}, the first unfinished round of {out}",
            f"pass true (the latest complete checkpoint), or a checkpoint-K under {want}",
        )
    if not is_complete(path):
        raise UserError(
            path,
            "incomplete checkpoint (the run was probably stopped while saving it)",
            "resume from an earlier checkpoint, or pass --resume_from_checkpoint true",
        )
    return path
