"""Warm-up of added items: train only the code-token rows the new items use (issue 31, item 2).

``recllm catalog add --warmup-steps N`` calls :func:`warm_up_added_items` on the new model
directory before it is renamed into place. It trains the input-embedding rows (and the untied
LM-head rows) of the SID code tokens that appear in the new items' codes, on the catalog texts
of the new items (the ``catalog_title_to_sid`` / ``catalog_sid_to_title`` tasks the model's
mixture held, rendered with the templates it was trained with), and nothing else.

Why a plain torch loop rather than TRL's SFTTrainer: the contract is that every other weight
stays bit-identical. A trainer's optimizer (AdamW with weight decay) touches every row of a
parameter that requires grad, even rows whose gradient is zero (decay), and PEFT's
``trainable_token_indices`` cannot wrap a tied LM head under TRL 1.16 (see ../shared/STACK.md).
Here the whole matrix takes a gradient, and the update is written into the chosen rows only
(plain SGD on those rows), so the other rows cannot move by construction; the test checks every
tensor with ``torch.equal``.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from recllm.data.types import Catalog
from recllm.errors import UserError
from recllm.tasks.config import PROMPTS_DIR, TaskConfig
from recllm.tasks.prompting import PromptSpec, task_builder
from recllm.vocab import SID_FORMAT, load_model_with_sids

__all__ = ["WARMUP_TASKS", "warm_up_added_items"]

logger = logging.getLogger(__name__)

#: The catalog tasks a warm-up trains on (those the model's mixture held; both when none did).
WARMUP_TASKS = ("catalog_title_to_sid", "catalog_sid_to_title")


def _rows(tokenizer: Any, sid_map: Any, new_items: Sequence[str]) -> list[int]:
    ids = SID_FORMAT.token_ids(tokenizer, sid_map.codebook_sizes)
    return sorted(
        {t for i in new_items for t in ids.encode(sid_map.code(i))} - {ids.begin_id, ids.end_id}
    )


def _examples(
    tokenizer: Any, spec: PromptSpec, sid_map: Any, catalog: Catalog
) -> list[tuple[list[int], int]]:
    """(token ids, prompt length) per catalog-task example of the new items."""
    mixture = TaskConfig(**spec.task).mixture
    tasks = [t for t in WARMUP_TASKS if mixture.get(t, 0) > 0] or list(WARMUP_TASKS)
    builder = task_builder(spec, sid_map, catalog)
    packaged = None
    out = []
    for task in tasks:
        task_builder_ = builder
        if (
            spec.prompts_dir is not None
            and not (Path(spec.prompts_dir) / f"{task}.jinja").is_file()
        ):
            # a model trained without this task saved no template for it: the packaged one
            if packaged is None:
                packaged = task_builder(
                    dataclasses.replace(spec, prompts_dir=PROMPTS_DIR), sid_map, catalog
                )
                logger.info(
                    "%s has no %s.jinja (its mixture did not hold the task): the warm-up renders "
                    "it with recllm's packaged template",
                    spec.prompts_dir,
                    task,
                )
            task_builder_ = packaged
        for row in task_builder_.catalog_task(task):
            prompt = tokenizer.apply_chat_template(
                row["prompt"], tokenize=False, add_generation_prompt=True
            )
            full = tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=False)
            p_ids = tokenizer(prompt, add_special_tokens=False).input_ids
            f_ids = tokenizer(full, add_special_tokens=False).input_ids
            out.append((f_ids, len(p_ids)))
    return out


def warm_up_added_items(
    model_dir: str | Path,
    new_items: Sequence[str],
    new_catalog: Catalog,
    *,
    steps: int,
    learning_rate: float = 1e-2,
    seed: int = 0,
) -> dict[str, Any]:
    """Train the new items' code-token rows in ``model_dir`` for ``steps`` steps, in place.

    Args:
        model_dir: A complete model directory whose SID map holds ``new_items``.
        new_items: The added items.
        new_catalog: Their texts (titles for the catalog tasks).
        steps: Optimisation steps (one example each, cycling through the shuffled examples).
        learning_rate: SGD step size on the rows.
        seed: Example order.

    Returns:
        ``{"steps", "rows", "examples", "loss_first", "loss_last"}``.

    Raises:
        UserError: A SID-sequence decoder (no text vocabulary: no catalog texts to train on).
    """
    model_dir = Path(model_dir)
    spec = PromptSpec.from_model_dir(model_dir)
    if spec.style != "chat":
        raise UserError(
            "--warmup-steps",
            f"{model_dir} is a SID-sequence decoder (prompt style {spec.style!r}): it has no "
            "text vocabulary, so there are no catalog texts to warm the new items up on",
            "leave out --warmup-steps (the new items are reachable without it)",
        )
    model, tokenizer, sid_map = load_model_with_sids(model_dir, dtype=torch.float32)
    rows = _rows(tokenizer, sid_map, new_items)
    examples = _examples(tokenizer, spec, sid_map, new_catalog)
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    mats = [emb] + ([head.weight] if head is not None and head.weight is not emb else [])
    for p in model.parameters():
        p.requires_grad_(False)
    for w in mats:
        w.requires_grad_(True)
    idx = torch.tensor(rows)
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    model.eval()  # no dropout: the rows see the network the model serves with
    losses = []
    for step in range(steps):
        ids, n_prompt = examples[order[step % len(order)]]
        x = torch.tensor([ids])
        labels = x.clone()
        labels[:, :n_prompt] = -100
        loss = model(input_ids=x, labels=labels).loss
        loss.backward()
        with torch.no_grad():
            for w in mats:
                w[idx] -= learning_rate * w.grad[idx]  # only these rows move
                w.grad = None
        losses.append(float(loss.detach()))
    for w in mats:
        w.requires_grad_(False)
    model.save_pretrained(model_dir)
    result = {
        "steps": steps,
        "rows": len(rows),
        "examples": len(examples),
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
    }
    logger.info("Warm-up of %d added items: %s", len(new_items), result)
    return result
