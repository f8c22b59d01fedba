"""Evaluation: Recall@K, NDCG@K, invalid rate and coverage under the published protocol."""

from recllm.eval.metrics import (
    RankingMetrics,
    coverage,
    invalid_rate,
    ndcg_at_k,
    plot_recall,
    recall_at_k,
    save_metrics,
)

__all__ = [
    "RankingMetrics",
    "coverage",
    "invalid_rate",
    "ndcg_at_k",
    "plot_recall",
    "recall_at_k",
    "save_metrics",
]
