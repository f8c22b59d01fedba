"""Where a SID decoder loses the target: teacher-forced ranks of the target's code, level by level.

Recall@K says how often the target item ends in the top K; it does not say at which level of
its SID the decoder went wrong. Feeding ``prompt + <|sid_begin|> + target codes`` once (teacher
forcing) gives, at every level ``l``, the model's distribution over the codes the trie allows
after the target's true prefix. From it, per level:

- the **rank** of the target's code among those allowed codes (1 = the model's favourite), so
  ``hit@k`` is the share of users whose target code ranks ``<= k`` at that level given a
  correct prefix (level 0's ``hit@k`` is the share whose first code survives a beam of ``k``);
- the **log-probability** of the target's code, renormalised over the allowed codes, in nats:
  the level's share of the item's negative log-likelihood under constrained decoding.

A level with low ``hit@k`` is where beams lose the target; comparing SID schemes or models on
these figures separates what the codes cost from what the decoder costs.

Example:
    >>> report = level_report(model, tok, sid_map, prompts, targets)  # doctest: +SKIP
    >>> report.hit[10]  # share of users with the target code in the top 10, per level
    [0.31, 0.62, 0.88]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from recllm.decode.generate import Prompt
    from recllm.sid.sidmap import SIDMap


@dataclass
class LevelReport:
    """Per-level teacher-forced figures over ``users`` targets (lists are indexed by level)."""

    users: int
    hit: dict[int, list[float]]
    mean_logp: list[float]
    mean_rank: list[float]
    mean_allowed: list[float]

    def as_dict(self) -> dict[str, Any]:
        return {
            "users": self.users,
            **{f"hit@{k}": [round(v, 4) for v in vals] for k, vals in self.hit.items()},
            "mean_logp": [round(v, 4) for v in self.mean_logp],
            "mean_rank": [round(v, 2) for v in self.mean_rank],
            "mean_allowed": [round(v, 2) for v in self.mean_allowed],
        }


def level_ranks(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sid_map: SIDMap,
    prompts: Sequence[Prompt],
    targets: Sequence[str],
    *,
    batch_size: int = 64,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Teacher-forced ``(ranks, logp, allowed)``, each ``(users, levels)``.

    ``ranks[u, l]``: 1-based rank of target ``u``'s level-``l`` code among the codes the trie
    allows after its true prefix (ties count against the target); ``logp``: its log-probability
    renormalised over those codes; ``allowed``: how many codes that is.

    Raises:
        KeyError: A target has no SID in ``sid_map``.
    """
    import torch
    from tqdm.auto import tqdm

    from recllm.decode import SIDTrie, encode_prompts, left_pad
    from recllm.vocab import SID_FORMAT

    if len(prompts) != len(targets):
        raise ValueError(f"{len(prompts)} prompts but {len(targets)} targets")
    missing = [t for t in targets if t not in sid_map]
    if missing:
        raise KeyError(
            f"{len(missing)} targets have no SID in the model's SID map (e.g. {missing[:3]}); "
            "Fix: use the data the model was trained on"
        )
    token_ids = SID_FORMAT.token_ids(tokenizer, sid_map.codebook_sizes)
    trie = SIDTrie.from_sid_map(sid_map, token_ids).to(model.device)
    levels = trie.levels
    codes = torch.as_tensor(np.asarray([sid_map.code(t) for t in targets]), device=model.device)
    # node of each target prefix: root, then one step down per level
    nodes = [torch.zeros(len(targets), dtype=torch.long, device=model.device)]
    for lv in range(levels - 1):
        nodes.append(trie.child(nodes[-1], codes[:, lv]))
    nodes = torch.stack(nodes, dim=1)  # (users, levels)
    code_tokens = trie.code_token_start[None, :] + codes  # (users, levels)

    encoded = encode_prompts(tokenizer, prompts)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    code_range = torch.arange(trie.max_codes, device=model.device)
    ranks, logps, allowed_n = [], [], []
    model.eval()
    starts = range(0, len(encoded), batch_size)
    for start in tqdm(starts, desc="level ranks", unit="batch", disable=not progress):
        stop = start + batch_size
        seqs = [
            [*e, token_ids.begin_id, *row.tolist()]
            for e, row in zip(encoded[start:stop], code_tokens[start:stop].cpu(), strict=True)
        ]
        ids, mask = left_pad(seqs, pad, model.device)
        position_ids = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
        with torch.inference_mode():
            # positions -levels-1 .. -2 (begin marker and the first levels-1 codes) predict codes
            logits = (
                model(
                    input_ids=ids,
                    attention_mask=mask,
                    position_ids=position_ids,
                    logits_to_keep=levels + 1,
                )
                .logits[:, :levels]
                .float()
            )
        batch_ranks, batch_logp, batch_allowed = [], [], []
        for lv in range(levels):
            cols = (trie.code_token_start[lv] + code_range).clamp(max=token_ids.last_id)
            scores = logits[:, lv, cols]  # (batch, max_codes)
            ok = trie.allowed[nodes[start:stop, lv]] & (code_range < trie.codebook_sizes[lv])
            scores = scores.masked_fill(~ok, float("-inf"))
            target = scores.gather(1, codes[start:stop, lv, None])
            batch_ranks.append((scores >= target).sum(1))
            batch_logp.append(target[:, 0] - torch.logsumexp(scores, dim=1))
            batch_allowed.append(ok.sum(1))
        ranks.append(torch.stack(batch_ranks, 1))
        logps.append(torch.stack(batch_logp, 1))
        allowed_n.append(torch.stack(batch_allowed, 1))
    return tuple(torch.cat(parts).cpu().numpy() for parts in (ranks, logps, allowed_n))


def level_report(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sid_map: SIDMap,
    prompts: Sequence[Prompt],
    targets: Sequence[str],
    *,
    ks: Sequence[int] = (1, 5, 10, 20),
    batch_size: int = 64,
    progress: bool = True,
) -> LevelReport:
    """:func:`level_ranks` summarised: ``hit@k``, mean log-prob, rank and allowed codes per level."""
    ranks, logp, allowed = level_ranks(
        model, tokenizer, sid_map, prompts, targets, batch_size=batch_size, progress=progress
    )
    return LevelReport(
        users=len(targets),
        hit={k: (ranks <= k).mean(0).tolist() for k in ks},
        mean_logp=logp.mean(0).tolist(),
        mean_rank=ranks.mean(0).tolist(),
        mean_allowed=allowed.mean(0).tolist(),
    )
