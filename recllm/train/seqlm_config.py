"""The options of the from-scratch SID-sequence decoder (:mod:`recllm.train.seqlm`): its size
(:class:`SeqLMConfig`) and the ``recipes/seqlm.py`` run around it (:class:`SeqLMArguments`)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from recllm.train.distill_args import DistillArguments


@dataclass
class SeqLMConfig:
    """Size of the from-scratch decoder and of its training windows."""

    hidden_size: int = field(default=256, metadata={"help": "Model width."})
    num_layers: int = field(default=4, metadata={"help": "Decoder layers."})
    num_heads: int = field(
        default=4, metadata={"help": "Attention heads (head_dim = width / heads)."}
    )
    num_kv_heads: int | None = field(
        default=None, metadata={"help": "Key/value heads (GQA when fewer); None = num_heads."}
    )
    intermediate_size: int = field(default=1024, metadata={"help": "MLP width."})
    attention_dropout: float = field(
        default=0.1, metadata={"help": "Dropout on attention weights."}
    )
    hidden_dropout: float = field(
        default=0.0,
        metadata={
            "help": "Dropout on the token embeddings and on each attention and MLP output before "
            "it joins the residual stream (GPT-2's embd/resid dropout; SASRec's dropout acts on "
            "the same places). Training only; Qwen3 itself has attention dropout alone."
        },
    )
    max_items: int = field(
        default=20, metadata={"help": "Items per training window and per prompt (TIGER: 20)."}
    )
    session_length: int = field(
        default=1,
        metadata={
            "help": "Items after a full window's context: training windows hold max_items + "
            "session_length items, so slates of session_length items after a max_items "
            "prompt are decoded at trained positions (the session task, issue 32); 1 = "
            "next-item windows."
        },
    )
    model_seed: int = field(default=0, metadata={"help": "Seed of the weight initialization."})


@dataclass
class SeqLMArguments(SeqLMConfig, DistillArguments):
    """The ``recipes/seqlm.py`` options: the decoder's size (:class:`SeqLMConfig`) plus seeds,
    budget, validation-based epoch selection and the SID map to use."""

    ensemble: int = field(
        default=1,
        metadata={
            "help": "Decoders trained one after the other (seeds seed, seed + 1, ...; model_seed "
            "likewise), each saved as its own model directory and decodable together "
            "(`recllm eval --model DIR DIR`). Each costs a full training run."
        },
    )
    time_budget_minutes: float | None = field(
        default=None,
        metadata={
            "help": "Stop each decoder's training after this many minutes (wall clock); null = "
            "the schedule (num_train_epochs / max_steps) alone."
        },
    )
    valid_users: int = field(
        default=0,
        metadata={
            "help": "Validation users ranked at each epoch end; the epoch with the best "
            "select_metric is kept (0 = keep the last epoch). Costs one beam search over them "
            "per epoch."
        },
    )
    valid_seed: int | None = field(
        default=0,
        metadata={
            "help": "Seed of the valid_users sample (a seeded random sample of the validation "
            "users; the first users of a file are a biased sample); null = the first users."
        },
    )
    valid_beams: int = field(
        default=20,
        metadata={"help": "Beam width of the validation passes (>= the K of select_metric)."},
    )
    select_metric: str = field(
        default="recall@10",
        metadata={"help": "Validation metric that picks the epoch: recall@K or ndcg@K, K 5 or 10."},
    )
    patience: int | None = field(
        default=None,
        metadata={"help": "Stop after N epochs without validation gain; null = never."},
    )
    item_tokens: bool = field(
        default=False,
        metadata={
            "help": "Ablation: no semantic IDs, one token per item (a 1-level code = the item's "
            "index), so the decoder scores items with a full softmax as SASRec does."
        },
    )
    sid_map: str | None = field(
        default=None,
        metadata={
            "help": "SID artifact directory to use; default: build one into OUTPUT_DIR/sids."
        },
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Replace the recipe's artifacts in OUTPUT_DIR when they were made with other "
            "settings; without it such a rerun stops with the keys that differ."
        },
    )
    init_model: str | None = field(
        default=None,
        metadata={
            "help": "Continue a saved SID-sequence model directory (incremental training): its "
            "weights, tokenizer and SID map (no SID build). Items of the data its SID map lacks: "
            "add them first with `recllm catalog add`."
        },
    )
    train_since: float | None = field(
        default=None,
        metadata={
            "help": "Train only on the windows whose last (target) event happened at or after "
            "this time (seconds since the epoch; training split only)."
        },
    )
    train_until: float | None = field(
        default=None,
        metadata={
            "help": "Train on the data as it was before this time (every training sequence "
            "cut there, the SID build included)."
        },
    )
    replay_ratio: float = field(
        default=0.0,
        metadata={
            "help": "With --train_since: add this many older training windows per new one "
            "(seeded by `seed`, at most all of them)."
        },
    )

    def __post_init__(self) -> None:
        from recllm.errors import UserError

        super().__post_init__()  # the teacher's options
        if self.ensemble < 1:
            raise UserError("--ensemble", f"must be >= 1, got {self.ensemble}", "pass 1 or more")
        if self.session_length < 1:
            raise UserError(
                "--session_length", f"must be >= 1, got {self.session_length}", "pass 1 or more"
            )
        if self.valid_users < 0:
            raise UserError("--valid_users", "must be >= 0", "pass 0 (last epoch) or a user count")
        if self.time_budget_minutes is not None and self.time_budget_minutes <= 0:
            raise UserError(
                "--time_budget_minutes", "must be > 0", "pass minutes, or null for no budget"
            )
        if self.patience is not None and self.patience < 1:
            raise UserError("--patience", "must be >= 1", "pass 1 or more, or null")
        metric, _, k = self.select_metric.partition("@")
        if metric not in ("recall", "ndcg") or k not in ("5", "10"):
            raise UserError(
                "--select_metric",
                f"{self.select_metric!r} is not one of recall@5, recall@10, ndcg@5, ndcg@10",
                "pick one of them",
            )
        if self.valid_beams < int(k):
            raise UserError(
                "--valid_beams",
                f"{self.valid_beams} is smaller than the K of --select_metric ({k})",
                f"raise --valid_beams to at least {k}",
            )
        if self.init_model is not None:
            clash = [
                flag
                for flag, on in (
                    ("--sid_map", self.sid_map),
                    ("--item_tokens true", self.item_tokens),
                    (f"--ensemble {self.ensemble}", self.ensemble > 1),
                )
                if on
            ]
            if clash:
                raise UserError(
                    f"--init_model {self.init_model}",
                    f"continues one saved decoder with its own SID map; {clash[0]} asks for "
                    "other ones",
                    f"drop {clash[0]}",
                )
        if self.replay_ratio < 0:
            raise UserError(f"--replay_ratio {self.replay_ratio}", "must be 0 or more", "pass 0.5")
        if self.replay_ratio > 0 and self.train_since is None:
            raise UserError(
                f"--replay_ratio {self.replay_ratio}",
                "replays older windows alongside a period's new ones, and no period was given",
                "add --train_since TIME, or drop --replay_ratio",
            )
        if self.hidden_size % self.num_heads:
            raise UserError(
                "--hidden_size/--num_heads",
                f"hidden_size {self.hidden_size} is not a multiple of num_heads {self.num_heads}",
                "pick a width divisible by the head count",
            )

    def model_config(self, member: int = 0) -> SeqLMConfig:
        """The :class:`SeqLMConfig` of ensemble member ``member`` (its seed: model_seed + member)."""
        base = {f.name: getattr(self, f.name) for f in fields(SeqLMConfig)}
        return SeqLMConfig(**{**base, "model_seed": self.model_seed + member})
