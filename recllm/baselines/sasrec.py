"""SASRec, the strong modern variant: a causal transformer over item-id histories trained with a
full softmax over every item.

Kang & McAuley (ICDM 2018) introduced SASRec with one sampled negative and binary cross-entropy;
Klenitskiy & Vasilev (RecSys 2023, "Turning Dross Into Gold Loss") showed that the same network
trained with cross-entropy over the whole catalog at every position beats BERT4Rec and most
published "SASRec" rows. This module implements that variant with ``torch.nn`` only:

- learned item and position embeddings (positions count back from the most recent item, which is
  what SASRec's left-padded absolute positions amount to), embedding dropout;
- ``num_layers`` pre-LayerNorm blocks (causal multi-head self-attention that ignores padding, a
  GELU feed-forward, residual dropout), a final LayerNorm;
- scores = hidden state @ item embeddings (tied input/output), cross-entropy over ALL items at
  every position of every training sequence; AdamW.

Data follow recllm's :class:`~recllm.data.Split`: training sequences are ``split.train`` (the
leave-one-out split's ``s[:-2]``), model selection uses NDCG@10 on ``split.valid``, and the test
ranks every catalog item for ``split.test`` without removing already-seen items (the protocol of
the published tables, ``shared/data/README.md``; ``exclude_history=True`` gives the labelled
second row).

Example:
    >>> from recllm.data import load_rec_dataset, split_dataset
    >>> ds = load_rec_dataset("ml-100k")                       # doctest: +SKIP
    >>> split = split_dataset(ds)                              # doctest: +SKIP
    >>> model, history = train_sasrec(split, ds.catalog)        # doctest: +SKIP
    >>> evaluate_sasrec(model, split, "test")["recall@10"]     # doctest: +SKIP
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from recllm.data.splits import Example, Split
from recllm.eval.metrics import RankingMetrics

logger = logging.getLogger(__name__)

__all__ = [
    "SASRec",
    "SASRecConfig",
    "evaluate_sasrec",
    "load_sasrec",
    "save_sasrec",
    "score_histories",
    "train_sasrec",
]

SASREC_FILE = "sasrec.json"  # config, item ids, provenance; the weights in sasrec.safetensors


@dataclass
class SASRecConfig:
    """Architecture and training of :func:`train_sasrec`."""

    hidden_size: int = field(
        default=64, metadata={"help": "Embedding and hidden width; larger = slower, may overfit."}
    )
    num_layers: int = field(default=2, metadata={"help": "Transformer blocks."})
    num_heads: int = field(default=2, metadata={"help": "Attention heads; divides hidden_size."})
    ffn_multiplier: int = field(
        default=1,
        metadata={"help": "Feed-forward width = ffn_multiplier * hidden_size (SASRec uses 1)."},
    )
    max_len: int = field(
        default=50,
        metadata={
            "help": "Longest history the model reads; longer training sequences are cut into "
            "windows of this length, longer evaluation histories keep their last max_len items."
        },
    )
    dropout: float = field(
        default=0.2,
        metadata={
            "help": "Dropout on embeddings, attention and residuals; sparse data wants more "
            "(0.5 on Amazon Beauty)."
        },
    )
    learning_rate: float = field(default=1e-3, metadata={"help": "AdamW learning rate."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW decoupled weight decay."})
    batch_size: int = field(default=128, metadata={"help": "Training sequences per step."})
    epochs: int = field(default=200, metadata={"help": "Upper bound on training epochs."})
    time_budget_minutes: float | None = field(
        default=None,
        metadata={
            "help": "Stop training after this many minutes (validation included); None = no limit."
        },
    )
    patience: int | None = field(
        default=10,
        metadata={"help": "Stop after this many evaluations without a better valid NDCG@10."},
    )
    eval_every: int = field(default=1, metadata={"help": "Validate every N epochs."})
    eval_batch_size: int = field(default=512, metadata={"help": "Users scored at once."})
    seed: int = field(default=0, metadata={"help": "Seeds initialization, shuffling, dropout."})
    device: str = field(
        default="cpu", metadata={"help": "torch device, or 'auto' (CUDA when available)."}
    )

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_heads "
                f"({self.num_heads})"
            )
        for name in ("hidden_size", "num_layers", "num_heads", "ffn_multiplier", "max_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("batch_size", "epochs", "eval_every", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.time_budget_minutes is not None and self.time_budget_minutes <= 0:
            raise ValueError("time_budget_minutes must be > 0, or None for no limit")
        if self.patience is not None and self.patience < 1:
            raise ValueError("patience must be >= 1, or None to never stop early")

    def resolved_device(self) -> torch.device:
        """``device``, with ``'auto'`` resolved to CUDA when available, else CPU."""
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


class _Block(nn.Module):
    """Pre-LN transformer block: x + attn(LN(x)), then x + ffn(LN(x))."""

    def __init__(self, hidden: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.ln_attn = nn.LayerNorm(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.ln_ffn = nn.LayerNorm(hidden)
        self.ffn = nn.Sequential(
            nn.Linear(hidden, ffn), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn, hidden)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.ln_attn(x)).view(b, n, 3, self.heads, d // self.heads).unbind(2)
        # (batch, heads, len, head_dim)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        a = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )
        x = x + self.drop(self.out(a.transpose(1, 2).reshape(b, n, d)))
        return x + self.drop(self.ffn(self.ln_ffn(x)))


class SASRec(nn.Module):
    """The network. Index 0 is padding; catalog item ``item_ids[i]`` is index ``i + 1``.

    Args:
        item_ids: The catalog's item ids, in a fixed order.
        config: Sizes and dropout.
    """

    def __init__(self, item_ids: Sequence[str], config: SASRecConfig) -> None:
        super().__init__()
        if len(set(item_ids)) != len(item_ids):
            raise ValueError("item_ids contains duplicates")
        if not item_ids:
            raise ValueError("SASRec needs at least one item")
        self.item_ids: list[str] = list(item_ids)
        self.index: dict[str, int] = {item: i + 1 for i, item in enumerate(self.item_ids)}
        self.config = config
        d = config.hidden_size
        self.item_emb = nn.Embedding(len(self.item_ids) + 1, d, padding_idx=0)
        self.pos_emb = nn.Embedding(config.max_len, d)
        self.emb_drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            _Block(d, config.num_heads, config.ffn_multiplier * d, config.dropout)
            for _ in range(config.num_layers)
        )
        self.ln_out = nn.LayerNorm(d)
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
            if module.padding_idx is not None:
                module.weight.data[module.padding_idx].zero_()

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    def encode(self, seqs: torch.Tensor) -> torch.Tensor:
        """Hidden states of left-padded index sequences.

        Args:
            seqs: ``(batch, len)`` item indices, 0 = padding, padding on the left, ``len <=
                max_len``.

        Returns:
            ``(batch, len, hidden)``; position ``t`` has read items ``0..t`` only.
        """
        n = seqs.shape[1]
        if n > self.config.max_len:
            raise ValueError(f"sequences of length {n} exceed max_len={self.config.max_len}")
        pad = seqs == 0  # (batch, len)
        # Position 0 = the most recent item: the same thing SASRec's absolute positions over a
        # left-padded max_len window encode, and invariant to how much padding a batch carries.
        pos = torch.arange(n - 1, -1, -1, device=seqs.device)
        x = self.emb_drop(self.item_emb(seqs) + self.pos_emb(pos))
        causal = torch.ones(n, n, dtype=torch.bool, device=seqs.device).tril()
        # A query may see earlier non-padding keys; every query also sees itself, so that padding
        # rows are never fully masked (their outputs are ignored, a NaN would still spread).
        eye = torch.eye(n, dtype=torch.bool, device=seqs.device)
        mask = (causal & ~pad[:, None, :]) | eye  # (batch, len, len)
        mask = mask[:, None]  # (batch, 1, len, len), broadcast over heads
        for block in self.blocks:
            x = block(x, mask)
        return self.ln_out(x)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores of every catalog item (padding excluded): ``(..., hidden) -> (..., num_items)``."""
        return hidden @ self.item_emb.weight[1:].T

    def loss(self, windows: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """Full-softmax cross-entropy of next-item prediction over the non-padding positions.

        Args:
            windows: ``(batch, len + 1)`` left-padded sequences; inputs are ``[:, :-1]``,
                targets ``[:, 1:]``.
            reduction: ``"mean"`` or ``"sum"`` over the positions.
        """
        inputs, targets = windows[:, :-1], windows[:, 1:]
        hidden = self.encode(inputs)  # (batch, len, hidden)
        # A target needs a real input item: the first item of a left-padded window has none.
        keep = (targets > 0) & (inputs > 0)
        # Only the real positions go through the (positions, num_items) softmax: on sparse data
        # most of a batch is padding.
        return F.cross_entropy(self.logits(hidden[keep]), targets[keep] - 1, reduction=reduction)


def _windows(sequences: Iterable[list[int]], max_len: int) -> torch.Tensor:
    """Cut each index sequence into windows of ``max_len + 1`` items, from the end backwards,
    overlapping by one item so that each item is a target exactly once. Left-padded with 0."""
    rows: list[list[int]] = []
    for seq in sequences:
        end = len(seq)
        while end >= 2:
            start = max(0, end - max_len - 1)
            rows.append(seq[start:end])
            end = start + 1
    out = torch.zeros(len(rows), max_len + 1, dtype=torch.long)
    for r, row in enumerate(rows):
        out[r, max_len + 1 - len(row) :] = torch.tensor(row)
    return out


def _batches(
    lengths: torch.Tensor, batch_size: int, generator: torch.Generator, pool: int = 50
) -> list[torch.Tensor]:
    """One epoch of row indices in batches of similar length, in random order.

    Rows are shuffled, sorted by length within pools of ``pool`` batches and cut into batches;
    then the batches are shuffled. Most training sequences are short, so a random batch would be
    mostly padding, as wide as its longest row.
    """
    order = torch.randperm(len(lengths), generator=generator)
    batches: list[torch.Tensor] = []
    for start in range(0, len(order), batch_size * pool):
        chunk = order[start : start + batch_size * pool]
        chunk = chunk[torch.argsort(lengths[chunk], stable=True)]
        batches.extend(chunk.split(batch_size))
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def _trim(batch: torch.Tensor) -> torch.Tensor:
    """Drop the leading columns that are padding in every row (left padding)."""
    nonpad = (batch != 0).any(0)
    first = int(nonpad.int().argmax()) if bool(nonpad.any()) else batch.shape[1] - 1
    return batch[:, first:]


def _history_batch(
    histories: Sequence[Sequence[str]], index: dict[str, int], max_len: int
) -> torch.Tensor:
    """Left-padded ``(batch, len)`` indices of the last ``max_len`` known items of each history."""
    ids = [[index[i] for i in h if i in index][-max_len:] for h in histories]
    width = max([1, *(len(s) for s in ids)])
    out = torch.zeros(len(ids), width, dtype=torch.long)
    for r, s in enumerate(ids):
        if s:
            out[r, width - len(s) :] = torch.tensor(s)
    return out


@torch.no_grad()
def score_histories(
    model: SASRec, histories: Sequence[Sequence[str]], device: torch.device | None = None
) -> torch.Tensor:
    """Scores of every catalog item after each history: ``(len(histories), num_items)``.

    Column ``j`` is ``model.item_ids[j]``. Items unknown to the model are skipped; an empty
    history scores from padding alone (a popularity-like prior the model learned).
    """
    device = device or next(model.parameters()).device
    seqs = _history_batch(histories, model.index, model.config.max_len).to(device)
    return model.logits(model.encode(seqs)[:, -1])


def evaluate_sasrec(
    model: SASRec,
    split: Split | Sequence[Example],
    which: str = "test",
    ks: Sequence[int] = (5, 10, 20),
    exclude_history: bool = False,
    batch_size: int | None = None,
    progress: bool = False,
) -> dict[str, float | int]:
    """Full-ranking evaluation over every catalog item with :class:`RankingMetrics`.

    Args:
        model: A trained :class:`SASRec`.
        split: The split (its ``which`` examples are used) or a list of examples.
        which: ``"test"`` or ``"valid"``.
        ks: Cut-offs; each user's top ``max(ks)`` items are ranked.
        exclude_history: Remove the items of the user's history from its ranking. The published
            tables do NOT do this; report such figures as a separate, labelled row.
        batch_size: Users scored at once; default ``model.config.eval_batch_size``.
        progress: Show a tqdm bar.

    Returns:
        :meth:`RankingMetrics.compute` output: ``recall@K``, ``ndcg@K``, ``coverage@K``,
        ``invalid_rate`` (always 0 here), ``coverage``, ``users``.
    """
    from tqdm.auto import tqdm

    if isinstance(split, Split):
        if which not in ("test", "valid"):
            raise ValueError(f"which must be 'test' or 'valid', got {which!r}")
        examples: Sequence[Example] = split.test if which == "test" else split.valid
    else:
        examples = split
    if not examples:
        raise ValueError(f"no {which} examples to evaluate")
    top = max(ks)
    if top > model.num_items:
        raise ValueError(f"max(ks)={top} exceeds the {model.num_items} catalog items")
    batch_size = batch_size or model.config.eval_batch_size
    device = next(model.parameters()).device
    metrics = RankingMetrics(model.item_ids)
    was_training = model.training
    model.eval()
    try:
        starts = range(0, len(examples), batch_size)
        for start in tqdm(starts, desc=f"eval {which}", disable=not progress, leave=False):
            chunk = examples[start : start + batch_size]
            scores = score_histories(model, [e.history for e in chunk], device)
            if exclude_history:
                for r, e in enumerate(chunk):
                    seen = [model.index[i] - 1 for i in e.history if i in model.index]
                    scores[r, seen] = -math.inf
            ranked = scores.topk(top, dim=1).indices.cpu().tolist()
            for e, row in zip(chunk, ranked, strict=True):
                metrics.add([model.item_ids[j] for j in row], e.target)
    finally:
        model.train(was_training)
    return metrics.compute(ks)


def train_sasrec(
    split: Split,
    items: Iterable[str],
    config: SASRecConfig | None = None,
    progress: bool = True,
) -> tuple[SASRec, list[dict[str, Any]]]:
    """Train SASRec on ``split.train``; select the epoch with the best valid NDCG@10.

    Training stops at ``config.epochs``, after ``config.patience`` evaluations without a better
    valid NDCG@10, or when ``config.time_budget_minutes`` runs out (checked after every step);
    the best weights are restored. The caller's global torch RNG state is left untouched.

    Args:
        split: A leave-one-out (or temporal) split; only ``split.train`` is trained on.
        items: The catalog (a :class:`~recllm.data.Catalog` or its item ids): the items ranked.
        config: Hyper-parameters; default :class:`SASRecConfig`.
        progress: Show tqdm bars over epochs and steps.

    Returns:
        ``(model, history)``: the best model in eval mode, and one dict per epoch with
        ``epoch``, ``loss`` (mean training loss), ``seconds`` (since start) and, on
        validation epochs, ``valid_recall@10`` and ``valid_ndcg@10``.
    """
    from tqdm.auto import tqdm

    cfg = config or SASRecConfig()
    logger.info("SASRec config: %s", asdict(cfg))
    item_ids = list(items)
    device = cfg.resolved_device()
    t0 = time.monotonic()
    budget = None if cfg.time_budget_minutes is None else 60.0 * cfg.time_budget_minutes
    history: list[dict[str, Any]] = []

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = SASRec(item_ids, cfg).to(device)
        index = model.index
        unknown = sum(1 for s in split.train.sequences.values() for i in s if i not in index)
        if unknown:
            logger.warning(
                "skipping %d training interactions with items not in the catalog", unknown
            )
        seqs = ([index[i] for i in s if i in index] for s in split.train.sequences.values())
        windows = _windows(seqs, cfg.max_len)
        if len(windows) == 0:
            raise ValueError("no training sequence has 2 or more items: nothing to learn from")
        lengths = (windows > 0).sum(1)
        n_targets = int(((windows[:, 1:] > 0) & (windows[:, :-1] > 0)).sum())
        logger.info(
            "SASRec: %d items, %d training windows, %d next-item targets, %d parameters",
            len(item_ids),
            len(windows),
            n_targets,
            sum(p.numel() for p in model.parameters()),
        )
        per_batch = n_targets / math.ceil(len(windows) / cfg.batch_size)
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay
        )
        shuffle = torch.Generator().manual_seed(cfg.seed)
        best: tuple[float, int, dict[str, torch.Tensor]] | None = None
        stale = 0
        out_of_time = False
        epochs = tqdm(range(1, cfg.epochs + 1), desc="SASRec", disable=not progress)
        for epoch in epochs:
            model.train()
            total, seen = 0.0, 0
            for rows in _batches(lengths, cfg.batch_size, shuffle):
                batch = _trim(windows[rows]).to(device)
                loss = model.loss(batch, reduction="sum")
                optimizer.zero_grad(set_to_none=True)
                # Batches group windows of similar length, so their target counts differ 20-fold;
                # dividing by the average count (not this batch's) weighs every target equally,
                # as a mean over a random batch would.
                (loss / per_batch).backward()
                optimizer.step()
                total += loss.item()
                seen += int(((batch[:, 1:] > 0) & (batch[:, :-1] > 0)).sum())
                if budget is not None and time.monotonic() - t0 > budget:
                    out_of_time = True
                    break
            row: dict[str, Any] = {"epoch": epoch, "loss": total / seen}
            if epoch % cfg.eval_every == 0 or out_of_time or epoch == cfg.epochs:
                valid = evaluate_sasrec(model, split, "valid", ks=(10,))
                row["valid_recall@10"] = valid["recall@10"]
                row["valid_ndcg@10"] = valid["ndcg@10"]
                if best is None or valid["ndcg@10"] > best[0]:
                    best = (valid["ndcg@10"], epoch, copy.deepcopy(model.state_dict()))
                    stale = 0
                else:
                    stale += 1
            row["seconds"] = time.monotonic() - t0
            history.append(row)
            logger.info(
                "epoch %d: loss %.4f%s (%.0f s)",
                epoch,
                row["loss"],
                f", valid R@10 {row['valid_recall@10']:.4f} N@10 {row['valid_ndcg@10']:.4f}"
                if "valid_ndcg@10" in row
                else "",
                row["seconds"],
            )
            epochs.set_postfix(
                loss=f"{row['loss']:.3f}", best_n10=f"{best[0]:.4f}" if best else "-"
            )
            if out_of_time:
                logger.info(
                    "time budget of %s min reached at epoch %d", cfg.time_budget_minutes, epoch
                )
                break
            if cfg.patience is not None and stale >= cfg.patience:
                logger.info("no better valid NDCG@10 for %d evaluations: stopping", stale)
                break
        epochs.close()
    assert best is not None  # the last epoch always validates
    model.load_state_dict(best[2])
    model.eval()
    logger.info("best valid NDCG@10 %.4f at epoch %d", best[0], best[1])
    return model, history


def save_sasrec(
    model: SASRec, directory: str | Path, *, meta: dict[str, Any] | None = None
) -> Path:
    """Write ``model`` as an artifact directory: ``sasrec.safetensors`` (the weights) and
    ``sasrec.json`` (config, item ids, a hash of both, library versions and ``meta``, e.g. the
    data fingerprint of the split it was trained on). Both files are written atomically; the
    JSON last, so a directory with a JSON is complete.
    """
    from safetensors.torch import save_file

    from recllm.io import atomic_path, write_json_atomic
    from recllm.provenance import library_versions

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out / "sasrec.safetensors") as tmp:
        save_file(state, str(tmp))
    write_json_atomic(
        out / SASREC_FILE,
        {
            "config": asdict(model.config),
            "item_ids": model.item_ids,
            "items_hash": _items_hash(model.item_ids),
            "meta": meta or {},
            "versions": library_versions(),
        },
    )
    return out


def load_sasrec(directory: str | Path, device: str | torch.device = "cpu") -> tuple[SASRec, dict]:
    """Load an artifact of :func:`save_sasrec`: ``(model in eval mode, its record)``.

    Raises:
        UserError: No artifact there, or its item ids do not match their recorded hash.
    """
    import json

    from safetensors.torch import load_file

    from recllm.errors import UserError

    src = Path(directory)
    if not (src / SASREC_FILE).is_file() or not (src / "sasrec.safetensors").is_file():
        raise UserError(
            src, "holds no SASRec artifact", "pass a directory written by save_sasrec (sasrec.json)"
        )
    record = json.loads((src / SASREC_FILE).read_text(encoding="utf-8"))
    if _items_hash(record["item_ids"]) != record.get("items_hash"):
        raise UserError(
            src / SASREC_FILE,
            "item_ids do not match items_hash (edited by hand?)",
            "retrain and save the model again",
        )
    model = SASRec(record["item_ids"], SASRecConfig(**record["config"]))
    model.load_state_dict(load_file(str(src / "sasrec.safetensors")))
    return model.to(device).eval(), record


def _items_hash(item_ids: Sequence[str]) -> str:
    import hashlib

    return hashlib.sha256("\n".join(item_ids).encode()).hexdigest()[:16]


def load_split_sasrec(directory: str | Path, fingerprint: Any, flag: str, fix: str) -> SASRec:
    """Load a SASRec artifact that must have been trained on the split of ``fingerprint``
    (:func:`recllm.data.fingerprint.data_fingerprint`), as a reward model or a teacher is: one
    trained on other data (or on the test targets) would leak or mislead.

    Args:
        flag: The option that named the directory (``--reward_model DIR``), for the errors.
        fix: What to do instead, for the errors.

    Raises:
        UserError: No artifact, damaged weights, or a missing or different data fingerprint.
    """
    import json

    from recllm.errors import UserError

    src = Path(directory)
    if not (src / SASREC_FILE).is_file():
        raise UserError(f"{flag} {src}", f"holds no SASRec artifact ({SASREC_FILE})", fix)
    try:
        model, record = load_sasrec(src)
    except UserError:
        raise
    except Exception as e:  # a truncated or corrupt sasrec.safetensors
        first = " ".join(str(e).split())[:200]
        raise UserError(
            src / "sasrec.safetensors",
            f"is unreadable ({type(e).__name__}: {first}); the file is truncated or damaged",
            fix,
        ) from None
    trained_on = (record.get("meta") or {}).get("data_fingerprint")
    if trained_on != json.loads(json.dumps(fingerprint)):
        raise UserError(
            f"{flag} {src}",
            "was not trained on this model's data (its data fingerprint differs)"
            if trained_on is not None
            else "records no data fingerprint",
            fix,
        )
    return model


def split_sasrec(
    directory: str | Path, split: Split, catalog: Any, config: SASRecConfig, flag: str
) -> SASRec:
    """The SASRec of ``directory``, trained there on ``split``'s training sequences first when
    it is absent or was trained with another ``config`` or on other data (the reward model or
    teacher a recipe trains for itself). Returns it loaded and checked like :func:`load_split_sasrec`."""
    import json

    from recllm.data.fingerprint import data_fingerprint

    out = Path(directory)
    fingerprint = data_fingerprint(split, catalog)
    record = out / SASREC_FILE
    stored = json.loads(record.read_text()) if record.is_file() else {}
    made_with = [stored.get("config"), (stored.get("meta") or {}).get("data_fingerprint")]
    if made_with != json.loads(json.dumps([asdict(config), fingerprint])):
        logger.info("training SASRec on the training split into %s", out)
        model, history = train_sasrec(split, catalog, config, progress=False)
        save_sasrec(model, out, meta={"data_fingerprint": fingerprint, "history": history})
    return load_split_sasrec(
        out, fingerprint, flag, f"delete {out} to train it again, or pass another directory"
    )


def run_teacher(
    args: Any, split: Any, catalog: Any, out: Path, seed: int, state: Any = None
) -> Any:
    """The SASRec teacher of a run: ``args.teacher``, checked to be of this (training) split,
    or the one of ``out``/teacher, trained there first on the training split when absent (by
    the main process first when ``state``, an accelerate ``PartialState``, is given)."""
    import contextlib

    from recllm.data.fingerprint import data_fingerprint
    from recllm.train.distill_args import TEACHER_DIR

    if args.teacher is not None:
        fix = "pass a SASRec trained on this split, or drop --teacher to train one in the run"
        fingerprint = data_fingerprint(split, catalog)
        return load_split_sasrec(args.teacher, fingerprint, "--teacher", fix)
    cfg = SASRecConfig(
        time_budget_minutes=args.teacher_minutes,
        dropout=args.teacher_dropout,
        batch_size=64,
        seed=seed,
    )
    first = state.main_process_first() if state is not None else contextlib.nullcontext()
    with first:
        return split_sasrec(Path(out) / TEACHER_DIR, split, catalog, cfg, "--teacher")
