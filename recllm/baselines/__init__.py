"""Non-LLM reference recommenders to compare the generative models against."""

from recllm.baselines.sasrec import (
    SASRec,
    SASRecConfig,
    evaluate_sasrec,
    score_histories,
    train_sasrec,
)

__all__ = ["SASRec", "SASRecConfig", "evaluate_sasrec", "score_histories", "train_sasrec"]
