"""Add the SID tokens to a tokenizer and give the model embedding rows for them.

:func:`extend_vocab` is the one place the vocabulary grows. What a caller should know:

- The tokens are added as NON-special tokens: ``decode(..., skip_special_tokens=True)`` (what
  TRL, vLLM and most evaluation code call) keeps them, and they are matched in raw text before
  BPE, so a rendered SID is always exactly ``2 + levels`` tokens, also inside chat templates.
- The new tokens take ids ``len(tokenizer)`` onwards. The model's embedding may already be larger
  than the tokenizer: Qwen3 checkpoints have ``config.vocab_size == 151936`` rows for a
  151,669-token tokenizer. The embedding is only resized when the tokenizer outgrows it (then to
  ``len(tokenizer)`` rounded up to ``pad_to_multiple_of``), never shrunk; rows between the
  tokenizer and the embedding end belong to no token and are left alone.
- "Pre-existing rows" are the rows of the ids below the first SID token (the tokenizer's own
  tokens); they are never modified. New rows are initialised from them.
- Tied embeddings (small Qwen3s): the LM head IS the input embedding, so one initialisation
  serves both. Untied: the LM-head rows are initialised the same way from the LM head's own rows.
- The model's config records the SID map's content hash (``config.recllm_sid_map_hash``; it is
  saved in config.json), which is how a second call tells "same map, nothing to do" from "rows
  already initialised for another map with the same codebook sizes".
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch

from recllm.vocab.format import SID_FORMAT, SIDFormat, SIDTokenIds, VocabMismatchError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from recllm.data.types import Catalog
    from recllm.sid.sidmap import SIDMap

__all__ = ["CONFIG_HASH_ATTR", "VocabExtension", "check_vocab", "extend_vocab"]

logger = logging.getLogger(__name__)

#: Attribute of ``model.config`` holding the content hash of the SID map the rows were made for.
CONFIG_HASH_ATTR = "recllm_sid_map_hash"

InitMethod = Literal["mean", "item_text", "item_text_spread"]
INIT_METHODS = ("mean", "item_text", "item_text_spread")
TextSource = Literal["title", "text"]


@dataclass(frozen=True)
class VocabExtension:
    """What :func:`extend_vocab` did, and the ids later stages need.

    Training trains rows :meth:`ids`; constrained decoding builds its trie over
    :meth:`level_ids` between :attr:`begin_id` and :attr:`end_id`.

    Attributes:
        token_ids: The id layout of the SID tokens (contiguous, markers first).
        sid_map_hash: Content hash of the SID map the rows were initialised for.
        fmt: The token format.
        num_added_tokens: Tokens this call added to the tokenizer (0 when they were present).
        tokenizer_len_before: ``len(tokenizer)`` before the call.
        tokenizer_len_after: ``len(tokenizer)`` after the call.
        embedding_rows_before: Input-embedding rows before the call.
        embedding_rows_after: Input-embedding rows after the call.
        init: How the SID rows were initialised by this call; None when the call was a no-op.
        tied: Whether the LM head shares the input embedding matrix.
    """

    token_ids: SIDTokenIds
    sid_map_hash: str
    fmt: SIDFormat
    num_added_tokens: int
    tokenizer_len_before: int
    tokenizer_len_after: int
    embedding_rows_before: int
    embedding_rows_after: int
    init: InitMethod | None
    tied: bool

    @property
    def begin_id(self) -> int:
        return self.token_ids.begin_id

    @property
    def end_id(self) -> int:
        return self.token_ids.end_id

    @property
    def first_id(self) -> int:
        return self.token_ids.first_id

    @property
    def last_id(self) -> int:
        return self.token_ids.last_id

    @property
    def resized(self) -> bool:
        return self.embedding_rows_after != self.embedding_rows_before

    def ids(self) -> torch.Tensor:
        """All SID token ids (markers and codes), int64: the embedding rows to train."""
        r = self.token_ids.all_ids()
        return torch.arange(r.start, r.stop, dtype=torch.long)

    def level_ids(self, level: int) -> torch.Tensor:
        """Ids of level ``level``'s code tokens, int64; entry ``c`` is code ``c``."""
        r = self.token_ids.level_ids(level)
        return torch.arange(r.start, r.stop, dtype=torch.long)


def check_vocab(
    tokenizer: PreTrainedTokenizerBase, sid_map: SIDMap, fmt: SIDFormat = SID_FORMAT
) -> SIDTokenIds:
    """Check, without a model, that ``tokenizer`` carries exactly ``sid_map``'s SID tokens.

    Checks: every token is present, ids are contiguous in the documented order, no SID token is
    special (``skip_special_tokens=True`` would drop it), the tokenizer holds no other SID-shaped
    tokens (a bigger codebook, another level), and a rendered SID encodes to exactly
    ``[begin, codes..., end]``.

    Args:
        tokenizer: The tokenizer to check.
        sid_map: The SID map it should match.
        fmt: The token format.

    Returns:
        The SID token id layout.

    Raises:
        VocabMismatchError: Any check fails; the message says which and how to fix it.
    """
    ids = fmt.token_ids(tokenizer, sid_map.codebook_sizes)
    expected = set(fmt.tokens(sid_map.codebook_sizes))
    # all_special_tokens lists only the named roles (eos, pad, ...); the per-token flag is what
    # decode(skip_special_tokens=True) honours.
    added = tokenizer.added_tokens_decoder
    special = {added[i].content for i in ids.all_ids() if i in added and added[i].special}
    special |= expected & set(tokenizer.all_special_tokens)
    if special:
        raise VocabMismatchError(
            f"SID tokens {sorted(special)[:3]} are special tokens, so decoding with "
            "skip_special_tokens=True deletes them; Fix: extend the base tokenizer with "
            "recllm.vocab.extend_vocab, which adds them as normal tokens"
        )
    extra = sorted(
        t for t in tokenizer.get_added_vocab() if fmt.is_sid_token(t) and t not in expected
    )
    if extra:
        raise VocabMismatchError(
            f"the tokenizer holds {len(extra)} SID-shaped tokens that SID map "
            f"{sid_map.content_hash[:12]} (codebook sizes {list(sid_map.codebook_sizes)}) does "
            f"not use (first: {extra[:3]}); it was extended for another map. Fix: use the "
            "tokenizer saved with this SID map, or extend the base tokenizer"
        )
    probe = sid_map.code(sid_map.item_ids[0]) if len(sid_map) else (0,) * sid_map.levels
    rendered = fmt.render(probe)
    encoded = list(tokenizer.encode(rendered, add_special_tokens=False))
    decoded = tokenizer.decode(ids.encode(probe), skip_special_tokens=True)
    if encoded != ids.encode(probe) or decoded != rendered:
        raise VocabMismatchError(
            f"{rendered} encodes to {encoded} (expected {ids.encode(probe)}) and decodes back to "
            f"{decoded!r}; the tokenizer splits, normalises or drops SID tokens. Fix: extend the "
            "base tokenizer with recllm.vocab.extend_vocab"
        )
    return ids


def extend_vocab(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sid_map: SIDMap,
    *,
    init: InitMethod = "mean",
    catalog: Catalog | None = None,
    text_source: TextSource = "title",
    pad_to_multiple_of: int | None = 64,
    fmt: SIDFormat = SID_FORMAT,
) -> VocabExtension:
    """Add ``sid_map``'s SID tokens to ``tokenizer`` and initialise the model's rows for them.

    Both objects are modified in place. Call it before wrapping the model (PEFT, FSDP,
    DeepSpeed): it resizes and writes full embedding matrices.

    Args:
        model: A Hugging Face causal LM (dense or MoE, tied or untied embeddings).
        tokenizer: Its tokenizer.
        sid_map: The SID map whose tokens to add.
        init: ``"mean"``: every new row is the mean of the pre-existing rows. ``"item_text"``:
            the row of code token (level l, code c) is the mean input embedding of all tokens of
            the texts of the items whose level-l code is c (token-weighted, pooled over items);
            markers, and codes no item with text uses, get the ``"mean"`` row. Untied LM heads
            get the same from the LM head's own rows. ``"item_text_spread"``: the same title
            means, centred per level and scaled to the vocabulary's own spread, so that SID rows
            differ from one another as much as words do (title means of many items are nearly
            identical; recipes that freeze the lower layers need them distinct).
        catalog: Item texts; required for ``init="item_text"`` and ``"item_text_spread"``.
        text_source: ``"title"`` (:meth:`Catalog.title`) or ``"text"`` (:meth:`Catalog.text`,
            all fields) for ``init="item_text"``.
        pad_to_multiple_of: Round a grown embedding up to a multiple of this (None: no padding).
        fmt: The token format.

    Returns:
        A :class:`VocabExtension`; its ``init`` is None when the call changed nothing because the
        tokenizer and model were already extended for this map.

    Raises:
        VocabMismatchError: The tokenizer or model was already extended for a different SID map
            or format, or model and tokenizer do not match.
        ValueError: Bad arguments (``init="item_text"`` without a catalog, ...).
    """
    if init not in INIT_METHODS:
        raise ValueError(f"init must be one of {INIT_METHODS}, not {init!r}")
    if init != "mean" and catalog is None:
        raise ValueError("init='item_text' needs the item texts: pass catalog=")
    if text_source not in ("title", "text"):
        raise ValueError(f"text_source must be 'title' or 'text', not {text_source!r}")

    sid_hash = sid_map.content_hash
    tokens = fmt.tokens(sid_map.codebook_sizes)
    vocab = tokenizer.get_vocab()
    stamp = getattr(model.config, CONFIG_HASH_ATTR, None)
    len_before = len(tokenizer)
    rows_before = model.get_input_embeddings().weight.shape[0]

    if any(t in vocab for t in tokens):
        try:
            token_ids = check_vocab(tokenizer, sid_map, fmt)
        except VocabMismatchError as err:
            raise VocabMismatchError(
                f"cannot extend: the tokenizer already holds SID tokens that do not match SID map "
                f"{sid_hash[:12]}: {err}"
            ) from None
        if stamp is not None and stamp != sid_hash:
            raise VocabMismatchError(
                f"cannot extend: the model's SID rows were made for SID map {stamp}, not "
                f"{sid_hash} (same codebook sizes, different codes). Fix: start from the base "
                "model and tokenizer, or keep using the SID map the model was trained with"
            )
        if stamp == sid_hash and rows_before > token_ids.last_id:
            logger.info(
                "Tokenizer and model already carry the %d SID tokens of map %s (ids %d..%d); "
                "nothing to do",
                token_ids.num_tokens,
                sid_hash[:12],
                token_ids.first_id,
                token_ids.last_id,
            )
            return VocabExtension(
                token_ids,
                sid_hash,
                fmt,
                0,
                len_before,
                len_before,
                rows_before,
                rows_before,
                None,
                _is_tied(model),
            )
        # Tokenizer extended (e.g. saved earlier), model not: initialise its rows.
        logger.warning(
            "The tokenizer already has the SID tokens of map %s but the model was not extended "
            "for it; initialising the model's rows %d..%d (init=%s)",
            sid_hash[:12],
            token_ids.first_id,
            token_ids.last_id,
            init,
        )
        num_added = 0
    else:
        if stamp is not None:
            raise VocabMismatchError(
                f"the model was extended for SID map {stamp} but the tokenizer has none of the "
                "SID tokens. Fix: load the tokenizer saved with the model "
                "(recllm.vocab.load_model_with_sids)"
            )
        leftovers = [t for t in tokenizer.get_added_vocab() if fmt.is_sid_token(t)]
        if leftovers:
            raise VocabMismatchError(
                f"cannot extend: the tokenizer already holds SID-shaped tokens of another map "
                f"(first: {sorted(leftovers)[:3]}). Fix: start from the base tokenizer"
            )
        num_added = _add_tokens(tokenizer, tokens)
        token_ids = check_vocab(tokenizer, sid_map, fmt)

    n_old = token_ids.first_id
    if rows_before < n_old:
        raise VocabMismatchError(
            f"the model has {rows_before} embedding rows but the tokenizer has {n_old} tokens "
            "before the SID tokens: they do not belong together. Fix: pass the model's own "
            "tokenizer"
        )
    if rows_before < len(tokenizer):
        model.resize_token_embeddings(
            len(tokenizer),
            pad_to_multiple_of=pad_to_multiple_of,
            # Our own init overwrites the new rows; transformers' mean_resizing would first
            # build a (hidden x hidden) covariance over the whole vocabulary for nothing.
            mean_resizing=False,
        )
    rows_after = model.get_input_embeddings().weight.shape[0]
    tied = _is_tied(model)
    _init_rows(model, tokenizer, sid_map, token_ids, init, catalog, text_source, tied)
    if rows_after > rows_before:
        _init_padding_rows(model, tied, max(rows_before, token_ids.last_id + 1), n_old)
    setattr(model.config, CONFIG_HASH_ATTR, sid_hash)

    logger.info(
        "SID vocabulary of map %s: %d tokens (%d levels, codebook sizes %s), %d added to the "
        "tokenizer (%d -> %d), ids %d..%d; embedding rows %d -> %d%s; init=%s, %s embeddings",
        sid_hash[:12],
        token_ids.num_tokens,
        token_ids.levels,
        list(token_ids.codebook_sizes),
        num_added,
        len_before,
        len(tokenizer),
        token_ids.first_id,
        token_ids.last_id,
        rows_before,
        rows_after,
        f" (padded to a multiple of {pad_to_multiple_of})"
        if rows_after != rows_before and pad_to_multiple_of
        else "",
        init,
        "tied" if tied else "untied",
    )
    return VocabExtension(
        token_ids,
        sid_hash,
        fmt,
        num_added,
        len_before,
        len(tokenizer),
        rows_before,
        rows_after,
        init,
        tied,
    )


def _add_tokens(tokenizer: PreTrainedTokenizerBase, tokens: list[str]) -> int:
    from tokenizers import AddedToken

    # special=False keeps them through skip_special_tokens=True; normalized=False matches the raw
    # text, so a tokenizer whose normaliser rewrites "<", "_" or digits cannot break them.
    added = [
        AddedToken(t, special=False, normalized=False, lstrip=False, rstrip=False) for t in tokens
    ]
    return tokenizer.add_tokens(added, special_tokens=False)


def _is_tied(model: PreTrainedModel) -> bool:
    out = model.get_output_embeddings()
    if out is None:
        return False
    return out.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()


@torch.no_grad()
def _init_rows(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sid_map: SIDMap,
    token_ids: SIDTokenIds,
    init: InitMethod,
    catalog: Catalog | None,
    text_source: TextSource,
    tied: bool,
) -> None:
    n_old = token_ids.first_id
    sid_rows = slice(token_ids.first_id, token_ids.last_id + 1)
    code_rows = slice(token_ids.first_id + 2, token_ids.last_id + 1)
    weights = [model.get_input_embeddings().weight]
    out = model.get_output_embeddings()
    if out is not None and not tied:
        weights.append(out.weight)

    plan = None
    if init in ("item_text", "item_text_spread"):
        plan = _TextPlan.build(tokenizer, sid_map, catalog, text_source, n_old, token_ids)
        logger.info(
            "item_text init: %d items with text, %d of %d code tokens have no item text and get "
            "the mean row",
            plan.num_items,
            int((plan.counts == 0).sum()),
            len(plan.counts),
        )
    for weight in weights:
        # float32 accumulation: a bf16 sum over 150k rows would lose most of its precision.
        mean = weight[:n_old].float().mean(0)  # (hidden,)
        weight[sid_rows] = mean.to(weight.dtype)
        if plan is not None:
            means = plan.means(weight)  # (sum K_l, hidden)
            if init == "item_text_spread":
                spread = (weight[:n_old].float() - mean).norm(dim=1).mean()
                means = _spread(means, plan.counts > 0, token_ids.level_offsets, mean, spread)
            means[(plan.counts == 0).to(means.device)] = mean
            weight[code_rows] = means.to(weight.dtype)
    if out is not None and getattr(out, "bias", None) is not None:
        out.bias[sid_rows] = out.bias[:n_old].float().mean().to(out.bias.dtype)


def _spread(
    means: torch.Tensor,
    has_text: torch.Tensor,
    level_offsets: Sequence[int],
    center: torch.Tensor,
    spread: torch.Tensor,
) -> torch.Tensor:
    """Per level, the code rows' title means minus their level's average, scaled so that their
    distance from ``center`` (the vocabulary's mean row) averages ``spread`` (the vocabulary's
    own average distance from it).

    Title means of dozens of items each are averages of averages: all close to the mean row and
    to one another (on SmolLM2, pairwise cosine .86 and a third of a word row's norm), so the
    frozen layers of a partial fine-tuning could barely tell one SID from another. What is left
    after removing the shared part is what tells the codes of a level apart.
    """
    out = means.clone()
    bounds = [*level_offsets, means.shape[0]]
    for start, end in itertools.pairwise(bounds):
        rows = torch.arange(start, end, device=means.device)[has_text[start:end].to(means.device)]
        if len(rows) < 2:
            continue
        dev = means[rows] - means[rows].mean(0)
        scale = spread / dev.norm(dim=1).mean().clamp_min(1e-12)
        out[rows] = center + dev * scale
    return out


@torch.no_grad()
def _init_padding_rows(model: PreTrainedModel, tied: bool, start: int, n_old: int) -> None:
    """Give the rows that padding to a multiple added (no token uses them) the mean row.

    ``resize_token_embeddings`` draws them from the global, unseeded generator: two runs with the
    same seed then held different weights (and different logits for those ids).
    """
    weights = [model.get_input_embeddings().weight]
    out = model.get_output_embeddings()
    if out is not None and not tied:
        weights.append(out.weight)
    for weight in weights:
        if weight.shape[0] > start:
            weight[start:] = weight[:n_old].float().mean(0).to(weight.dtype)
    if out is not None and getattr(out, "bias", None) is not None and out.bias.shape[0] > start:
        out.bias[start:] = out.bias[:n_old].float().mean().to(out.bias.dtype)


@dataclass
class _TextPlan:
    """Which token rows each code token averages over, as a sparse count matrix."""

    counts_matrix: torch.Tensor  # sparse (sum K_l, U): occurrences of unique token u for code row
    unique_ids: torch.Tensor  # (U,) token ids
    counts: torch.Tensor  # (sum K_l,) tokens per code row
    num_items: int

    @classmethod
    def build(
        cls,
        tokenizer: PreTrainedTokenizerBase,
        sid_map: SIDMap,
        catalog: Catalog | None,
        text_source: TextSource,
        n_old: int,
        token_ids: SIDTokenIds,
    ) -> _TextPlan:
        if catalog is None:
            raise ValueError("init='item_text' needs the item texts: pass catalog=")
        rows, texts = [], []
        for k, item in enumerate(sid_map.item_ids):
            if item not in catalog:
                continue
            text = catalog.title(item) if text_source == "title" else catalog.text(item)
            rows.append(k)
            texts.append(text or catalog.title(item))
        missing = len(sid_map) - len(rows)
        if missing:
            logger.warning(
                "item_text init: %d of %d SID-map items are not in the catalog; their codes "
                "count only through the other items",
                missing,
                len(sid_map),
            )
        num_codes = sum(token_ids.codebook_sizes)
        if not rows:
            empty = torch.sparse_coo_tensor(
                torch.zeros(2, 0, dtype=torch.long),
                torch.zeros(0),
                (num_codes, 0),
                check_invariants=True,
            )
            return cls(empty, torch.zeros(0, dtype=torch.long), torch.zeros(num_codes), 0)
        encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
        lengths = torch.tensor([len(e) for e in encoded], dtype=torch.long)
        flat = torch.tensor([t for e in encoded for t in e], dtype=torch.long)  # (T,)
        item_of_token = torch.repeat_interleave(torch.arange(len(rows)), lengths)  # (T,)
        # Only the tokenizer's own tokens: a title that happens to contain "<a_3>" must not feed
        # a (not yet initialised) SID row into the average.
        keep = flat < n_old
        flat, item_of_token = flat[keep], item_of_token[keep]
        unique_ids, column = torch.unique(flat, return_inverse=True)
        codes = torch.from_numpy(sid_map.codes[rows])  # (items, L)
        offsets = torch.tensor(token_ids.level_offsets, dtype=torch.long)  # (L,)
        code_row = (codes[item_of_token] + offsets).T.reshape(-1)  # (L*T,) level-major
        columns = column.repeat(token_ids.levels)  # (L*T,)
        matrix = torch.sparse_coo_tensor(
            torch.stack([code_row, columns]),
            torch.ones(len(code_row)),
            (num_codes, len(unique_ids)),
            check_invariants=True,
        ).coalesce()
        counts = torch.bincount(code_row, minlength=num_codes).float()
        return cls(matrix, unique_ids, counts, len(rows))

    def means(self, weight: torch.Tensor) -> torch.Tensor:
        """``(sum K_l, hidden)`` float32 mean rows of ``weight`` per code token (0 where no text)."""
        rows = weight[self.unique_ids.to(weight.device)].float().cpu()  # (U, hidden)
        sums = torch.sparse.mm(self.counts_matrix, rows)
        return (sums / self.counts.clamp(min=1).unsqueeze(1)).to(weight.device)
