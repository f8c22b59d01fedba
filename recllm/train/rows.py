"""Train only some rows of the embedding matrices (the new SID tokens), bit-exactly.

The embedding-only warm-up of PLUM-style training teaches the new SID rows before anything else
moves. We keep the embedding weights trainable, freeze every other parameter, and zero the
gradient of every row that is not a SID row with a tensor hook. With weight decay 0 on those
weights, Adam's update of a row whose gradient was always zero is exactly 0 (its moments stay 0),
so every other weight stays bit-identical, and the trainer (TRL's SFTTrainer, its fused LM-head
loss, accelerate with DDP or FSDP2) needs no special casing. The hook goes on the weight tensors
the forward actually uses (under FSDP2, the gathered unsharded ones), so it also holds when the
model is sharded.
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
    hooks: list = field(default_factory=list)  # anything with a remove()

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


class _MaskForwardWeights:
    """Masks the gradient of the embedding weights the forward really uses.

    Without sharding these are the model's own parameters, masked once. Under FSDP2 the
    parameters are replaced by sharded ones and the forward uses unsharded copies gathered just
    before it (FSDP then reduce-scatters their gradients), or, for TRL's fused LM head, the
    sharded weight itself gathered inside the autograd graph. A hook on the parameter the model
    was built with never fires there. So this is called as a forward pre-hook of the input
    embedding (after FSDP's own pre-hook, which FSDP prepends, has gathered it) and as a forward
    hook of the whole model (the LM head as the forward used it; a leaf's hooks may be added
    any time before backward), and masks whatever tensors the embedding modules hold then, each
    once. The mask follows the gradient: full rows for a full gradient, this rank's rows for a
    sharded (DTensor) one.
    """

    def __init__(self, model: nn.Module, rows: list[int]) -> None:
        self.model = model
        self.rows = rows
        # tensor id -> (tensor, hook); the tensor is kept so that its id is not reused
        self.masked: dict[int, tuple[torch.Tensor, torch.utils.hooks.RemovableHandle]] = {}

    def mask(self, g: torch.Tensor) -> torch.Tensor:
        mask = row_mask(g.shape[0], self.rows, g.device).to(g.dtype)
        if hasattr(g, "device_mesh"):  # a DTensor gradient: each rank masks its own rows
            from torch.distributed.tensor import distribute_tensor

            # src_data_rank=None: every rank cuts its piece of the same mask, no communication
            mask = distribute_tensor(mask, g.device_mesh, g.placements, src_data_rank=None)
        return g * mask

    def __call__(self, module: nn.Module, *args) -> None:
        for p in embedding_params(self.model):
            if p.requires_grad and id(p) not in self.masked:
                self.masked[id(p)] = (p, p.register_hook(self.mask))

    def remove(self) -> None:
        for _, hook in self.masked.values():
            hook.remove()
        self.masked.clear()


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
    forward_weights = _MaskForwardWeights(model, rows)
    hooks = [
        model.get_input_embeddings().register_forward_pre_hook(forward_weights),
        model.register_forward_hook(forward_weights),
        forward_weights,
    ]
    n_train = len(rows) * sum(p.shape[1] for p in params)
    logger.info(
        "embedding-only stage: %d rows x %d matrices train (%d effective parameters); "
        "everything else frozen",
        len(rows),
        len(params),
        n_train,
    )
    return RowTraining(params, hooks)


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks of a Hugging Face causal LM, bottom first.

    Raises:
        ValueError: The model has no ``get_decoder().layers`` list (not a decoder-only LM).
    """
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    layers = getattr(decoder, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(
            f"{type(model).__name__} has no decoder layer list (get_decoder().layers); "
            "train_top_layers needs a decoder-only causal LM"
        )
    return layers


def check_top_layers_flag(n_layers: int | None, use_peft: bool) -> None:
    """``--train_top_layers``: at least 1, and not with ``--use_peft`` (both choose what trains).

    Raises:
        UserError: Either of those.
    """
    from recllm.errors import UserError

    if n_layers is not None and n_layers < 1:
        raise UserError(
            f"--train_top_layers {n_layers}",
            "must be at least 1",
            "pass the number of top layers to train, or null for every weight",
        )
    if n_layers is not None and use_peft:
        raise UserError(
            f"--train_top_layers {n_layers}",
            "freezes layers of a full fine-tuning; with --use_peft the adapters decide what trains",
            "drop one of --train_top_layers and --use_peft",
        )


def train_top_layers(model: nn.Module, n_layers: int, rows: Iterable[int]) -> RowTraining:
    """Train only the top ``n_layers`` decoder blocks, the final norm and the ``rows`` of the
    output embedding; everything below stays frozen and backward stops at the lowest trained
    block.

    The input side of the SID rows keeps its value (from the warm-up): their embeddings enter
    the network below the frozen blocks, and a gradient for them would cost a backward pass
    through every frozen block. With tied embeddings the shared rows still learn from the LM
    head. With 6 of SmolLM2-135M's 30 blocks training, an SFT step costs about 40% of a full
    one (``scripts/bench_sft.py``).

    Args:
        model: A Hugging Face decoder-only causal LM.
        n_layers: Top blocks that train (a model with fewer trains all of its blocks).
        rows: Token ids whose embedding rows train.

    Returns:
        The handles: :meth:`RowTraining.remove` lifts the row masks and the detach hook; the
        caller re-enables ``requires_grad`` where the next stage needs it.
    """
    rows = sorted(set(int(r) for r in rows))
    layers = decoder_layers(model)
    if n_layers < 1:
        raise ValueError(f"train_top_layers must be >= 1, got {n_layers}")
    if n_layers > len(layers):  # a shallower model than the setting was made for: all of it
        logger.warning(
            "train_top_layers %d: the model has %d decoder layers; all of them train",
            n_layers,
            len(layers),
        )
        n_layers = len(layers)
    handles = train_rows_only(model, rows)
    for layer in layers[len(layers) - n_layers :]:
        layer.requires_grad_(True)
    norm = getattr(model.get_decoder(), "norm", None)
    if isinstance(norm, nn.Module):
        norm.requires_grad_(True)

    # Cut the graph where the lowest trained block reads its input. A hook on the embedding's
    # output would not hold: trainers re-attach gradients there (transformers'
    # enable_input_require_grads, which TRL calls), and the backward would then run through
    # every frozen block for nothing.
    def stop_gradient(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if args:
            return (args[0].detach(), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": kwargs["hidden_states"].detach()}

    lowest = layers[len(layers) - n_layers]
    handles.hooks.append(lowest.register_forward_pre_hook(stop_gradient, with_kwargs=True))
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info(
        "SFT trains the top %d of %d decoder layers and %d SID rows (%.1fM parameters with "
        "the embedding matrix, whose other rows stay fixed); the rest is frozen",
        n_layers,
        len(layers),
        len(rows),
        trained / 1e6,
    )
    return handles
