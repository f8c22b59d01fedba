"""Recommendation prompts for evaluation and serving: how a saved model is prompted.

A model directory records its prompt style (``recllm_vocab.json`` -> ``recommender``) and may
carry the template it learned (``prompts/rec.jinja``); :class:`PromptSpec` reads that record and
:func:`build_prompts` rebuilds exactly the prompts training showed the model. Evaluation
(:mod:`recllm.eval.run`) and serving (:mod:`recllm.apps.recommender`) both call it, so the two
cannot drift apart; it lives in ``tasks`` because it is text building, below train, decode and
eval.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from recllm.data.splits import Example
    from recllm.data.types import Catalog
    from recllm.sid.sidmap import SIDMap
    from recllm.tasks.builders import TaskBuilder

logger = logging.getLogger(__name__)

#: A chat prompt (``[{"role": ..., "content": ...}]``) or a plain string (``sid_sequence``);
#: the shape :func:`recllm.decode.generate_sids` accepts as its ``Prompt``.
Prompt = str | list[dict[str, Any]]

PROMPT_STYLES = ("chat", "sid_sequence")


@dataclass
class PromptSpec:
    """How a model is prompted for a recommendation (read from its directory).

    Attributes:
        style: ``"chat"`` (the ``rec`` task through the chat template; PLUM recipe) or
            ``"sid_sequence"`` (the history's SIDs back to back; :mod:`recllm.tasks.sequence`).
        max_history: Items of history in a prompt (None: all the split keeps).
        task: ``TaskConfig`` fields of the ``rec`` prompt (chat style).
        prompts_dir: Templates saved with the model (chat style); None: the toolkit's own.
        data: The ``DataConfig`` fields the model was trained with, if recorded.
        think: What the model learned about thinking (``recipes/onerec_think.py``: the task,
            the rationale source); None: a model trained without rationales.
        dialogue: What the model learned about conversations (the ``dialogue`` task's weight
            and settings, :mod:`recllm.tasks.dialogue`); None: trained without them.
    """

    style: str = "chat"
    max_history: int | None = 20
    task: dict[str, Any] = field(default_factory=dict)
    prompts_dir: str | None = None
    data: dict[str, Any] | None = None
    think: dict[str, Any] | None = None
    dialogue: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.style not in PROMPT_STYLES:
            raise ValueError(
                f"prompt style {self.style!r} is not one of {PROMPT_STYLES}; Fix: set "
                "recommender.prompt_style in the model's recllm_vocab.json"
            )

    @classmethod
    def from_model_dir(cls, directory: str | Path) -> PromptSpec:
        """The spec a model directory records; chat with default settings when it has none."""
        from recllm.vocab.checkpoint import PROMPTS_DIRNAME, read_vocab_record

        directory = Path(directory)
        rec = read_vocab_record(directory).get("recommender")
        prompts = directory / PROMPTS_DIRNAME
        if rec is None:
            logger.warning(
                "%s records no prompt style: evaluating with the default chat `rec` prompt",
                directory,
            )
            return cls(prompts_dir=str(prompts) if prompts.is_dir() else None)
        return cls(
            style=rec.get("prompt_style", "chat"),
            max_history=rec.get("max_history", 20),
            task=dict(rec.get("task", {})),
            prompts_dir=str(prompts) if prompts.is_dir() else None,
            data=rec.get("data"),
            think=rec.get("think"),
            dialogue=rec.get("dialogue"),
        )


def task_builder(spec: PromptSpec, sid_map: SIDMap, catalog: Catalog) -> TaskBuilder:
    """The :class:`~recllm.tasks.builders.TaskBuilder` that renders a chat-style model's prompts
    as training did: its recorded task settings and the templates saved with it."""
    from dataclasses import replace

    from recllm.tasks.builders import TaskBuilder
    from recllm.tasks.config import TaskConfig
    from recllm.vocab import SID_FORMAT

    task_cfg = TaskConfig(**spec.task)
    if spec.prompts_dir is not None:
        task_cfg = replace(task_cfg, prompts_dir=spec.prompts_dir)
    return TaskBuilder(catalog, lambda i: SID_FORMAT.render(sid_map.code(i)), task_cfg)


def build_prompts(
    spec: PromptSpec,
    examples: Sequence[Example],
    sid_map: SIDMap,
    catalog: Catalog,
    *,
    think: bool = False,
) -> list[Prompt]:
    """One prompt per example, exactly as the model saw them in training.

    ``think=True`` builds the reasoning prompt (``reason_rec``: the same history, asked to think
    first; a model from ``recipes/onerec_think.py``), else the plain recommendation prompt.

    Raises:
        KeyError: A history item has no SID in ``sid_map`` (the data is not the one the model
            was trained on); the message names the item and the fix.
        ValueError: ``think`` for a model that was not trained to think.
    """

    missing = {i for ex in examples for i in ex.history if i not in sid_map}
    if missing:
        raise KeyError(
            f"{len(missing)} history items have no SID in the model's SID map (e.g. "
            f"{sorted(missing)[:3]}); Fix: evaluate on the data the model was trained on "
            "(same --data and --max-users), or rebuild the SIDs and retrain"
        )
    cut = spec.max_history
    if think and (spec.style != "chat" or spec.think is None):
        raise ValueError(
            "this model was not trained to think (its recllm_vocab.json records no `think`); "
            "Fix: train it with recipes/onerec_think.py, or decode without thinking"
        )
    if spec.style == "sid_sequence":
        from recllm.tasks.sequence import history_text

        return [history_text(ex.history, sid_map, cut) for ex in examples]

    from recllm.data.splits import Example as Ex

    builder = task_builder(spec, sid_map, catalog)
    trimmed = [
        Ex(ex.user_id, tuple(ex.history[-cut:]) if cut else ex.history, ex.target)
        for ex in examples
    ]
    if not think:
        return [row["prompt"] for row in builder.rec(trimmed)]
    return [
        builder.renderer.example(
            "reason_rec",
            history=[builder.item(i) for i in ex.history],
            target=builder.item(ex.target),
            rationale="",
            **builder.history_style,
        )["prompt"]
        for ex in trimmed
    ]
