"""A transformers logits processor that keeps every generated SID inside the catalog.

:class:`SIDLogitsProcessor` constrains only the SID spans of a generation: after the model
emits ``<|sid_begin|>``, the next ``L`` tokens must walk the SID trie (level-``l`` code tokens
that extend a catalog prefix), then ``<|sid_end|>`` is forced. Elsewhere the model writes free
text, unless ``sid_only=True`` (recommendation prompts whose answer is one SID): then the first
token is forced to ``<|sid_begin|>`` and the token after ``<|sid_end|>`` to the stop token
(EOS / ``<|im_end|>``).

Two facts a caller should know:

- The state comes from the last ``L + 1`` tokens of every row at every call (beam search
  reorders rows between steps, so carried state would go stale), computed with a few tensor ops
  per SID level for the whole ``batch x beams`` at once (:func:`recllm.decode.trie.span_state`).
- In beam search Hugging Face applies logits processors AFTER ``log_softmax``: the processor
  only writes -inf, so the beam scores stay full-vocabulary log-probabilities (the probability
  the unconstrained model gives the SID), not log-probabilities renormalised over the allowed
  set. Greedy search and sampling see raw logits; masking them gives the model's distribution
  restricted to the allowed set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from transformers import LogitsProcessor

from recllm.decode.trie import SIDTrie, constrain_scores, sid_constraint, tails_of

if TYPE_CHECKING:
    from recllm.decode.filters import ItemFilter
    from recllm.decode.prefixes import PrefixSets

__all__ = ["SIDLogitsProcessor"]


class SIDLogitsProcessor(LogitsProcessor):
    """Mask every token that would leave a catalog SID (see the module docstring).

    Args:
        trie: The SID trie of the catalog (:class:`recllm.decode.trie.SIDTrie`); moved to the
            scores' device on first use.
        sid_only: The answer is exactly one SID: force ``<|sid_begin|>`` outside spans and
            ``stop_token_id`` after ``<|sid_end|>``.
        stop_token_id: Token forced after ``<|sid_end|>`` when ``sid_only`` (the tokenizer's
            EOS, ``<|im_end|>`` for ChatML models).
        check: Raise ``ValueError`` when a row sits in a span that is no catalog prefix (a
            malformed SID at the end of a prompt) instead of masking the row completely.
        inplace: Write the mask into the scores tensor transformers passes in, instead of
            returning a new one: no ``(batch*beams, vocab)`` allocation per step. Safe in beam
            search, where that tensor is a fresh ``log_softmax`` output; NOT with greedy search
            or sampling and ``output_logits=True``, where it is the stored raw logits.
        prefixes: Per prompt, the SID prefixes answers must start with
            (:class:`recllm.decode.prefixes.PrefixSets`, one row per prompt of the batch; the
            ``batch * beams`` rows of a call are mapped to prompts in order).
        item_filter: Per prompt, items to exclude / the only items to allow
            (:class:`recllm.decode.filters.ItemFilter`, one row per prompt, mapped like
            ``prefixes``): a code is allowed only if some admissible item lies under it.

    Example:
        >>> proc = SIDLogitsProcessor(trie, sid_only=True, stop_token_id=tok.eos_token_id)
        >>> model.generate(**inputs, generation_config=cfg, logits_processor=[proc])
    """

    def __init__(
        self,
        trie: SIDTrie,
        *,
        sid_only: bool = False,
        stop_token_id: int | None = None,
        check: bool = True,
        inplace: bool = False,
        prefixes: PrefixSets | None = None,
        item_filter: ItemFilter | None = None,
    ) -> None:
        if sid_only and stop_token_id is None:
            raise ValueError("sid_only=True needs stop_token_id (the EOS / end-of-turn token id)")
        if stop_token_id is not None and stop_token_id in trie.token_ids.all_ids():
            raise ValueError(f"stop_token_id {stop_token_id} is a SID token")
        self.trie = trie
        self.sid_only = sid_only
        self.stop_token_id = stop_token_id
        self.check = check
        self.inplace = inplace
        self.prefixes = prefixes
        self.item_filter = item_filter

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """Return ``scores`` (``(batch*beams, vocab)``) with -inf on disallowed tokens."""
        if self.trie.device != scores.device:
            self.trie = self.trie.to(scores.device)
        tails = tails_of(input_ids, self.trie.levels + 1)  # (batch*beams, L + 1)
        prefix_rows = None
        if self.prefixes is not None:
            self.prefixes = self.prefixes.to(scores.device)
            n = input_ids.shape[0]
            if n % self.prefixes.rows:
                raise ValueError(
                    f"{n} rows are not a whole number of beams per prompt for "
                    f"{self.prefixes.rows} prefix-set rows"
                )
            prefix_rows = torch.arange(n, device=scores.device) // (n // self.prefixes.rows)
        filter_rows = None
        if self.item_filter is not None:
            self.item_filter = self.item_filter.to(scores.device)
            filter_rows = _prompt_rows(input_ids.shape[0], self.item_filter.rows, scores.device)
        constraint = sid_constraint(
            tails,
            self.trie,
            sid_only=self.sid_only,
            stop_token_id=self.stop_token_id,
            check=self.check,
            prefixes=self.prefixes,
            prefix_rows=prefix_rows,
            item_filter=self.item_filter,
            filter_rows=filter_rows,
        )
        return constrain_scores(scores, constraint, self.trie, inplace=self.inplace)


def _prompt_rows(n: int, prompts: int, device: torch.device) -> torch.Tensor:
    """``(n,)`` the prompt of each of ``n`` rows (``beams`` consecutive rows per prompt)."""
    if n % prompts:
        raise ValueError(
            f"{n} rows are not a whole number of beams per prompt for {prompts} filter rows"
        )
    return torch.arange(n, device=device) // (n // prompts)
