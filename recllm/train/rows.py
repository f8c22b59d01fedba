"""Train only some rows of the embedding matrices (the new SID tokens), bit-exactly.

The embedding-only warm-up of PLUM-style training teaches the new SID rows before anything else
moves. We keep the embedding weights trainable, freeze every other parameter, and zero the
gradient of every row that is not a SID row with a tensor hook. With weight decay 0 on those
weights, Adam's update of a row whose gradient was always zero is exactly 0 (its moments stay 0),
so every other weight stays bit-identical, and the trainer (TRL's SFTTrainer, its fused LM-head
loss, accelerate, DeepSpeed) needs no special casing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

logger = logging.getLogger(__name__)


@dataclass
class RowTraining:
    """Handles of :func:`train_rows_only`; call :meth:`remove` to lift the gradient masks."""

    params: list[nn.Parameter]
    hooks: list[torch.utils.hooks.RemovableHandle] = field(default_factory=list)

    def remove(self) -> None:
        for h in self.hooks:
            h.remove()
        self.hooks.clear()


def embedding_params(model: nn.Module) -> list[nn.Parameter]:
    """The input embedding weight, plus the output embedding weight when it is a separate
    tensor (untied). Tied models return one parameter."""
    params = [model.get_input_embeddings().weight]
    out = model.get_output_embeddings()
    if out is not None and out.weight is not params[0]:
        params.append(out.weight)
    return params


def row_mask(num_rows: int, rows: Iterable[int], device: torch.device) -> torch.Tensor:
    """``(num_rows, 1)`` float mask: 1 on ``rows``, 0 elsewhere."""
    mask = torch.zeros(num_rows, 1, device=device)
    mask[torch.as_tensor(list(rows), dtype=torch.long, device=device)] = 1.0
    return mask


def mask_row_gradients(params: list[nn.Parameter], rows: Iterable[int]) -> list:
    """Zero the gradient of every row outside ``rows`` for each of ``params``."""
    rows = list(rows)
    hooks = []
    for p in params:
        mask = row_mask(p.shape[0], rows, p.device).to(p.dtype)
        hooks.append(p.register_hook(lambda g, m=mask: g * m))
    return hooks


def train_rows_only(model: nn.Module, rows: Iterable[int]) -> RowTraining:
    """Freeze everything except ``rows`` of the embedding matrices.

    Args:
        model: A Hugging Face causal LM.
        rows: Token ids whose input (and, if untied, output) embedding rows train.

    Returns:
        The trainable parameters and the hooks (remove them before training other parameters).
        The optimizer must not apply weight decay to these parameters
        (:func:`recllm.train.sft.sft_config_for_rows` sets it to 0).
    """
    rows = sorted(set(int(r) for r in rows))
    params = embedding_params(model)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    hooks = mask_row_gradients(params, rows)
    n_train = len(rows) * sum(p.shape[1] for p in params)
    logger.info(
        "embedding-only stage: %d rows x %d matrices train (%d effective parameters); "
        "everything else frozen",
        len(rows),
        len(params),
        n_train,
    )
    return RowTraining(params, hooks)
