"""DataConfig: where a dataset comes from and how it is cleaned and split."""

from __future__ import annotations

from dataclasses import dataclass, field

from recllm.errors import UserError

FORMATS = ("recbole", "p5", "lcrec", "generic")
SPLITS = ("loo", "temporal", "session")
# The time column read by default. Data without it is read in file order (with a warning);
# any other name must exist, so a typo never silently drops the chronology.
DEFAULT_TIME_COL = "timestamp"


@dataclass
class DataConfig:
    """How to read, clean and split a recommendation dataset.

    Every field can be set in a recipe's YAML or on the command line (``--data_path ...``).
    """

    data_path: str = field(
        default="ml-100k",
        metadata={
            "help": "Dataset directory or file, or a dataset name the toolkit fetches itself "
            "(ml-100k). The format is detected from the files unless `data_format` is set."
        },
    )
    data_format: str | None = field(
        default=None,
        metadata={"help": f"Force a loader instead of auto-detection: one of {FORMATS}."},
    )
    items_file: str | None = field(
        default=None,
        metadata={
            "help": "Item-text file: the items table for the generic format, the "
            "`ASIN text` file for the P5 layout. Default: found next to the interactions."
        },
    )
    user_col: str = field(default="user_id", metadata={"help": "User id column (generic format)."})
    item_col: str = field(default="item_id", metadata={"help": "Item id column (generic format)."})
    time_col: str | None = field(
        default=DEFAULT_TIME_COL,
        metadata={
            "help": "Timestamp column (seconds or ISO 8601; naive dates are UTC). Histories are "
            "sorted by it (ties keep file order). The default `timestamp` may be absent (file "
            "order, with a warning); any other name must exist. null (or none) = file order."
        },
    )
    text_fields: list[str] | None = field(
        default=None,
        metadata={
            "help": "Item text fields to keep, title first. Default: every text field the "
            "source has. A field an item lacks entirely is an error."
        },
    )
    min_interactions: int = field(
        default=3,
        metadata={
            "help": "Users with fewer interactions are dropped (and counted in the log): "
            "leave-one-out needs 3 (train, valid target, test target)."
        },
    )
    max_users: int | None = field(
        default=None,
        metadata={
            "help": "Keep only the first N users (file order) before cleaning: a smaller, "
            "deterministic subset for quick CPU runs; null keeps everyone."
        },
    )
    drop_unused_items: bool = field(
        default=True,
        metadata={"help": "Drop catalog items that occur in no history (counted in the log)."},
    )
    split: str = field(
        default="loo",
        metadata={
            "help": "`loo`: leave-one-out per user (last = test, second-to-last = valid); "
            "`temporal`: global time cut-offs (needs timestamps); `session`: next-session "
            "per user (last split_session_length items = test, as many before = valid)."
        },
    )
    split_session_length: int = field(
        default=5,
        metadata={
            "help": "--split session: items per session (N); users with fewer than 2N + 1 "
            "items are skipped. Unused by the other splits."
        },
    )
    max_history: int | None = field(
        default=20,
        metadata={
            "help": "Keep only the last N items of each history given to the model (TIGER "
            "uses 20); null keeps all. Longer = more tokens per example."
        },
    )
    holdout_items: str | None = field(
        default=None,
        metadata={
            "help": "File of item ids (one a line) held out of training: their interactions "
            "leave the training and validation histories and they leave the catalog the SIDs "
            "and model are built from, and valid/test examples lose them (the cold-start "
            "benchmark, recllm.data.holdout). null = no item held out."
        },
    )
    valid_ratio: float = field(
        default=0.1,
        metadata={"help": "Temporal split: share of interactions (by time) in the valid window."},
    )
    test_ratio: float = field(
        default=0.1,
        metadata={"help": "Temporal split: share of interactions (by time) in the test window."},
    )

    def __post_init__(self) -> None:
        if isinstance(self.time_col, str) and self.time_col.strip().lower() in ("", "none", "null"):
            # `--time_col none` on a recipe's command line arrives as a string.
            self.time_col = None
        if self.data_format is not None and self.data_format not in FORMATS:
            raise UserError(
                "--data_format",
                f"{self.data_format!r} is not one of {FORMATS}",
                "leave it unset to auto-detect",
            )
        if self.split not in SPLITS:
            raise UserError("--split", f"{self.split!r} is not one of {SPLITS}", "choose one")
        if isinstance(self.split_session_length, bool) or self.split_session_length < 1:
            raise UserError(
                "--split_session_length",
                f"must be >= 1, got {self.split_session_length}",
                "pass 1 or more",
            )
        if self.min_interactions < 1:
            raise UserError("--min_interactions", "must be >= 1", "pass 1 or more")
        if self.split == "loo" and self.min_interactions < 3:
            raise UserError(
                "--min_interactions",
                "--split loo needs --min_interactions >= 3 (one training item, a validation "
                "target and a test target per user)",
                "pass --min_interactions 3 or more, or --split temporal",
            )
        if self.max_users is not None and self.max_users < 1:
            raise UserError("--max_users", "must be >= 1", "pass 1 or more, or null for every user")
        if self.max_history is not None and self.max_history < 1:
            raise UserError(
                "--max_history", "must be >= 1", "pass 1 or more, or null for the full history"
            )
        if not (0 < self.valid_ratio < 1 and 0 < self.test_ratio < 1):
            raise UserError(
                "--valid_ratio/--test_ratio",
                "--valid_ratio and --test_ratio must lie strictly between 0 and 1",
                "pass shares such as 0.1",
            )
        if self.valid_ratio + self.test_ratio >= 1:
            raise UserError(
                "--valid_ratio/--test_ratio",
                "--valid_ratio + --test_ratio must be < 1 (something must train)",
                "lower one of them",
            )
