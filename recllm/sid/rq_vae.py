"""TIGER's RQ-VAE, with optional PLUM-style collaborative fusion, as a residual quantizer.

An MLP encoder maps each item embedding to a small latent; ``L`` residual codebooks quantize the
latent (level ``l`` quantizes what levels ``< l`` left over); an MLP decoder reconstructs the
input from the sum of the chosen code vectors. Training minimizes (Rajput et al., 2023, "Recommender
Systems with Generative Retrieval")::

    ||x - dec(z_q)||^2 + sum_l ( ||sg[r_l] - e_l||^2 + beta * ||r_l - sg[e_l]||^2 )

with the straight-through estimator carrying the decoder's gradient past the ``argmin``.

A few warm-up epochs train the plain autoencoder first; then codebooks start from k-means on the
encoded residuals of the data, and codes that no item used during an epoch are re-seeded from
random current residuals: the usual cures for codebook collapse.

Collaborative fusion (PLUM, He et al., 2025): given item pairs that co-occur in TRAINING histories
(:func:`recllm.sid.collab.cooccurrence_pairs`), an InfoNCE loss with in-batch negatives pulls the
encoder outputs of paired items together, so items consumed together tend to share code prefixes.

Example:
    >>> from recllm.sid.rq_vae import RQVAEConfig, rq_vae
    >>> result = rq_vae(embeddings, levels=3, codebook_size=256, pairs=pairs)  # doctest: +SKIP
    >>> result.codes.shape  # doctest: +SKIP
    (12101, 3)
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from recllm.sid.quantize import QuantizeResult, check_embeddings, kmeans

logger = logging.getLogger(__name__)

#: Rows per chunk in the no-grad passes over the whole catalog (bounds memory, fixes GEMM shapes).
_EVAL_CHUNK = 8192


@dataclass
class RQVAEConfig:
    """Hyper-parameters of :func:`rq_vae`.

    The architecture and loss follow TIGER (input -> 512 -> 256 -> 128 -> latent 32, ReLU,
    mirrored decoder, beta 0.25). TIGER trains for 20k epochs on a GPU; the defaults here are
    sized for a CPU: a 12,101 x 128 clustered catalog with 3 x 256 codes trains in ~20 s on 2
    idle cores without pairs (~27 s on one thread) and ~31-36 s with 150k contrastive pairs
    (torch 2.13 CPU). Another process busy on the same cores made one run take 112 s. Raise
    ``epochs`` on bigger hardware.
    """

    hidden_dims: list[int] = field(
        default_factory=lambda: [512, 256, 128],
        metadata={"help": "Encoder MLP widths between input and latent; the decoder mirrors them."},
    )
    latent_dim: int = field(
        default=32, metadata={"help": "Dimension of the latent space the codebooks live in."}
    )
    dropout: float = field(
        default=0.0,
        metadata={"help": "Dropout after each hidden layer while training (never at encoding)."},
    )
    beta: float = field(
        default=0.25,
        metadata={"help": "Commitment weight: how hard the encoder is pulled to its codes."},
    )
    learning_rate: float = field(
        default=3e-3, metadata={"help": "Adam learning rate for encoder, decoder and codebooks."}
    )
    batch_size: int = field(
        default=512,
        metadata={"help": "Items per step; higher = fewer, cheaper steps per epoch."},
    )
    epochs: int = field(
        default=40,
        metadata={"help": "Passes over the catalog; training time grows linearly with it."},
    )
    standardize: bool = field(
        default=True,
        metadata={
            "help": "Train on (x - mean) / s, s one scalar (the RMS deviation), so the "
            "reconstruction loss is O(1) whatever the embedding scale; errors are reported in "
            "the input space."
        },
    )
    warmup_epochs: int = field(
        default=10,
        metadata={
            "help": "Leading epochs (part of `epochs`) of plain autoencoder training, before the "
            "codebooks are initialized on the encoder's latents."
        },
    )
    kmeans_init: bool = field(
        default=True,
        metadata={
            "help": "Start each codebook from k-means on the encoded residuals of the data "
            "(else from random residuals)."
        },
    )
    kmeans_niter: int = field(
        default=20, metadata={"help": "Lloyd iterations of the k-means codebook initialization."}
    )
    reset_dead_codes: bool = field(
        default=True,
        metadata={
            "help": "After every epoch, re-seed codes no item used during it (or that hold no "
            "item at its end) from random current residuals of that level."
        },
    )
    contrastive_weight: float = field(
        default=0.1,
        metadata={
            "help": "Weight of the co-occurrence InfoNCE loss; used only when pairs are given, "
            "0 turns it off."
        },
    )
    temperature: float = field(
        default=0.5,
        metadata={
            "help": "InfoNCE temperature, on squared distances of batch-standardized latents; "
            "lower = sharper separation from negatives."
        },
    )
    pair_batch_size: int = field(
        default=512,
        metadata={
            "help": "Co-occurrence pairs per step (in-batch negatives); higher = more negatives "
            "and more compute."
        },
    )
    cooccurrence_window: int = field(
        default=3,
        metadata={
            "help": "Items within this many steps of each other in a training sequence form a "
            "pair (passed to cooccurrence_pairs by the caller; rq_vae reads the pairs)."
        },
    )
    log_every: int = field(default=10, metadata={"help": "Log the losses every this many epochs."})
    device: str = field(
        default="cpu",
        metadata={"help": "Torch device; codes are bit-reproducible only on the same device."},
    )

    def __post_init__(self) -> None:
        self.hidden_dims = [int(h) for h in self.hidden_dims]
        if any(h < 1 for h in self.hidden_dims):
            raise ValueError(f"hidden_dims must be positive widths, got {self.hidden_dims}")
        positive_ints = (
            "latent_dim",
            "batch_size",
            "epochs",
            "kmeans_niter",
            "log_every",
            "cooccurrence_window",
        )
        for name in positive_ints:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError(
                f"warmup_epochs must be in [0, epochs={self.epochs}) so some epochs quantize, "
                f"got {self.warmup_epochs}"
            )
        if self.pair_batch_size < 2:
            raise ValueError(
                f"pair_batch_size must be >= 2 (in-batch negatives need at least two pairs), "
                f"got {self.pair_batch_size}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        for name in ("beta", "contrastive_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("learning_rate", "temperature"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")


def _mlp(dims: list[int], dropout: float) -> nn.Sequential:
    """Linear layers through ``dims``; ReLU (+ dropout) between them, none after the last."""
    layers: list[nn.Module] = []
    for k, (a, b) in enumerate(itertools.pairwise(dims)):
        layers.append(nn.Linear(a, b))
        if k < len(dims) - 2:
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class _RQVAE(nn.Module):
    """Encoder, ``L`` latent codebooks, decoder."""

    def __init__(self, in_dim: int, levels: int, codebook_size: int, config: RQVAEConfig) -> None:
        super().__init__()
        dims = [in_dim, *config.hidden_dims, config.latent_dim]
        self.encoder = _mlp(dims, config.dropout)
        self.decoder = _mlp(dims[::-1], config.dropout)
        self.codebooks = nn.ParameterList(
            nn.Parameter(torch.zeros(codebook_size, config.latent_dim)) for _ in range(levels)
        )

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """Residual quantization of ``z`` (B, D).

        Returns:
            ``(codes (B, L), residuals entering each level [(B, D)] * L, code vectors
            (L, B, D))``. The code vectors carry gradient to the codebooks; the residuals
            carry gradient to the encoder only, so codebook ``l`` learns from its own
            level's loss alone.
        """
        residual = z
        codes, residuals, chosen = [], [], []
        for book in self.codebooks:
            residuals.append(residual)
            code = _nearest(residual.detach(), book.detach())
            e = book[code]  # (B, D)
            codes.append(code)
            chosen.append(e)
            residual = residual - e.detach()
        return torch.stack(codes, 1), residuals, torch.stack(chosen)


def _nearest(r: torch.Tensor, book: torch.Tensor) -> torch.Tensor:
    """Index of the nearest code (squared Euclidean) for every row of ``r`` (B, D)."""
    d = (r * r).sum(1, keepdim=True) - 2.0 * r @ book.T + (book * book).sum(1)  # (B, K)
    return d.argmin(1)


@torch.no_grad()
def _encode_all(model: _RQVAE, x: torch.Tensor) -> torch.Tensor:
    """Encoder outputs ``(N, D)`` for the whole catalog, in fixed-size chunks."""
    return torch.cat([model.encoder(x[s : s + _EVAL_CHUNK]) for s in range(0, len(x), _EVAL_CHUNK)])


def _check_pairs(pairs: np.ndarray, n: int) -> np.ndarray:
    """Validate co-occurrence pairs and return them as ``(P, 2)`` int64 without self-pairs."""
    pairs = np.asarray(pairs)
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise ValueError(
            f"pairs: expected a (P, 2) array of item index pairs, got shape {pairs.shape}; "
            f"Fix: pass the output of recllm.sid.collab.cooccurrence_pairs"
        )
    if not np.issubdtype(pairs.dtype, np.integer):
        raise ValueError(
            f"pairs: expected integer item indices, got dtype {pairs.dtype}; "
            f"Fix: map item ids to embedding row indices (cooccurrence_pairs does)"
        )
    if len(pairs) and (pairs.min() < 0 or pairs.max() >= n):
        bad = np.flatnonzero(((pairs < 0) | (pairs >= n)).any(1))
        raise ValueError(
            f"pairs: {len(bad)} pairs hold indices outside [0, {n}) (first: "
            f"{pairs[bad[:3]].tolist()}); Fix: build pairs with the same item index as the "
            f"embedding rows (cooccurrence_pairs(train, item_index) with item_index over x)"
        )
    pairs = pairs[pairs[:, 0] != pairs[:, 1]].astype(np.int64)
    if len(pairs) == 0:
        raise ValueError(
            "pairs: no pairs of two different items; Fix: pass pairs=None (or "
            "contrastive_weight=0) to train without the contrastive loss"
        )
    return pairs


def _info_nce(
    za: torch.Tensor, zb: torch.Tensor, a: torch.Tensor, b: torch.Tensor, tau: float
) -> torch.Tensor:
    """Symmetric InfoNCE of paired latents ``za, zb`` (B, D) with in-batch negatives.

    Latents are first standardized by the batch's mean and RMS spread (with gradient), and the
    similarity is the negative squared Euclidean distance. Euclidean, because residual
    quantization assigns codes by it: with cosine similarity the encoder aligned paired
    directions but kept the pairs apart in norm, so apart in codes. Standardized, so that
    shrinking all latents cannot lower the loss; with a detached scale, random pairs collapsed
    the encoder within the first epoch.

    A negative that is the same item as the positive (or as the anchor itself) is masked: the
    batch draws pairs at random, so popular items recur, and pushing an item away from itself
    would fight the positive term.
    """
    both = torch.cat([za, zb])  # (2B, D)
    mu = both.mean(0)
    spread = ((both - mu) ** 2).sum(1).mean().sqrt().clamp_min(1e-6)
    za, zb = (za - mu) / spread, (zb - mu) / spread
    sq = (za * za).sum(1, keepdim=True) - 2.0 * za @ zb.T + (zb * zb).sum(1)  # (B, B)
    logits = -sq / tau  # row k = anchor a_k against every b_m
    eye = torch.eye(len(a), dtype=torch.bool, device=za.device)
    # a_k -> b_m is a false negative when b_m == b_k or b_m == a_k
    mask_ab = ((b[None, :] == b[:, None]) | (b[None, :] == a[:, None])) & ~eye
    # b_k -> a_m: a_m == a_k or a_m == b_k
    mask_ba = ((a[None, :] == a[:, None]) | (a[None, :] == b[:, None])) & ~eye
    target = torch.arange(len(a), device=za.device)
    loss_ab = F.cross_entropy(logits.masked_fill(mask_ab, float("-inf")), target)
    loss_ba = F.cross_entropy(logits.T.masked_fill(mask_ba, float("-inf")), target)
    return 0.5 * (loss_ab + loss_ba)


@torch.no_grad()
def _init_codebooks(
    model: _RQVAE,
    x: torch.Tensor,
    codebook_size: int,
    config: RQVAEConfig,
    seed: int,
    rng: np.random.Generator,
) -> None:
    """Level by level: k-means (or random rows) on the residuals the previous levels leave."""
    model.eval()
    residual = _encode_all(model, x)  # (N, D)
    for level, book in enumerate(model.codebooks):
        r = residual.cpu().numpy()
        if config.kmeans_init:
            centroids = kmeans(r, codebook_size, niter=config.kmeans_niter, seed=seed + level)
        else:
            centroids = r[rng.choice(len(r), codebook_size, replace=False)]
        book.copy_(torch.from_numpy(centroids))
        residual = residual - book[_nearest(residual, book)]
    model.train()


def _donor_rows(
    assign: np.ndarray, counts: np.ndarray, dead: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """``len(dead)`` distinct random items to re-seed dead codes from.

    Items are taken only from live codes and never a code's last member, so a re-seeded code
    does not empty the code its item leaves. Falls back to any other items when the live codes
    cannot spare enough (a catalog barely larger than the codebook).
    """
    spare = counts - 1  # (K,) members each live code can give away
    spare[dead] = 0
    rows: list[int] = []
    for i in rng.permutation(len(assign)):
        if spare[assign[i]] > 0:
            spare[assign[i]] -= 1
            rows.append(int(i))
            if len(rows) == len(dead):
                return np.asarray(rows)
    taken = np.zeros(len(assign), dtype=bool)
    taken[rows] = True
    rest = rng.choice(np.flatnonzero(~taken), len(dead) - len(rows), replace=False)
    return np.concatenate([np.asarray(rows, dtype=np.int64), rest])


@torch.no_grad()
def _reset_dead_codes(
    model: _RQVAE,
    x: torch.Tensor,
    usage: list[torch.Tensor],
    optimizer: torch.optim.Optimizer,
    rng: np.random.Generator,
) -> list[int]:
    """Re-seed the dead codes of every level from random current residuals of that level.

    A code is dead when no item used it during the epoch's training steps or no item is
    assigned to it now (the encoder moved since). Levels are reset in order, each level's
    residuals recomputed with the already reset shallower codebooks, so a moved code sits
    exactly on a residual the next encoding pass sees: its donor item picks it (distance 0)
    unless another code lies on the very same point (duplicate items). Adam's moments of the
    moved rows are cleared so stale momentum does not drag them away.

    Returns:
        Number of codes re-seeded per level.
    """
    model.eval()
    residual = _encode_all(model, x)  # (N, D)
    resets = []
    for level, book in enumerate(model.codebooks):
        assign = _nearest(residual, book)  # (N,)
        counts = torch.bincount(assign, minlength=len(book))
        dead = torch.nonzero((usage[level] == 0) | (counts == 0)).flatten()
        if len(dead):
            rows = _donor_rows(assign.cpu().numpy(), counts.cpu().numpy(), dead.cpu().numpy(), rng)
            book[dead] = residual[torch.from_numpy(rows).to(residual.device)]
            state = optimizer.state.get(book, {})
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    state[key][dead] = 0.0
            assign = _nearest(residual, book)
        resets.append(len(dead))
        residual = residual - book[assign]
    model.train()
    return resets


def rq_vae(
    x: np.ndarray,
    levels: int = 3,
    codebook_size: int = 256,
    *,
    seed: int = 0,
    config: RQVAEConfig | None = None,
    pairs: np.ndarray | None = None,
) -> QuantizeResult:
    """Train an RQ-VAE on item embeddings and return every item's code tuple.

    Contrastive fusion acts on the encoder outputs ``z`` (pre-quantization): that is the vector
    level 0 quantizes, so pulling paired ``z`` together is what makes paired items share code
    prefixes, and the gradient reaches the encoder directly instead of through the
    straight-through estimator. Pairs are compared by squared Euclidean distance (the metric
    the codebooks assign by) after standardizing the batch's latents (see ``_info_nce``).

    Dead codes: after each quantizing epoch every code that no training step used, or that
    holds no item at the epoch's end, is moved onto the current residual of a random item taken
    from a code that keeps another member. Right after a reset each moved code is its donor's
    nearest code (distance 0) and no other code was emptied by the move, so after the last epoch
    every code holds an item, unless duplicate items tie or a moved code attracts all of a
    donor code's other members as well (``extras["unused_codes"]`` reports what remains).

    Deterministic: the same ``x``, ``seed``, ``config`` and ``pairs`` give identical codes, in one
    process or across processes on the same machine and device (the global torch RNG is forked,
    so the caller's random state is left untouched). Different thread counts or BLAS builds may
    round differently and so change some codes.

    Args:
        x: ``(N, d)`` item embeddings.
        levels: Number of code levels ``L``.
        codebook_size: Codes per level ``K``.
        seed: Seeds weights, codebook init, batch order, pair sampling and dead-code resets.
        config: Hyper-parameters; :class:`RQVAEConfig` defaults when ``None``.
        pairs: ``(P, 2)`` indices of items (rows of ``x``) that co-occur in TRAINING
            histories, e.g. from :func:`recllm.sid.collab.cooccurrence_pairs`. Turns the
            contrastive loss on when ``config.contrastive_weight > 0``.

    Returns:
        :class:`QuantizeResult` with ``codes`` ``(N, L)`` int64 (nearest code per level on the
        trained encoder's latents, no dropout); ``codebooks`` the ``(K, latent_dim)`` latent
        codebooks; ``last_input`` the latent residual entering the last level;
        ``recon_error[l]`` the squared error summed over input dimensions and averaged over
        items (as :func:`recllm.sid.quantize.rq_kmeans` reports it) of decoding the first
        ``l + 1`` levels. ``extras``: ``loss`` (last epoch's mean ``total``, ``recon``,
        ``quantize`` = sum over levels of the mean squared ``r_l - e_l``, and ``contrastive``;
        these are in the standardized training space), ``recon_loss_history`` (per epoch;
        warm-up epochs decode ``z`` unquantized), ``dead_code_resets`` and ``unused_codes``
        (per level), ``unique_codes``, ``epochs``, ``steps``, ``contrastive``,
        ``contrastive_pairs``, ``seconds``.

    Raises:
        ValueError: Bad embeddings (see :func:`recllm.sid.quantize.check_embeddings`), bad
            ``levels``/``codebook_size``, or bad ``pairs`` (shape, dtype, index range).
    """
    config = config or RQVAEConfig()
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    if codebook_size < 1:
        raise ValueError(f"codebook_size must be >= 1, got {codebook_size}")
    x_np = check_embeddings(x, codebook_size)
    n, in_dim = x_np.shape
    contrastive = pairs is not None and config.contrastive_weight > 0
    if pairs is not None:
        pairs = _check_pairs(pairs, n)
        if not contrastive:
            logger.warning("rq-vae: pairs given but contrastive_weight is 0; ignoring the pairs")
    logger.info(
        "rq-vae: %d items x %d dims -> %d levels x %d codes, contrastive %s (%s pairs); config %s",
        n,
        in_dim,
        levels,
        codebook_size,
        "on" if contrastive else "off",
        len(pairs) if pairs is not None else 0,
        asdict(config),
    )
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        result = _train(x_np, levels, codebook_size, seed, config, pairs if contrastive else None)
    seconds = time.perf_counter() - start
    result.extras["seconds"] = round(seconds, 3)
    logger.info(
        "rq-vae: done in %.1f s; recon error per level %s; %d unique code tuples of %d items",
        seconds,
        [round(e, 5) for e in result.recon_error],
        result.extras["unique_codes"],
        n,
    )
    return result


def _train(
    x_np: np.ndarray,
    levels: int,
    codebook_size: int,
    seed: int,
    config: RQVAEConfig,
    pairs: np.ndarray | None,
) -> QuantizeResult:
    """The training loop of :func:`rq_vae`, inside its forked, seeded torch RNG."""
    n, in_dim = x_np.shape
    rng = np.random.default_rng(seed)
    device = torch.device(config.device)
    mean = x_np.mean(0) if config.standardize else np.zeros(in_dim, dtype=np.float32)
    scale = float(np.sqrt(((x_np - mean) ** 2).mean())) if config.standardize else 1.0
    # unit-norm text embeddings have per-dim values ~ 1/sqrt(d): unscaled, the reconstruction
    # gradient is so small that the commitment term shrinks every latent to one point; a single
    # scalar keeps the geometry (distances, clusters) intact
    scale = scale if scale > 0 else 1.0
    x = torch.from_numpy((x_np - mean) / scale).to(device)
    model = _RQVAE(in_dim, levels, codebook_size, config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    batch_size = min(config.batch_size, n)
    pair_batch = min(config.pair_batch_size, len(pairs)) if pairs is not None else 0
    pairs_t = torch.from_numpy(pairs).to(device) if pairs is not None else None

    resets = [0] * levels
    recon_history: list[float] = []
    steps = 0
    terms: dict[str, float] = {}
    model.train()
    bar = tqdm(range(config.epochs), desc="rq-vae", unit="epoch", leave=False)
    for epoch in bar:
        quantizing = epoch >= config.warmup_epochs
        if epoch == config.warmup_epochs:
            _init_codebooks(model, x, codebook_size, config, seed, rng)
        usage = [torch.zeros(codebook_size, dtype=torch.long, device=device) for _ in range(levels)]
        sums = dict.fromkeys(("total", "recon", "quantize", "contrastive"), 0.0)
        perm = torch.from_numpy(rng.permutation(n)).to(device)
        for s in range(0, n, batch_size):
            xb = x[perm[s : s + batch_size]]  # (B, in_dim)
            z = model.encoder(xb)  # (B, D)
            if quantizing:
                codes, residuals, chosen = model.quantize(z)
                z_q = chosen.sum(0)  # (B, D)
                # straight-through: forward uses z_q, backward treats quantization as identity
                x_hat = model.decoder(z + (z_q - z).detach())
                codebook = sum(
                    F.mse_loss(e, r.detach()) for e, r in zip(chosen, residuals, strict=True)
                )
                commitment = sum(
                    F.mse_loss(r, e.detach()) for e, r in zip(chosen, residuals, strict=True)
                )
            else:
                x_hat = model.decoder(z)
                codebook = commitment = torch.zeros((), device=device)
            recon = F.mse_loss(x_hat, xb)
            loss = recon + codebook + config.beta * commitment
            nce = torch.zeros((), device=device)
            if pairs_t is not None:
                pick = torch.from_numpy(rng.integers(len(pairs_t), size=pair_batch)).to(device)
                a, b = pairs_t[pick, 0], pairs_t[pick, 1]
                zab = model.encoder(torch.cat([x[a], x[b]]))  # (2P, D), one pass for both ends
                nce = _info_nce(zab[:pair_batch], zab[pair_batch:], a, b, config.temperature)
                loss = loss + config.contrastive_weight * nce
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
            for level in range(levels if quantizing else 0):
                usage[level] += torch.bincount(codes[:, level], minlength=codebook_size)
            w = len(xb) / n
            # codebook and commitment terms have the same value (they differ in where the
            # gradient goes), so one "quantize" figure describes both
            for key, value in (
                ("total", loss),
                ("recon", recon),
                ("quantize", codebook),
                ("contrastive", nce),
            ):
                sums[key] += float(value.detach()) * w
        terms = sums
        recon_history.append(terms["recon"])
        epoch_resets = [0] * levels
        if config.reset_dead_codes and quantizing:
            epoch_resets = _reset_dead_codes(model, x, usage, optimizer, rng)
            resets = [r + e for r, e in zip(resets, epoch_resets, strict=True)]
        bar.set_postfix(loss=f"{terms['total']:.4f}", recon=f"{terms['recon']:.4f}")
        if (epoch + 1) % config.log_every == 0 or epoch + 1 == config.epochs:
            logger.info(
                "rq-vae epoch %d/%d: loss %.5f recon %.5f quantize %.5f contrastive %.4f; "
                "dead codes reset per level %s",
                epoch + 1,
                config.epochs,
                terms["total"],
                terms["recon"],
                terms["quantize"],
                terms["contrastive"],
                epoch_resets,
            )

    model.eval()
    with torch.no_grad():
        z = _encode_all(model, x)  # (N, D)
        residual = z
        code_cols, books = [], []
        last_input = z
        recon_error: list[float] = []
        z_q = torch.zeros_like(z)
        for book in model.codebooks:
            last_input = residual
            code = _nearest(residual, book)
            e = book[code]  # (N, D)
            residual = residual - e
            z_q = z_q + e
            code_cols.append(code)
            books.append(book.detach().cpu().numpy().astype(np.float32))
            err = torch.cat(
                [
                    ((model.decoder(z_q[s : s + _EVAL_CHUNK]) - x[s : s + _EVAL_CHUNK]) ** 2).sum(1)
                    for s in range(0, n, _EVAL_CHUNK)
                ]
            )
            # x is (x_np - mean) / scale, so input-space squared errors are scale^2 times these
            recon_error.append(float(err.mean()) * scale**2)
        codes_np = torch.stack(code_cols, 1).cpu().numpy().astype(np.int64)
    unused = [int(codebook_size - len(np.unique(codes_np[:, level]))) for level in range(levels)]
    extras: dict[str, object] = {
        "loss": {k: round(v, 6) for k, v in terms.items()},
        "recon_loss_history": [round(v, 6) for v in recon_history],
        "dead_code_resets": resets,
        "unused_codes": unused,
        "unique_codes": len(np.unique(codes_np, axis=0)),
        "epochs": config.epochs,
        "steps": steps,
        "contrastive": pairs is not None,
        "contrastive_pairs": len(pairs) if pairs is not None else 0,
    }
    encoder_state = {
        "encoder": {k: v.detach().cpu().clone() for k, v in model.encoder.state_dict().items()},
        "codebooks": books,
        "mean": np.asarray(mean, dtype=np.float32),
        "scale": float(scale),
        "config": asdict(config),
        "in_dim": in_dim,
    }
    return QuantizeResult(
        encoder_state=encoder_state,
        codes=codes_np,
        codebook_sizes=(codebook_size,) * levels,
        codebooks=books,
        last_input=last_input.cpu().numpy().astype(np.float32),
        recon_error=recon_error,
        extras=extras,
    )
