"""A text head: rank every catalog item, new items included, by its text from one model state.

A SID beam search scores an item by the model's log-probs of its code tokens. An item added after
training (``recllm catalog add``) has codes the model never produced as answers, and it loses to
the trained items by about 4 nats per token (docs/cold_start.md). The text head is a second way
to read the same model: the hidden state at ``<|sid_begin|>`` (where the answer would start) is
mapped to a query in the item-text space of the SID build's frozen featurizer, and every item is
scored by the cosine of that query with its text vector:

    score(u, i) = cos(W h_u + V m_u, t_i) / tau + b_i

- ``h_u``: the model's last hidden state at ``<|sid_begin|>`` after the user's prompt (the model
  is not changed).
- ``m_u``: the recency-weighted mean text vector of the user's last items (TIGER's Semantic-KNN
  user, :class:`recllm.baselines.text_knn.TextKNN`); ``V`` starts at the identity.
- ``t_i``: the item's text vector from the SID quantizer's featurizer, so a new item is embedded
  exactly as the trained items were.
- ``b_i``: a learned bias per trained item (its popularity); every item the head was not trained
  on shares one learned bias, ``new_bias``. Training ties a seeded share of the trained items to
  that shared bias too (pseudo-new items, as DropoutNet drops the ID part of warm items), so it is
  learned as the prior of an item known only by its text. ``bonus`` is added on top (chosen on
  validation users, like :mod:`recllm.decode.fresh`'s).

``recllm.decode.text_head_fit`` fits the head on the training split's windows (softmax over the
trained items) and saves it into the model directory (``text_head/``); :class:`ItemTable`
embeds the catalog at load time, so items added later are scored without refitting.

Example:
    >>> head = TextHead.load(model_dir)                                  # doctest: +SKIP
    >>> table = ItemTable.build(head, quantizer, catalog)                # doctest: +SKIP
    >>> scores = head.scores(states, table.history_vectors(histories), table)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from recllm.errors import UserError

logger = logging.getLogger(__name__)

__all__ = ["HEAD_DIR", "ItemTable", "TextHead", "prompt_states", "top_items"]

HEAD_DIR = "text_head"
FORMAT = "recllm.text_head/1"


class TextHead(nn.Module):
    """The query map, temperature and item biases (see the module docstring).

    Args:
        hidden_size: The model's hidden size.
        text_dim: The item text vectors' width.
        item_ids: The trained items, in the order of ``item_bias``.
        history_mean: Add ``V m_u`` to the query (the user's recent items' text).
    """

    def __init__(
        self, hidden_size: int, text_dim: int, item_ids: Sequence[str], *, history_mean: bool = True
    ) -> None:
        super().__init__()
        self.item_ids = list(item_ids)
        self.history_mean = history_mean
        self.query = nn.Linear(hidden_size, text_dim)
        self.mix = nn.Parameter(torch.eye(text_dim))  # (text_dim, text_dim): V
        self.log_tau = nn.Parameter(torch.tensor(float(np.log(0.05))))
        self.item_bias = nn.Parameter(torch.zeros(len(self.item_ids)))
        self.new_bias = nn.Parameter(torch.zeros(()))
        self.bonus = 0.0  # added to every item outside item_ids (not learned)
        self.record: dict[str, Any] = {}

    def queries(self, states: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """Unit queries ``(B, text_dim)`` from states ``(B, hidden)`` and history vectors
        ``(B, text_dim)`` (zero rows: no known history item)."""
        q = self.query(states.to(self.query.weight.dtype))
        if self.history_mean:
            q = q + history @ self.mix
        return nn.functional.normalize(q, dim=-1)

    def scores(self, states: torch.Tensor, history: torch.Tensor, table: ItemTable) -> torch.Tensor:
        """``(B, N)`` scores of ``table``'s items (bias and bonus included)."""
        q = self.queries(states, history)
        return q @ table.vectors.T / self.log_tau.exp() + table.biases(self)

    # -- saving ------------------------------------------------------------------------------

    def save(self, model_dir: str | Path, record: dict[str, Any]) -> Path:
        """Write ``model_dir/text_head/`` (weights + ``text_head.json``) atomically."""
        from safetensors.torch import save_file

        from recllm.io import atomic_dir

        doc = {
            "format": FORMAT,
            "hidden_size": self.query.in_features,
            "text_dim": self.query.out_features,
            "history_mean": self.history_mean,
            "item_ids": self.item_ids,
            **record,
        }
        dest = Path(model_dir) / HEAD_DIR
        with atomic_dir(dest, overwrite=True) as tmp:
            state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
            save_file(state, str(tmp / "head.safetensors"))
            (tmp / "text_head.json").write_text(json.dumps(doc, indent=2), encoding="utf-8")
        self.record = doc
        return dest

    @classmethod
    def load(cls, model_dir: str | Path, *, hidden_size: int | None = None) -> TextHead:
        """The head saved in ``model_dir``; checks it was fitted on this model's SID quantizer.

        Raises:
            UserError: No head, a head from another format, hidden size or SID quantizer.
        """
        from safetensors.torch import load_file

        model_dir = Path(model_dir)
        path = model_dir / HEAD_DIR / "text_head.json"
        fit = f"fit one with `recllm catalog text-head --model {model_dir}`"
        if not path.is_file():
            raise UserError(str(model_dir), "has no text head (text_head/text_head.json)", fit)
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("format") != FORMAT:
            raise UserError(str(path), f"format {doc.get('format')!r}, expected {FORMAT!r}", fit)
        if hidden_size is not None and doc["hidden_size"] != hidden_size:
            raise UserError(
                str(path),
                f"was fitted on a model with hidden size {doc['hidden_size']}, this one has "
                f"{hidden_size}",
                fit,
            )
        quantizer = _quantizer_hash(model_dir)
        if doc.get("quantizer_hash") != quantizer:
            raise UserError(
                str(path),
                f"was fitted on item texts embedded by SID quantizer {doc.get('quantizer_hash')}, "
                f"the model directory holds {quantizer}",
                fit,
            )
        head = cls(
            doc["hidden_size"], doc["text_dim"], doc["item_ids"], history_mean=doc["history_mean"]
        )
        head.load_state_dict(load_file(str(model_dir / HEAD_DIR / "head.safetensors")))
        head.bonus = float(doc.get("bonus", 0.0))
        head.record = doc
        head.eval()
        return head


def _quantizer_hash(model_dir: Path) -> str | None:
    from recllm.sid.quantizer import SIDQuantizer

    path = model_dir / "sid_quantizer"
    return SIDQuantizer.load(path).content_hash if path.is_dir() else None


@dataclass
class ItemTable:
    """The rankable items: ids, unit text vectors and which ones the head was trained on.

    Attributes:
        item_ids: Catalog order.
        vectors: ``(N, text_dim)`` unit text vectors.
        head_rows: ``(N,)`` long: the item's row in the head's ``item_bias``, -1 for an item the
            head was not trained on (a new item).
    """

    item_ids: list[str]
    vectors: torch.Tensor
    head_rows: torch.Tensor

    @classmethod
    def build(cls, head: TextHead, quantizer: Any, catalog: Any) -> ItemTable:
        """Embed ``catalog``'s items with the SID quantizer's frozen featurizer."""
        x = quantizer.embed_texts(quantizer.texts_of(catalog))
        return cls.from_vectors(head.item_ids, catalog.ids, x)

    @classmethod
    def from_vectors(
        cls, trained: Sequence[str], item_ids: Sequence[str], vectors: np.ndarray
    ) -> ItemTable:
        x = torch.as_tensor(np.asarray(vectors, dtype=np.float32))
        x = nn.functional.normalize(x, dim=-1)
        rows = {item: n for n, item in enumerate(trained)}
        head_rows = torch.tensor([rows.get(i, -1) for i in item_ids], dtype=torch.long)
        return cls(list(item_ids), x, head_rows)

    @property
    def new(self) -> torch.Tensor:
        """``(N,)`` bool: items the head was not trained on."""
        return self.head_rows < 0

    def biases(self, head: TextHead) -> torch.Tensor:
        """``(N,)``: the trained items' learned biases; ``new_bias + bonus`` for the others."""
        known = head.item_bias[self.head_rows.clamp(min=0)]
        return torch.where(self.new, head.new_bias + head.bonus, known)

    def history_vectors(
        self, histories: Sequence[Sequence[str]], last: int = 5, decay: float = 0.7
    ) -> torch.Tensor:
        """``(B, text_dim)``: each history's recency-weighted mean of its last ``last`` known
        items' vectors, as :class:`recllm.baselines.text_knn.TextKNN`'s user (zeros: none)."""
        return history_vectors(self.vectors, self.item_ids, histories, last, decay)


def history_vectors(
    vectors: torch.Tensor,
    item_ids: Sequence[str],
    histories: Sequence[Sequence[str]],
    last: int = 5,
    decay: float = 0.7,
) -> torch.Tensor:
    """``(B, d)`` unit user vectors: per history the recency-weighted mean (``decay ** age``,
    the newest item 1) of its last ``last`` items found in ``item_ids``; zeros: none found."""
    index = {item: n for n, item in enumerate(item_ids)}
    out = torch.zeros(len(histories), vectors.shape[1])
    for b, history in enumerate(histories):
        rows = [index[str(i)] for i in history if str(i) in index][-last:]
        if rows:
            w = decay ** torch.arange(len(rows) - 1, -1, -1, dtype=torch.float32)
            out[b] = nn.functional.normalize((w[:, None] * vectors[rows]).sum(0), dim=0)
    return out


@torch.inference_mode()
def prompt_states(
    model: Any,
    encoded: Sequence[Sequence[int]],
    begin_id: int,
    *,
    batch_size: int = 32,
    pad_id: int = 0,
    desc: str = "text head states",
) -> torch.Tensor:
    """``(N, hidden)`` float32: the model's last hidden state at ``<|sid_begin|>`` after each
    encoded prompt (batches of similar length, left-padded, with explicit positions)."""
    from tqdm.auto import tqdm

    from recllm.decode.generate import left_pad

    order = sorted(range(len(encoded)), key=lambda n: len(encoded[n]))
    out = torch.empty(len(encoded), model.config.hidden_size)
    device = next(model.parameters()).device
    for start in tqdm(range(0, len(order), batch_size), desc=desc, leave=False):
        rows = order[start : start + batch_size]
        ids, mask = left_pad([[*encoded[n], begin_id] for n in rows], pad_id, device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        hidden = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            output_hidden_states=True,
            logits_to_keep=1,
        ).hidden_states[-1][:, -1]
        out[rows] = hidden.float().cpu()
    return out


def top_items(
    scores: torch.Tensor,
    table: ItemTable,
    k: int,
    *,
    exclude: Sequence[Sequence[str] | None] | None = None,
    allow: Sequence[Sequence[str] | None] | None = None,
    keep: torch.Tensor | None = None,
) -> list[list[tuple[str, float]]]:
    """The best ``k`` ``(item, score)`` per row of ``scores`` ``(B, N)``, with per-row
    ``exclude`` / ``allow`` item lists (unknown ids are ignored here; callers check them) and
    ``keep``, an ``(N,)`` bool mask shared by every row."""
    index = {item: n for n, item in enumerate(table.item_ids)}
    scores = scores.clone()
    if keep is not None:
        scores.masked_fill_(~keep, float("-inf"))
    for b in range(scores.shape[0]):
        if allow is not None and allow[b] is not None:
            keep = torch.zeros(scores.shape[1], dtype=torch.bool)
            keep[[index[i] for i in allow[b] if i in index]] = True
            scores[b].masked_fill_(~keep, float("-inf"))
        if exclude is not None and exclude[b]:
            scores[b, [index[i] for i in exclude[b] if i in index]] = float("-inf")
    values, rows = scores.topk(min(k, scores.shape[1]), dim=1)
    return [
        [(table.item_ids[r], float(v)) for v, r in zip(vs, rs, strict=True) if v > float("-inf")]
        for vs, rs in zip(values.tolist(), rows.tolist(), strict=True)
    ]
