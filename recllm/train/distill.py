"""Teacher distillation: an item-id model (SASRec) teaches a SID model, per SID level.

A SID model predicts an item one code at a time; a teacher such as SASRec scores every item at
once. The teacher's next-item distribution ``p`` over the catalog turns into one soft target per
level of the SID tree, conditioned on the true item's prefix (the same teacher forcing the
next-token loss uses):

    q_1(a)          = sum of p(i) over the items whose first code is a
    q_2(b | a*)     = sum of p(i) over the items under (a*, b)        / q_1(a*)
    q_l(c | prefix) = the mass under (prefix, c)                      / the mass under prefix

where ``a*`` is the true item's first code. The student's distribution at each code position is
its softmax over that level's code tokens only, the same restriction the trie-constrained
decoding applies, and the loss is ``KL(q_l || student_l)`` averaged over the trained code
positions (Hinton's temperature on both sides, times ``T^2``). It is added to the next-token
loss with a weight (``--distill_weight``).

Which positions learn from the teacher is read from the token ids themselves: every complete run
of code tokens (levels 0..L-1 in order, with or without the ``<|sid_begin|>``/``<|sid_end|>``
markers around it) is an item, the items before it are its context,
and its code positions are distilled when they are trained (their labels are not ``-100``) and
at least one item precedes it. That covers the SID-sequence decoder, where every item of a
window is a target of the ones before it, and the chat model's recommendation rows, whose
prompt lists the history's SIDs and whose completion is the next item's.

The student's code logits are computed from the backbone's last hidden state at those positions
only, by a forward hook inside the model's forward (where a sharded LM head is gathered, as it is
for TRL's fused head), so TRL's fused LM-head loss keeps running unchanged beside it and no
``(batch, length, vocabulary)`` logits are built.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from recllm.sid.sidmap import SIDMap
    from recllm.vocab.format import SIDTokenIds

logger = logging.getLogger(__name__)


class SIDTeacher:
    """A SASRec teacher read in SID terms: per-level soft targets and the distillation loss.

    Args:
        teacher: A trained :class:`recllm.baselines.sasrec.SASRec` (put in eval mode; never
            trained here): its ``item_ids``, ``index``, ``encode``, ``logits`` and
            ``config.max_len`` are read.
        sid_map: The student's SID map. Teacher items without a SID lose their probability mass
            (the rest is renormalized); SID items the teacher does not know are never distilled.
        token_ids: The student tokenizer's SID token layout.
        temperature: Softens both the teacher's and the student's distributions.

    Raises:
        ValueError: Fewer than half of the SID map's items are known to the teacher (it was
            trained on another catalog), or a temperature <= 0.
    """

    def __init__(
        self,
        teacher: Any,
        sid_map: SIDMap,
        token_ids: SIDTokenIds,
        temperature: float = 1.0,
    ) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if tuple(token_ids.codebook_sizes) != tuple(sid_map.codebook_sizes):
            raise ValueError(
                f"the tokenizer's SID layout {token_ids.codebook_sizes} is not the SID map's "
                f"{sid_map.codebook_sizes}"
            )
        self.teacher = teacher.eval()
        self.token_ids = token_ids
        self.temperature = float(temperature)
        self.levels = sid_map.levels
        known = [j for j, item in enumerate(teacher.item_ids) if item in sid_map]
        shared = len(known) / max(1, len(sid_map))
        if shared < 0.5:
            raise ValueError(
                f"the teacher knows {len(known)} of the SID map's {len(sid_map)} items: it was "
                "trained on another catalog"
            )
        if len(known) < teacher.num_items:
            logger.warning(
                "%d of the teacher's %d items have no SID: their probability is dropped",
                teacher.num_items - len(known),
                teacher.num_items,
            )
        device = next(teacher.parameters()).device
        #: teacher columns (0-based item index) that have a SID, and their codes (N_known, L)
        self.columns = torch.tensor(known, dtype=torch.long, device=device)
        self.codes = torch.tensor(
            [sid_map.code(teacher.item_ids[j]) for j in known], dtype=torch.long, device=device
        ).reshape(len(known), self.levels)
        # code tuple -> the teacher's 1-based index (0: unknown to the teacher), searchable
        strides = [1] * self.levels
        for level in range(self.levels - 2, -1, -1):
            strides[level] = strides[level + 1] * sid_map.codebook_sizes[level + 1]
        self._strides = torch.tensor(strides, dtype=torch.long)
        keys = torch.as_tensor(sid_map.codes, dtype=torch.long) @ self._strides
        index = torch.tensor(
            [teacher.index.get(item, 0) for item in sid_map.item_ids], dtype=torch.long
        )
        order = torch.argsort(keys)
        self._keys, self._index = keys[order], index[order]
        self._starts = torch.tensor(
            [token_ids.level_ids(level).start for level in range(self.levels)], dtype=torch.long
        )
        self._sizes = torch.tensor(token_ids.codebook_sizes, dtype=torch.long)

    # -- reading items from token ids -------------------------------------------------------------

    def items_in(
        self, input_ids: torch.Tensor, labels: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """The complete SIDs of each row, as left-aligned-to-the-right item columns.

        A SID is a run of ``L`` code tokens, levels ``0..L-1`` in order, with or without its
        markers around it (answers carry them; compact histories, ``rec_history_markers:
        false``, do not).

        Returns:
            ``items`` ``(B, M)`` teacher indices (1-based; 0 = padding or an item the teacher
            does not know), ``codes`` ``(B, M, L)``, ``begin`` ``(B, M)`` the position whose
            next token is the item's first code (its ``<|sid_begin|>``, or the token before it
            in a compact history; -1 on padding) and ``trained`` ``(B, M)``: all of the item's
            code tokens carry labels (every position when ``labels`` is None). Items sit
            right-aligned: the last column is each row's last item, as SASRec's left padding
            wants.
        """
        ids = input_ids.detach().cpu()
        rows, length = ids.shape
        L = self.levels
        first = ids - self._starts[0]
        b, pos = torch.nonzero((first >= 0) & (first < self._sizes[0]), as_tuple=True)
        fits = (pos >= 1) & (pos + L <= length)
        b, pos = b[fits], pos[fits] - 1  # pos: the position that predicts the first code
        offsets = torch.arange(1, L + 1)
        tokens = ids[b[:, None], pos[:, None] + offsets]  # (n, L)
        codes = tokens - self._starts  # each level's code 0 is its first token id
        valid = ((codes >= 0) & (codes < self._sizes)).all(1)
        b, pos, codes = b[valid], pos[valid], codes[valid]
        keys = codes @ self._strides
        at = torch.searchsorted(self._keys, keys).clamp(max=len(self._keys) - 1)
        index = torch.where(self._keys[at] == keys, self._index[at], torch.zeros_like(keys))
        if labels is None:
            trained = torch.ones(len(b), dtype=torch.bool)
        else:
            lab = labels.detach().cpu()
            trained = (lab[b[:, None], pos[:, None] + offsets] != -100).all(1)
        counts = torch.bincount(b, minlength=rows)
        width = int(counts.max()) if len(b) else 0
        # rank of each item within its row (nonzero returns rows in order, positions ascending)
        first = torch.cumsum(counts, 0) - counts
        rank = torch.arange(len(b)) - first[b]
        col = width - counts[b] + rank
        out = {
            "items": torch.zeros(rows, width, dtype=torch.long),
            "codes": torch.zeros(rows, width, L, dtype=torch.long),
            "begin": torch.full((rows, width), -1, dtype=torch.long),
            "trained": torch.zeros(rows, width, dtype=torch.bool),
        }
        out["items"][b, col] = index
        out["codes"][b, col] = codes
        out["begin"][b, col] = pos
        out["trained"][b, col] = trained
        return out

    # -- teacher targets --------------------------------------------------------------------------

    @torch.no_grad()
    def level_targets(self, probs: torch.Tensor, true_codes: torch.Tensor) -> list[torch.Tensor]:
        """Per-level soft targets: ``probs`` ``(P, N_known)`` over the teacher's SID items ->
        one ``(P, K_l)`` distribution per level, level ``l`` conditioned on the first ``l``
        codes of ``true_codes`` ``(P, L)``."""
        under = torch.ones_like(probs, dtype=torch.bool)
        targets = []
        for level, size in enumerate(self.token_ids.codebook_sizes):
            mass = torch.zeros(probs.shape[0], size, dtype=probs.dtype, device=probs.device)
            mass.index_add_(1, self.codes[:, level], probs * under)
            targets.append(mass / mass.sum(-1, keepdim=True).clamp_min(1e-30))
            under &= self.codes[:, level][None, :] == true_codes[:, level : level + 1]
        return targets

    @torch.no_grad()
    def next_item_probs(self, items: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The teacher's softened distribution over its SID items before each selected target:
        ``items`` ``(B, M)`` right-aligned teacher indices, ``targets`` ``(B, M)`` the columns
        to predict (each needs a known item right before it) -> ``(P, N_known)``."""
        max_len = self.teacher.config.max_len
        inputs = items[:, :-1][:, -max_len:]
        wanted = targets[:, 1:][:, -max_len:]
        hidden = self.teacher.encode(inputs.to(self.columns.device))
        logits = self.teacher.logits(hidden[wanted.to(hidden.device)]).float()
        logits = logits[:, self.columns] / self.temperature
        return torch.softmax(logits, dim=-1)

    # -- the loss ---------------------------------------------------------------------------------

    def loss(
        self,
        hidden: torch.Tensor,
        head_weight: torch.Tensor,
        head_bias: torch.Tensor | None,
        input_ids: torch.Tensor,
        labels: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, int]:
        """``(mean KL per distilled code position x T^2, number of distilled items)``.

        Args:
            hidden: The student's last hidden states ``(B, S, H)`` (after the final norm).
            head_weight, head_bias: Its LM head (``(V, H)``, ``(V,)`` or None).
            input_ids, labels: The batch, as the next-token loss sees it.
        """
        found = self.items_in(input_ids, labels)
        items, begin = found["items"], found["begin"]
        if items.shape[1] < 2:
            return hidden.sum() * 0.0, 0
        max_len = self.teacher.config.max_len
        # a target needs its own SID known to the teacher and one known item right before it
        select = found["trained"] & (items > 0)
        select[:, 1:] &= items[:, :-1] > 0
        select[:, 0] = False
        select[:, : max(0, items.shape[1] - 1 - max_len)] = False  # outside the teacher's window
        count = int(select.sum())
        if count == 0:
            return hidden.sum() * 0.0, 0
        probs = self.next_item_probs(items, select)
        true_codes = found["codes"][select].to(probs.device)
        targets = self.level_targets(probs, true_codes)
        rows, _ = torch.nonzero(select, as_tuple=True)
        starts = begin[select]
        rows, starts = rows.to(hidden.device), starts.to(hidden.device)
        total = hidden.new_zeros((), dtype=torch.float32)
        for level, target in enumerate(targets):
            token_range = self.token_ids.level_ids(level)
            weight = head_weight[token_range.start : token_range.stop].float()
            logits = hidden[rows, starts + level].float() @ weight.T
            if head_bias is not None:
                logits = logits + head_bias[token_range.start : token_range.stop].float()
            log_student = F.log_softmax(logits / self.temperature, dim=-1)
            target = target.to(logits.device)
            kl = (torch.xlogy(target, target) - target * log_student).sum(-1)
            total = total + kl.mean()
        return total / len(targets) * self.temperature**2, count


def distill_trainer_class(base: type) -> type:
    """``base`` (TRL's ``SFTTrainer`` or a subclass) with a teacher's loss beside its own.

    The trainer takes two more keyword arguments: ``teacher`` (:class:`SIDTeacher`) and
    ``distill_weight``. Training loss = the base trainer's loss + ``distill_weight`` x the
    teacher's KL (divided over gradient-accumulation steps like the base loss); the KL is
    logged as ``distill_kl``. Evaluation losses are the base trainer's.
    """

    class DistillTrainer(base):
        def __init__(self, *args: Any, teacher: SIDTeacher, distill_weight: float, **kwargs: Any):
            super().__init__(*args, **kwargs)
            if distill_weight <= 0:
                raise ValueError(f"distill_weight must be > 0, got {distill_weight}")
            self.sid_teacher = teacher
            self.distill_weight = float(distill_weight)
            self._batch: tuple[torch.Tensor, torch.Tensor | None] | None = None
            self._distilled: tuple[torch.Tensor, int] | None = None
            model = self.accelerator.unwrap_model(self.model)
            self._head = model.get_output_embeddings()
            model.get_decoder().register_forward_hook(self._distill_in_forward)

        def _distill_in_forward(self, module, args, output) -> None:
            # Inside the model's forward, where a sharded (FSDP) LM head's weights are gathered,
            # as they are for TRL's fused head; only the first, gradient-carrying forward of a
            # training step
            if self._batch is None or self._distilled is not None or not torch.is_grad_enabled():
                return
            hidden = output[0] if isinstance(output, tuple) else output.last_hidden_state
            bias = getattr(self._head, "bias", None)
            self._distilled = self.sid_teacher.loss(hidden, self._head.weight, bias, *self._batch)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if self.model.training:
                self._batch = (inputs["input_ids"], inputs.get("labels"))
            try:
                # return_outputs as asked: with True, TRL's SFTTrainer runs a second, full-logits
                # forward for the outputs (the fused head builds none), which tripled a step
                result = super().compute_loss(
                    model,
                    inputs,
                    return_outputs=return_outputs,
                    num_items_in_batch=num_items_in_batch,
                )
                distilled = self._distilled
            finally:
                self._batch = self._distilled = None
            loss, outputs = result if return_outputs else (result, None)
            if distilled is not None:
                kl, count = distilled
                steps = (
                    self.current_gradient_accumulation_steps
                    if num_items_in_batch is not None
                    else 1
                )
                loss = loss + self.distill_weight * kl / steps
                self._metrics["train"]["distill_kl"].append(float(kl.detach()))
                self._metrics["train"]["distill_items"].append(count)
            return (loss, outputs) if return_outputs else loss

    DistillTrainer.__name__ = DistillTrainer.__qualname__ = f"Distill{base.__name__}"
    return DistillTrainer
