"""Fit a text head (:mod:`recllm.decode.text_head`) on a trained model, which stays frozen.

It lives in decode, not train: no weight of the model moves (one forward pass per window, no
gradient), only a small read-out of its states is fitted, and the apps that serve a model may
fit one without reaching into training code.

Windows: each training user's last ``windows_per_user`` next-item steps, prompted exactly as the
model was trained. One forward pass per window gives the hidden state at ``<|sid_begin|>``; the
head is then fitted on those states alone (seconds to minutes), with a softmax over the trained
items, early stopping on the validation users' log-loss. Each batch ties a fresh seeded share of
the items (``pseudo_new``) to the shared ``new_bias``, so that bias learns what an item known
only by its text is worth, and the query map learns to find items by text alone.

Example:
    >>> head, report = fit_model_text_head("outputs/quickstart/model")      # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from recllm.data.splits import Example
from recllm.decode.text_head import ItemTable, TextHead, prompt_states

logger = logging.getLogger(__name__)

__all__ = ["TextHeadConfig", "fit_model_text_head", "fit_text_head", "training_windows"]


@dataclass
class TextHeadConfig:
    """How a text head is fitted."""

    windows_per_user: int = field(
        default=3, metadata={"help": "Training windows per user: the last N next-item steps."}
    )
    epochs: int = field(default=40, metadata={"help": "Most passes over the windows."})
    patience: int = field(
        default=5, metadata={"help": "Stop after this many epochs without a better valid loss."}
    )
    batch_size: int = field(default=256, metadata={"help": "Windows per optimizer step."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Adam learning rate."})
    weight_decay: float = field(default=1e-4, metadata={"help": "Adam weight decay."})
    pseudo_new: float = field(
        default=0.1,
        metadata={"help": "Share of items per batch whose bias is the shared new-item bias."},
    )
    history_mean: bool = field(
        default=True, metadata={"help": "Add the recent items' mean text vector to the query."}
    )
    state_batch_size: int = field(
        default=32, metadata={"help": "Prompts per forward pass when collecting states."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the init, batches and pseudo-new."})

    def __post_init__(self) -> None:
        from recllm.errors import UserError

        for key in ("windows_per_user", "epochs", "batch_size", "state_batch_size"):
            if getattr(self, key) < 1:
                raise UserError(
                    f"text head {key}",
                    f"must be >= 1, got {getattr(self, key)}",
                    f"set {key} to 1 or more",
                )
        if not 0 <= self.pseudo_new < 1:
            raise UserError(
                "text head pseudo_new",
                f"must lie in [0, 1), got {self.pseudo_new}",
                "use e.g. 0.1 (0 turns the new-item bias off)",
            )


def training_windows(
    sequences: Mapping[str, Sequence[str]], per_user: int, max_history: int | None
) -> list[Example]:
    """Each user's last ``per_user`` next-item steps (history cut to ``max_history``)."""
    out = []
    for user, seq in sequences.items():
        seq = list(seq)
        for t in range(max(1, len(seq) - per_user), len(seq)):
            history = seq[:t] if max_history is None else seq[:t][-max_history:]
            out.append(Example(user, tuple(history), seq[t]))
    return out


@dataclass
class _Part:
    """States, history vectors and target rows of one set of windows."""

    states: torch.Tensor
    history: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return len(self.targets)


def fit_text_head(
    train: _Part, valid: _Part, table: ItemTable, config: TextHeadConfig
) -> tuple[TextHead, dict[str, Any]]:
    """Fit a head on collected states (``table``: the trained items only).

    Returns:
        The head (best epoch by validation log-loss) and a report of the fit.
    """
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    head = TextHead(
        train.states.shape[1],
        table.vectors.shape[1],
        table.item_ids,
        history_mean=config.history_mean,
    )
    opt = torch.optim.Adam(
        head.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    n_items = len(table.item_ids)

    def logits(part: _Part, rows: torch.Tensor, pseudo: torch.Tensor | None) -> torch.Tensor:
        q = head.queries(part.states[rows], part.history[rows])
        bias = (
            head.item_bias if pseudo is None else torch.where(pseudo, head.new_bias, head.item_bias)
        )
        return q @ table.vectors.T / head.log_tau.exp() + bias

    def valid_loss() -> float:
        with torch.no_grad():
            rows = torch.arange(len(valid))
            return torch.nn.functional.cross_entropy(
                logits(valid, rows, None), valid.targets
            ).item()

    best = (valid_loss(), 0, {k: v.clone() for k, v in head.state_dict().items()})
    curve = [{"epoch": 0, "valid_loss": round(best[0], 4)}]
    for epoch in range(1, config.epochs + 1):
        order = torch.randperm(len(train), generator=gen)
        total = 0.0
        for start in range(0, len(order), config.batch_size):
            rows = order[start : start + config.batch_size]
            pseudo = torch.rand(n_items, generator=gen) < config.pseudo_new
            loss = torch.nn.functional.cross_entropy(
                logits(train, rows, pseudo), train.targets[rows]
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(rows)
        loss_v = valid_loss()
        curve.append(
            {
                "epoch": epoch,
                "train_loss": round(total / len(train), 4),
                "valid_loss": round(loss_v, 4),
            }
        )
        logger.info("text head epoch %d: train %.4f valid %.4f", epoch, total / len(train), loss_v)
        if loss_v < best[0]:
            best = (loss_v, epoch, {k: v.clone() for k, v in head.state_dict().items()})
        elif epoch - best[1] >= config.patience:
            break
    head.load_state_dict(best[2])
    head.eval()
    report = {
        "best_epoch": best[1],
        "valid_loss": round(best[0], 4),
        "uniform_loss": round(math.log(n_items), 4),
        "new_bias": round(head.new_bias.item(), 4),
        "tau": round(head.log_tau.exp().item(), 4),
        "train_windows": len(train),
        "valid_windows": len(valid),
        "curve": curve,
    }
    return head, report


def fit_model_text_head(
    model_dir: str | Path,
    config: TextHeadConfig | None = None,
    *,
    data: str | None = None,
    save: bool = True,
) -> tuple[TextHead, dict[str, Any]]:
    """Fit a text head on the model saved in ``model_dir`` and save it there (``text_head/``).

    The windows come from the training split of the data the model records (the same split,
    held-out items included); validation is that split's validation users.

    Raises:
        UserError: No SID quantizer in the model directory (built before quantizers were
            saved), or no validation user with a trained target.
    """
    from recllm.data import load_rec_dataset, split_dataset
    from recllm.data.config import DataConfig
    from recllm.decode import encode_prompts
    from recllm.errors import UserError
    from recllm.provenance import provenance
    from recllm.sid.quantizer import SIDQuantizer
    from recllm.tasks.prompting import PromptSpec, build_prompts
    from recllm.vocab import SID_FORMAT, load_model_with_sids
    from recllm.vocab.catalog_add import model_catalog

    config = config or TextHeadConfig()
    model_dir = Path(model_dir)
    if not (model_dir / "sid_quantizer").is_dir():
        raise UserError(
            str(model_dir),
            "has no sid_quantizer/, so item texts cannot be embedded as the SID build did",
            "rebuild the SIDs with this recllm version (`recllm sid build`) and retrain",
        )
    quantizer = SIDQuantizer.load(model_dir / "sid_quantizer")
    model, tokenizer, sid_map = load_model_with_sids(model_dir)
    model.eval()
    spec = PromptSpec.from_model_dir(model_dir)
    fields = dict(spec.data or {})
    if data is not None:
        fields["data_path"] = data
    data_cfg = DataConfig(**fields)
    dataset = load_rec_dataset(config=data_cfg)
    split = split_dataset(dataset, data_cfg)
    catalog = model_catalog(model_dir, dataset.catalog)
    fitted = catalog.subset(sorted({i for seq in split.train.sequences.values() for i in seq}))
    trained = list(fitted.ids)
    table = ItemTable.from_vectors(
        trained, trained, quantizer.embed_texts(quantizer.texts_of(fitted))
    )
    rows = {item: n for n, item in enumerate(trained)}
    begin = SID_FORMAT.token_ids(tokenizer, sid_map.codebook_sizes).begin_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def part(examples: list[Example], name: str) -> _Part:
        examples = [e for e in examples if e.history and e.target in rows]
        if not examples:
            raise UserError(
                f"{model_dir} data",
                f"no {name} window with a history and a trained target",
                "check the data the model records (recllm_vocab.json) or pass data=",
            )
        encoded = encode_prompts(tokenizer, build_prompts(spec, examples, sid_map, catalog))
        states = prompt_states(
            model, encoded, begin, batch_size=config.state_batch_size, pad_id=pad, desc=name
        )
        return _Part(
            states,
            table.history_vectors([e.history for e in examples]),
            torch.tensor([rows[e.target] for e in examples]),
        )

    windows = training_windows(split.train.sequences, config.windows_per_user, spec.max_history)
    logger.info("text head: %d training windows, %d valid users", len(windows), len(split.valid))
    valid = list(split.valid)
    random.Random(config.seed).shuffle(valid)
    head, report = fit_text_head(part(windows, "train"), part(valid, "valid"), table, config)
    record = {
        "config": dataclasses.asdict(config),
        "quantizer_hash": quantizer.content_hash,
        "sid_map_hash": sid_map.content_hash,
        "fit": {k: v for k, v in report.items() if k != "curve"},
        "bonus": 0.0,
        **provenance(),
    }
    if save:
        head.save(model_dir, record)
    else:
        head.record = record
    return head, report
