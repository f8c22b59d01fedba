"""Constrained SID decoding: every generated SID is a catalog item, at almost no extra cost.

- :mod:`recllm.decode.trie`: the catalog's SIDs as a prefix tree of tensors, and the
  transformers-free span logic (last ``L + 1`` tokens -> in span, trie node, allowed tokens)
  that every decoder shares.
- :mod:`recllm.decode.processor`: :class:`SIDLogitsProcessor` for ``model.generate``.
- :mod:`recllm.decode.beam`: :func:`sid_beam_search`, a fixed-depth beam search that prefills
  each prompt once and returns what ``generate`` returns.
- :mod:`recllm.decode.options`: :class:`DecodeOptions`, the decoding settings, checked once.
- :mod:`recllm.decode.generate`: :func:`generate_sids`, prompts in, ranked items out
  (:mod:`recllm.decode.answers` reads the generated token ids back as items).
"""

from recllm.decode.beam import SIDBeamOutput, sid_beam_search
from recllm.decode.generate import (
    Prompt,
    Recommendation,
    encode_prompts,
    generate_sids,
    left_pad,
    sid_generation_config,
)
from recllm.decode.options import DecodeOptions
from recllm.decode.processor import SIDLogitsProcessor
from recllm.decode.trie import (
    SIDConstraint,
    SIDTrie,
    SpanState,
    allowed_token_mask,
    constrain_scores,
    sid_constraint,
    span_state,
    tails_of,
)

__all__ = [
    "DecodeOptions",
    "Prompt",
    "Recommendation",
    "SIDBeamOutput",
    "SIDConstraint",
    "SIDLogitsProcessor",
    "SIDTrie",
    "SpanState",
    "allowed_token_mask",
    "constrain_scores",
    "encode_prompts",
    "generate_sids",
    "left_pad",
    "sid_beam_search",
    "sid_constraint",
    "sid_generation_config",
    "span_state",
    "tails_of",
]
