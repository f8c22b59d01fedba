"""Published figures the benchmark scripts print beside their own (../shared/data/README.md)."""

#: TIGER (NeurIPS 2023), Table 1, Amazon Beauty (P5 split, leave-one-out, full ranking).
BEAUTY_PUBLISHED = {
    "TIGER (paper)": {"recall@5": 0.0454, "ndcg@5": 0.0321, "recall@10": 0.0648, "ndcg@10": 0.0384},
    "SASRec (TIGER paper)": {
        "recall@5": 0.0387,
        "ndcg@5": 0.0249,
        "recall@10": 0.0605,
        "ndcg@10": 0.0318,
    },
}
#: The columns of those tables.
COLUMNS = ("recall@5", "ndcg@5", "recall@10", "ndcg@10")
