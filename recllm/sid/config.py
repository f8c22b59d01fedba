"""SIDConfig: how item embeddings are made and quantized into semantic IDs."""

from __future__ import annotations

from dataclasses import dataclass, field

METHODS = ("rq-kmeans", "balanced", "rq-vae")
EMBEDDINGS = ("tfidf", "lm", "st")
COLLISIONS = ("reassign", "extra-level")
FIRST_LEVELS = ("fused", "collab")


@dataclass
class SIDConfig:
    """Semantic-ID construction: embeddings -> quantizer -> collision handling."""

    method: str = field(
        default="rq-kmeans",
        metadata={"help": f"Quantizer: one of {METHODS} (balanced = OneRec, rq-vae = TIGER)."},
    )
    levels: int = field(default=3, metadata={"help": "Code levels L (tokens per SID)."})
    codebook_size: int = field(
        default=256, metadata={"help": "Codes per level K (new vocabulary rows = L * K)."}
    )
    sid_seed: int = field(
        default=0, metadata={"help": "Seed for every random step of the SID build."}
    )
    niter: int = field(
        default=20, metadata={"help": "k-means iterations per level (rq-kmeans, balanced)."}
    )
    collisions: str = field(
        default="reassign",
        metadata={
            "help": f"Collision handling: one of {COLLISIONS}. reassign keeps L tokens; "
            "extra-level (TIGER) adds one."
        },
    )
    embedding: str = field(
        default="tfidf",
        metadata={
            "help": f"Text embedding: one of {EMBEDDINGS}. tfidf = TF-IDF + truncated SVD "
            "(no model needed); lm = mean-pooled hidden states of the causal LM at "
            "`text_model`; st = sentence-transformers model `text_model`."
        },
    )
    text_model: str | None = field(
        default=None,
        metadata={"help": "Model directory (lm) or sentence-transformers name/path (st)."},
    )
    text_dim: int = field(default=128, metadata={"help": "TF-IDF SVD components (tfidf only)."})
    sid_text_fields: list[str] | None = field(
        default=None,
        metadata={"help": "Item text fields to embed, in order. Default: all of the catalog's."},
    )
    text_max_length: int = field(
        default=128, metadata={"help": "Token limit per item text (lm, st). Longer = slower."}
    )
    embed_batch_size: int = field(
        default=32, metadata={"help": "Items per forward pass (lm, st). Higher = more memory."}
    )
    collab_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight in [0, 1) of the collaborative embedding (SVD of the PPMI "
            "co-occurrence of TRAINING interactions) in the fused vector; 0 = text only."
        },
    )
    first_level: str = field(
        default="fused",
        metadata={
            "help": f"What the first SID level clusters: one of {FIRST_LEVELS}. fused = the "
            "fused text + collaborative vector, as every level; collab = the collaborative "
            "block only (what users do next), the later levels the residuals, mostly text. "
            "Items without interactions take their first code by text. k-means methods with "
            "--collab-weight > 0 only."
        },
    )
    collab_dim: int = field(default=64, metadata={"help": "Collaborative embedding dimension."})
    collab_window: int = field(
        default=3, metadata={"help": "Items this many steps apart or closer co-occur."}
    )
    contrastive_weight: float = field(
        default=0.0,
        metadata={
            "help": "rq-vae only: weight of the PLUM-style contrastive loss pulling items that "
            "co-occur in training histories together; 0 = off."
        },
    )

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"--method {self.method!r} is not one of {METHODS}")
        if self.embedding not in EMBEDDINGS:
            raise ValueError(f"--embedding {self.embedding!r} is not one of {EMBEDDINGS}")
        if self.collisions not in COLLISIONS:
            raise ValueError(f"--collisions {self.collisions!r} is not one of {COLLISIONS}")
        if self.levels < 1 or self.codebook_size < 2:
            raise ValueError("--levels must be >= 1 and --codebook-size >= 2")
        if not 0.0 <= self.collab_weight < 1.0:
            raise ValueError("--collab-weight must lie in [0, 1): 1 would drop the text entirely")
        if self.embedding in ("lm", "st") and not self.text_model:
            raise ValueError(f"--embedding {self.embedding} needs --text-model (a path or name)")
        if self.first_level not in FIRST_LEVELS:
            raise ValueError(f"--first-level {self.first_level!r} is not one of {FIRST_LEVELS}")
        if self.first_level == "collab" and (self.collab_weight <= 0 or self.method == "rq-vae"):
            raise ValueError(
                "--first-level collab clusters the collaborative block: it needs "
                "--collab-weight above 0 and --method rq-kmeans or balanced"
            )
        if self.contrastive_weight < 0:
            raise ValueError("--contrastive-weight must be >= 0")
        if self.contrastive_weight > 0 and self.method != "rq-vae":
            raise ValueError(
                "--contrastive-weight applies to --method rq-vae only; for k-means methods use "
                "--collab-weight"
            )
