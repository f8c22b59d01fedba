"""Free text with SID spans: generation (span-constrained or not) and reading the spans back.

A chat reply, a dialogue answer or a playground generation is text in which the model may name
items as SID spans (``<|sid_begin|>`` + one code per level + ``<|sid_end|>``).
:func:`generate_text` writes such text with transformers ``generate``; with ``constrained=True``
the SID logits processor in its free-text mode makes every span it opens a catalog SID and leaves
everything outside spans alone. :func:`resolve_spans` finds the spans of any text and names their
items: an exact catalog SID, else the catalog items under its longest valid prefix (labelled as
such), else why it is no SID.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from recllm.decode.generate import (
    Prompt,
    _title,
    _without_model_generation_defaults,
    encode_prompts,
    left_pad,
)
from recllm.decode.processor import SIDLogitsProcessor
from recllm.decode.trie import SIDTrie, span_state, tails_of
from recllm.vocab.format import SID_FORMAT

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from recllm.data.types import Catalog
    from recllm.decode.generate import Recommendation
    from recllm.sid.sidmap import SIDMap

__all__ = [
    "SpanView",
    "generate_text",
    "resolve_spans",
    "vllm_generate_text",
    "vllm_sid_answers",
]


def _encode(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Prompt],
    prefill: Sequence[str] | None,
    chat_template_kwargs: Mapping[str, Any] | None = None,
) -> list[list[int]]:
    """Token ids of each prompt (with its generation prompt), then of its prefill text."""
    ids = encode_prompts(tokenizer, prompts, chat_template_kwargs=chat_template_kwargs)
    if prefill is None:
        return ids
    if len(prefill) != len(ids):
        raise ValueError(f"{len(prefill)} prefills for {len(ids)} prompts")
    return [
        i + tokenizer(p, add_special_tokens=False)["input_ids"]
        for i, p in zip(ids, prefill, strict=True)
    ]


@torch.no_grad()
def generate_text(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Prompt],
    trie: SIDTrie,
    *,
    prefill: Sequence[str] | None = None,
    max_new_tokens: int = 96,
    temperature: float = 0.0,
    top_p: float = 1.0,
    constrained: bool = True,
    seed: int | None = None,
    chat_template_kwargs: Mapping[str, Any] | None = None,
) -> list[str]:
    """Continue each prompt with free text, up to the EOS token or ``max_new_tokens``.

    Args:
        prompts: Chat messages (rendered with the generation prompt) or strings.
        trie: The catalog's SID trie (the constraint; also names the SID tokens).
        prefill: Per prompt, text the answer starts with (e.g. a chosen item's SID span and a
            new line); it is part of the context, not of the returned text.
        temperature: 0: greedy; else sampling with ``top_p``.
        constrained: True: every SID span the model opens is a catalog SID (the span-aware
            processor), and code tokens and end markers appear only inside spans; other text is
            free. False: no constraint at all.
        seed: Seed of the sampling (the global RNG is restored afterwards).

    Returns:
        Per prompt, the generated text, SID tokens kept as text, the EOS token dropped, and a
        last SID span that ``max_new_tokens`` cut short removed.
    """
    from transformers import GenerationConfig

    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    ids = _encode(tokenizer, prompts, prefill, chat_template_kwargs)
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    greedy = temperature <= 0
    cfg = GenerationConfig(
        do_sample=not greedy,
        temperature=1.0 if greedy else temperature,
        top_p=1.0 if greedy else top_p,
        top_k=None if greedy else 0,  # a top_k set for greedy decoding draws a warning
        num_beams=1,
        max_new_tokens=max_new_tokens,
        eos_token_id=eos,
        pad_token_id=pad,
        repetition_penalty=1.0,
        use_cache=True,
    )
    processors = (
        [SIDLogitsProcessor(trie, check=False), _SpanTokensInSpans(trie)] if constrained else []
    )
    input_ids, mask = left_pad(ids, 0 if pad is None else pad, model.device)
    rng = torch.random.get_rng_state()
    try:
        if seed is not None:
            torch.manual_seed(seed)
        with _without_model_generation_defaults(model):
            out = model.generate(
                input_ids=input_ids,
                attention_mask=mask,
                generation_config=cfg,
                logits_processor=processors,
            )
    finally:
        torch.random.set_rng_state(rng)
    texts = []
    for row in out[:, input_ids.shape[1] :].tolist():
        if eos is not None and eos in row:
            row = row[: row.index(eos)]
        if pad is not None and pad != eos:
            row = [t for t in row if t != pad]
        texts.append(_cut_open_span(tokenizer.decode(row, skip_special_tokens=False)))
    return texts


def _cut_open_span(text: str) -> str:
    """Drop a last SID span that the token limit cut short."""
    begin, end = SID_FORMAT.begin, SID_FORMAT.end
    return text[: text.rfind(begin)] if text.rfind(begin) > text.rfind(end) else text


def vllm_generate_text(
    llm: Any,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Prompt],
    *,
    prefill: Sequence[str] | None = None,
    max_new_tokens: int = 96,
    temperature: float = 0.0,
    top_p: float = 1.0,
    constrained: bool = True,
) -> list[str]:
    """:func:`generate_text` on a ``vllm.LLM`` started with recllm's SID processor
    (:func:`recllm.decode.vllm_beam.start_vllm_engine`): ``constrained`` switches it per
    request (every opened span is a catalog SID; unlike :func:`generate_text`, code tokens
    outside spans are not masked); vLLM samples with the engine's seed."""
    from vllm import SamplingParams, TokensPrompt

    from recllm.decode.vllm_processor import EXTRA_SID

    params = SamplingParams(
        temperature=max(temperature, 0.0),
        top_p=top_p if temperature > 0 else 1.0,
        max_tokens=max_new_tokens,
        skip_special_tokens=False,
        spaces_between_special_tokens=False,  # the text transformers decodes
        extra_args={EXTRA_SID: bool(constrained)},
    )
    ids = _encode(tokenizer, prompts, prefill)
    requests = [TokensPrompt(prompt_token_ids=i) for i in ids]
    outs = llm.generate(requests, params, use_tqdm=False)
    return [_cut_open_span(o.outputs[0].text) for o in outs]


def vllm_sid_answers(
    llm: Any,
    tokenizer: PreTrainedTokenizerBase,
    prompt: Prompt,
    sid_map: SIDMap,
    trie: SIDTrie,
    *,
    n: int,
    temperature: float,
    top_p: float = 1.0,
    constrained: bool = True,
    titles: Catalog | Mapping[str, str] | None = None,
) -> list[Recommendation]:
    """``n`` sampled one-SID answers to ``prompt`` on a ``vllm.LLM`` (the playground's sample
    mode), distinct items best first by sequence log-prob; an answer that is no catalog SID
    (possible only with ``constrained=False``) keeps its slot with ``item_id=None``."""
    from vllm import SamplingParams, TokensPrompt

    from recllm.decode.generate import Recommendation
    from recllm.decode.vllm_processor import EXTRA_SID, EXTRA_SID_ONLY

    if temperature <= 0:
        raise ValueError(
            "vLLM answers here are sampled; Fix: temperature > 0 (beam search with the SID "
            "constraint is the ranked mode)"
        )
    ids = trie.token_ids
    length = trie.levels + 3  # begin, codes, end, stop
    params = SamplingParams(
        n=n,
        temperature=temperature,
        top_p=top_p,
        max_tokens=length,
        logprobs=0,  # the sampled token's logprob: the answer's score
        extra_args={EXTRA_SID: bool(constrained), EXTRA_SID_ONLY: bool(constrained)},
    )
    request = TokensPrompt(prompt_token_ids=encode_prompts(tokenizer, [prompt])[0])
    out = llm.generate([request], params, use_tqdm=False)[0]
    seen: dict[str | None, float] = {}
    answers: list[Recommendation] = []
    for o in sorted(out.outputs, key=lambda o: -(o.cumulative_logprob or 0.0)):
        tokens = list(o.token_ids)
        code = ids.decode(tokens[: trie.levels + 2]) if len(tokens) >= trie.levels + 2 else None
        item = sid_map.item(code) if code is not None else None
        if item is not None and item in seen:
            continue
        score = float(o.cumulative_logprob or 0.0) / length
        title = _title(titles, item) if item is not None and titles is not None else None
        answers.append(Recommendation(item, score, title))
        if item is not None:
            seen[item] = score
    return answers


class _SpanTokensInSpans:
    """Logits processor: outside a SID span, code tokens and the end marker are masked (only
    a span may hold them; the SID processor governs what happens inside)."""

    def __init__(self, trie: SIDTrie) -> None:
        ids = trie.token_ids
        self.trie = trie
        self.blocked = torch.tensor([ids.end_id, *ids.code_ids()])

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.trie.device != scores.device:
            self.trie = self.trie.to(scores.device)
            self.blocked = self.blocked.to(scores.device)
        state = span_state(tails_of(input_ids, self.trie.levels + 1), self.trie)
        outside = (~state.in_span).nonzero().flatten()
        if len(outside):
            scores[outside[:, None], self.blocked[None, :]] = float("-inf")
        return scores


@dataclass(frozen=True)
class SpanView:
    """One SID span of a text and what it names.

    Attributes:
        start: Character offset of the span.
        end: One past its last character.
        text: The span's text.
        match: ``"exact"`` (a catalog SID), ``"prefix"`` (no catalog SID, but its first
            ``depth`` codes lead to catalog items), or ``"invalid"`` (malformed, or no catalog
            item shares even its first code).
        item_id: The item (exact), or the first item under the prefix (prefix); else None.
        title: That item's title, when known.
        depth: Levels matched (``L`` when exact).
        items: Catalog items under the matched prefix (1 when exact).
        reason: Why the span is not exact (empty when it is).
    """

    start: int
    end: int
    text: str
    match: str
    item_id: str | None
    title: str | None
    depth: int
    items: int
    reason: str = ""

    @property
    def label(self) -> str:
        """How a UI names it: the title, marked when it is only a prefix match."""
        name = self.title or self.item_id or "?"
        if self.match == "exact":
            return name
        if self.match == "prefix":
            return f"~{name} (prefix match: {self.depth} levels, {self.items} items)"
        return f"invalid SID ({self.reason})"


def resolve_spans(
    text: str, sid_map: SIDMap, titles: Catalog | Mapping[str, str] | None = None
) -> list[SpanView]:
    """Every SID span in ``text`` (well-formed or not), in order, named as :class:`SpanView`."""
    sizes = sid_map.codebook_sizes
    parsed = SID_FORMAT.parse(text, sizes)
    out = []
    for code, (start, end) in zip(parsed.codes, parsed.spans, strict=True):
        out.append(_resolve(text[start:end], start, end, tuple(code), sid_map, titles))
    for bad in parsed.invalid:
        codes = _leading_codes(bad.text, sizes)
        view = _resolve(bad.text, bad.start, bad.end, codes, sid_map, titles, bad.reason)
        out.append(view)
    return sorted(out, key=lambda v: v.start)


def _leading_codes(span: str, sizes: Sequence[int]) -> tuple[int, ...]:
    """The in-order, in-range codes a malformed span starts with (for a prefix match)."""
    import re

    codes: list[int] = []
    for level, m in enumerate(re.finditer(r"<([a-z])_(\d+)>", span)):
        if level >= len(sizes) or ord(m.group(1)) - ord("a") != level:
            break
        value = int(m.group(2))
        if value >= sizes[level]:
            break
        codes.append(value)
    return tuple(codes)


def _resolve(
    span: str,
    start: int,
    end: int,
    code: tuple[int, ...],
    sid_map: SIDMap,
    titles: Catalog | Mapping[str, str] | None,
    reason: str = "",
) -> SpanView:
    item = sid_map.item(code) if len(code) == len(sid_map.codebook_sizes) else None
    if item is not None and not reason:
        title = _title(titles, item) if titles is not None else None
        return SpanView(start, end, span, "exact", item, title, len(code), 1)
    for depth in range(len(code), 0, -1):
        under = sid_map.items_with_prefix(code[:depth])
        if under:
            title = _title(titles, under[0]) if titles is not None else None
            why = reason or "no catalog item has this SID"
            return SpanView(start, end, span, "prefix", under[0], title, depth, len(under), why)
    return SpanView(
        start, end, span, "invalid", None, None, 0, 0, reason or "no catalog item shares a code"
    )
