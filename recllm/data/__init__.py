"""Catalogs and interactions: loaders with format detection, validation, splits and stats."""

from recllm.data.config import DataConfig
from recllm.data.errors import DataError
from recllm.data.fetch import cache_dir, fetch
from recllm.data.loaders import detect_format, load_rec_dataset
from recllm.data.splits import Example, Split, leave_one_out, split_dataset, temporal_split
from recllm.data.stats import dataset_stats, format_stats
from recllm.data.types import Catalog, Interactions, RecDataset

__all__ = [
    "Catalog",
    "DataConfig",
    "DataError",
    "Example",
    "Interactions",
    "RecDataset",
    "Split",
    "cache_dir",
    "dataset_stats",
    "detect_format",
    "fetch",
    "format_stats",
    "leave_one_out",
    "load_rec_dataset",
    "split_dataset",
    "temporal_split",
]
