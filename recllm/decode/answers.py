"""Reading generated answers: token ids -> catalog items, scores and titles.

Shared by every decoder of :mod:`recllm.decode.generate`: a constrained answer must be exactly one
catalog SID (anything else means the constraint was not applied); an unconstrained answer is
read from its token ids and, when it is malformed or names no catalog item, keeps its ranked slot
as a :class:`Recommendation` with ``item_id=None``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import torch

from recllm.decode.trie import SIDTrie
from recllm.vocab.format import SIDTokenIds

if TYPE_CHECKING:
    from recllm.data.types import Catalog
    from recllm.sid.sidmap import SIDMap

__all__ = ["Recommendation"]


class Recommendation(NamedTuple):
    """One recommended item.

    Attributes:
        item_id: The item; None for an invalid answer of unconstrained decoding (malformed, or
            a SID of no catalog item).
        score: Beam: the length-normalised sequence log-prob (full-vocabulary log-probs of
            begin marker, codes, end marker and stop token). Greedy / sample: the summed
            log-probs of those tokens under the model (before temperature).
        title: The item's title when ``titles`` was given, else None.
    """

    item_id: str | None
    score: float
    title: str | None = None


def _parse_free(
    generated: torch.Tensor, token_ids: SIDTokenIds, trie: SIDTrie, stop: int | None
) -> tuple[list[int], list[str | None]]:
    """SID-map row of each unconstrained answer, read from its token ids, or -1.

    An answer is valid when it is exactly ``begin, one code per level, end`` (then ``stop``
    when not None) and the codes are a catalog SID.

    Returns:
        ``(rows, why)``: per answer the row (-1 when invalid) and None, ``"malformed"`` or
        ``"not in catalog"``.
    """
    width = token_ids.levels + 2
    codes: list[tuple[int, ...]] = []
    why: list[str | None] = []
    for seq in generated.tolist():
        code = token_ids.decode(seq[:width])
        ends = stop is None or (len(seq) > width and seq[width] == stop)
        if code is None or not ends:
            why.append("malformed")
            code = (0,) * token_ids.levels
        else:
            why.append(None)
        codes.append(code)
    if not codes:
        return [], []
    rows = trie.item_index(torch.tensor(codes, dtype=torch.long)).cpu().tolist()
    for i, row in enumerate(rows):
        if why[i] is None and row < 0:
            why[i] = "not in catalog"
        if why[i] is not None:
            rows[i] = -1
    return rows, why


def _free_answers(
    out: Any,
    generated: torch.Tensor,
    n_prompts: int,
    k: int,
    *,
    token_ids: SIDTokenIds,
    trie: SIDTrie,
    stop: int | None,
    answer_len: int,
    beam: bool,
    length_penalty: float,
    sid_map: SIDMap,
    titles: Catalog | Mapping[str, str] | None,
    invalid: dict[str, int],
) -> list[list[Recommendation]]:
    """Ranked answers per prompt of one unconstrained ``generate`` call; counts the invalid."""
    if beam and getattr(out, "sequences_scores", None) is not None:
        scores = out.sequences_scores.float().cpu()
    else:
        # _sequence_logprob scores levels + 3 steps: pass the levels that make answer_len steps.
        scores = _sequence_logprob(out.logits, generated, answer_len - 3, stop)
        if beam:  # one beam is greedy search; score it like a beam
            lengths = _answer_lengths(generated, answer_len, stop)
            scores = scores / lengths.float() ** length_penalty
    rows, why = _parse_free(generated, token_ids, trie, stop)
    for reason in why:
        if reason is not None:
            invalid[reason] += 1
    per_prompt: list[list[Recommendation]] = []
    for p in range(n_prompts):
        span = range(p * k, (p + 1) * k)
        entries = sorted(span, key=lambda i: -float(scores[i]))
        best: dict[int, float] = {}
        ranked: list[tuple[int, float]] = []
        for i in entries:
            row, score = rows[i], float(scores[i])
            if row >= 0:
                if row in best:  # sampling may draw one item twice: keep its best slot only
                    continue
                best[row] = score
            ranked.append((row, score))
        recs = []
        for row, score in ranked:
            item = sid_map.item_ids[row] if row >= 0 else None
            recs.append(Recommendation(item, score, _title(titles, item) if item else None))
        per_prompt.append(recs)
    return per_prompt


def _answer_lengths(generated: torch.Tensor, answer_len: int, stop: int | None) -> torch.Tensor:
    """Tokens of each answer: through its first stop token, at most ``answer_len``."""
    n = min(generated.shape[1], answer_len)
    if stop is None:
        return torch.full((generated.shape[0],), n)
    hit = generated[:, :n].cpu() == stop
    first = torch.where(hit.any(1), hit.int().argmax(1) + 1, torch.tensor(n))
    return first


def _parse(generated: torch.Tensor, token_ids: SIDTokenIds, trie: SIDTrie) -> torch.Tensor:
    """SID-map row of each generated answer ``begin, codes..., end, stop``.

    Raises:
        RuntimeError: An answer is not exactly one catalog SID.
    """
    width = token_ids.levels + 2
    codes, bad = [], []
    for row, seq in enumerate(generated[:, :width].tolist()):
        code = token_ids.decode(seq)
        if code is None:
            bad.append(row)
            code = (0,) * token_ids.levels
        codes.append(code)
    rows = trie.item_index(torch.tensor(codes, dtype=torch.long))
    bad += [r for r in (rows < 0).nonzero().flatten().tolist() if r not in bad]
    if bad:
        raise RuntimeError(
            f"{len(bad)} generated answer(s) are not catalog SIDs (first: "
            f"{generated[bad[0]].tolist()}); the SID constraint was not applied"
        )
    return rows.cpu()


def _sequence_logprob(
    logits: tuple[torch.Tensor, ...],
    generated: torch.Tensor,
    levels: int,
    stop: int | None = None,
) -> torch.Tensor:
    """Summed full-vocabulary log-probs of the answer tokens (through the stop token).

    With ``stop``, tokens after an answer's first stop token (padding of a finished row, which
    unconstrained decoding can reach early) are not counted.
    """
    total = torch.zeros(generated.shape[0], dtype=torch.float32, device=generated.device)
    steps = min(len(logits), levels + 3, generated.shape[1])
    live = torch.ones(generated.shape[0], dtype=torch.bool, device=generated.device)
    for t in range(steps):
        logp = torch.log_softmax(logits[t].float(), dim=-1)  # (rows, vocab)
        tok = generated[:, t : t + 1].to(logp.device)
        step = logp.gather(1, tok).squeeze(1).to(total.device)
        total += torch.where(live, step, torch.zeros_like(step))
        if stop is not None:
            live = live & (generated[:, t] != stop)
    return total.cpu()


def _ranked(
    pairs: list[tuple[int, float]],
    sid_map: SIDMap,
    titles: Catalog | Mapping[str, str] | None,
) -> list[Recommendation]:
    """Distinct items by descending score."""
    best: dict[int, float] = {}
    for row, score in pairs:
        if row not in best or score > best[row]:
            best[row] = score
    ranked = sorted(best.items(), key=lambda rs: -rs[1])
    out = []
    for row, score in ranked:
        item = sid_map.item_ids[row]
        out.append(Recommendation(item, score, _title(titles, item)))
    return out


def _title(titles: Catalog | Mapping[str, str] | None, item: str) -> str | None:
    if titles is None:
        return None
    if isinstance(titles, Mapping):
        return titles.get(item)
    return titles.title(item) if item in titles else None
