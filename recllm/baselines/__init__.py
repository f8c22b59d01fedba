"""Non-LLM reference recommenders to compare the generative models against."""

from recllm.baselines.sasrec import (
    SASRec,
    SASRecConfig,
    evaluate_sasrec,
    score_histories,
    train_sasrec,
)
from recllm.baselines.text_knn import TextKNN

__all__ = [
    "SASRec",
    "SASRecConfig",
    "TextKNN",
    "evaluate_sasrec",
    "score_histories",
    "train_sasrec",
]
