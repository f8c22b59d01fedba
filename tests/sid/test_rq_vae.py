"""RQ-VAE semantic IDs: shapes, determinism, training, dead-code resets, contrastive fusion, errors.

Everything runs on small seeded synthetic data (600 x 32) with a small MLP, a few seconds in all.
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from recllm.sid.quantize import QuantizeResult
from recllm.sid.rq_vae import RQVAEConfig, rq_vae


def _config(**overrides: object) -> RQVAEConfig:
    """A small, fast configuration: 32 -> 64 -> 32 -> latent 8, 12 epochs (3 of warm-up)."""
    base: dict[str, object] = {
        "hidden_dims": [64, 32],
        "latent_dim": 8,
        "batch_size": 64,
        "epochs": 12,
        "warmup_epochs": 3,
        "log_every": 100,
    }
    base.update(overrides)
    return RQVAEConfig(**base)


def _clustered(
    n: int = 600, d: int = 32, k: int = 8, noise: float = 0.1, seed: int = 0
) -> np.ndarray:
    """``n`` points around ``k`` random Gaussian centers."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d))
    return (centers[rng.integers(k, size=n)] + noise * rng.normal(size=(n, d))).astype(np.float32)


def _two_groups(shift: float = 3.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Groups A (rows 0..299) and B (300..599), 4 clusters each, on opposite sides of dim 0.

    Pairs join A's cluster k with B's cluster k (250 random pairs per k): a co-occurrence signal
    the content embeddings know nothing about.
    """
    rng = np.random.default_rng(seed)
    d = 32
    ca, cb = rng.normal(size=(4, d)), rng.normal(size=(4, d))
    ca[:, 0] += shift
    cb[:, 0] -= shift
    labels = np.repeat(np.arange(4), 75)
    x = np.concatenate([ca[labels], cb[labels]]) + 0.1 * rng.normal(size=(600, d))
    pairs = [
        np.stack(
            [
                rng.choice(np.flatnonzero(labels == k), 250),
                300 + rng.choice(np.flatnonzero(labels == k), 250),
            ],
            axis=1,
        )
        for k in range(4)
    ]
    return x.astype(np.float32), np.concatenate(pairs)


def test_shapes_dtypes_ranges_and_extras():
    x = _clustered()
    result = rq_vae(x, 3, 16, seed=0, config=_config())

    assert result.codes.shape == (600, 3)
    assert result.codes.dtype == np.int64
    assert result.codes.min() >= 0
    assert result.codes.max() < 16
    assert result.codebook_sizes == (16, 16, 16)
    assert [c.shape for c in result.codebooks] == [(16, 8)] * 3
    assert all(c.dtype == np.float32 for c in result.codebooks)
    assert result.last_input.shape == (600, 8)
    assert result.last_input.dtype == np.float32
    assert len(result.recon_error) == 3
    assert all(np.isfinite(result.recon_error))

    # the last level's code is the nearest last-level code vector of last_input
    dist = ((result.last_input[:, None, :] - result.codebooks[-1][None]) ** 2).sum(-1)  # (N, K)
    chosen = dist[np.arange(600), result.codes[:, -1]]
    np.testing.assert_allclose(chosen, dist.min(1), rtol=1e-4, atol=1e-5)

    extras = result.extras
    json.dumps(extras)  # JSON-serializable
    assert extras["epochs"] == 12
    assert extras["steps"] == 12 * 10  # ceil(600 / 64) = 10 steps per epoch
    assert len(extras["recon_loss_history"]) == 12
    assert extras["contrastive"] is False
    assert extras["contrastive_pairs"] == 0
    assert extras["loss"]["contrastive"] == 0.0
    assert len(extras["dead_code_resets"]) == 3
    assert extras["unique_codes"] == len(np.unique(result.codes, axis=0))
    assert extras["unused_codes"] == [16 - len(np.unique(result.codes[:, lv])) for lv in range(3)]


def test_same_seed_same_codes_and_caller_rng_untouched():
    x = _clustered()
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    first = rq_vae(x, 2, 16, seed=7, config=_config())
    assert torch.equal(torch.rand(3), expected_draw)  # the global torch RNG was forked

    second = rq_vae(x, 2, 16, seed=7, config=_config())
    np.testing.assert_array_equal(first.codes, second.codes)
    for a, b in zip(first.codebooks, second.codebooks, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(first.last_input, second.last_input)
    assert first.recon_error == second.recon_error

    other = rq_vae(x, 2, 16, seed=8, config=_config())
    assert not np.array_equal(first.codes, other.codes)


_SUBPROCESS_RUN = textwrap.dedent(
    """
    import hashlib, sys
    import numpy as np
    from tests.sid.test_rq_vae import _config, _two_groups
    from recllm.sid.rq_vae import rq_vae

    x, pairs = _two_groups()
    r = rq_vae(x, 2, 8, seed=3, config=_config(epochs=6, warmup_epochs=2), pairs=pairs)
    sys.stdout.write(hashlib.sha256(r.codes.tobytes()).hexdigest())
    """
)


def test_same_codes_across_processes_with_pairs():
    x, pairs = _two_groups()
    result = rq_vae(x, 2, 8, seed=3, config=_config(epochs=6, warmup_epochs=2), pairs=pairs)
    out = subprocess.run(
        [sys.executable, "-c", _SUBPROCESS_RUN],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],  # repo root, so `tests` imports
    )
    assert out.stdout.strip() == hashlib.sha256(result.codes.tobytes()).hexdigest()


def test_training_reduces_loss_and_beats_the_mean():
    x = _clustered()
    result = rq_vae(x, 2, 16, seed=0, config=_config())
    history = result.extras["recon_loss_history"]
    # standardized space: the first epoch starts near 1 (= predicting the mean)
    assert history[-1] < 0.1 * history[0]

    mean_baseline = float(((x - x.mean(0)) ** 2).sum(1).mean())  # same metric as recon_error
    assert result.recon_error[0] < 0.25 * mean_baseline
    assert result.recon_error[-1] < 0.05 * mean_baseline


def test_dead_code_reset_fires_and_leaves_no_code_unused():
    # 8 tight clusters but 32 codes per level: the commitment loss packs each cluster's latents
    # onto few codes, so without resets many codes end up empty
    x = _clustered(k=8, noise=0.1)
    without = rq_vae(x, 2, 32, seed=0, config=_config(reset_dead_codes=False))
    assert without.extras["dead_code_resets"] == [0, 0]
    assert without.extras["unused_codes"][0] > 0
    assert sum(without.extras["unused_codes"]) >= 10

    with_reset = rq_vae(x, 2, 32, seed=0, config=_config())
    assert with_reset.extras["dead_code_resets"][0] > 0
    assert with_reset.extras["unused_codes"] == [0, 0]
    for level in range(2):
        assert set(with_reset.codes[:, level].tolist()) == set(range(32))


def test_contrastive_pulls_cooccurring_items_together(caplog):
    x, pairs = _two_groups()
    rng = np.random.default_rng(5)
    random_ab = np.stack([rng.integers(300, size=1000), 300 + rng.integers(300, size=1000)], 1)

    def measure(result: QuantizeResult) -> tuple[float, float]:
        # encoder output z = residual entering the last level + the codes before it
        z = result.last_input + result.codebooks[0][result.codes[:, 0]]  # (N, latent)

        def sq(p: np.ndarray) -> float:
            return float(((z[p[:, 0]] - z[p[:, 1]]) ** 2).sum(1).mean())

        share = float((result.codes[pairs[:, 0], 0] == result.codes[pairs[:, 1], 0]).mean())
        return share, sq(pairs) / sq(random_ab)

    with caplog.at_level(logging.WARNING, logger="recllm.sid.rq_vae"):
        off = rq_vae(x, 2, 4, seed=0, config=_config(contrastive_weight=0.0), pairs=pairs)
    assert "contrastive_weight is 0; ignoring the pairs" in caplog.text
    assert off.extras["contrastive"] is False
    on = rq_vae(x, 2, 4, seed=0, config=_config(), pairs=pairs)
    assert on.extras["contrastive"] is True
    assert on.extras["contrastive_pairs"] == len(pairs)
    assert on.extras["loss"]["contrastive"] > 0

    share_off, ratio_off = measure(off)
    share_on, ratio_on = measure(on)
    # off: the groups sit apart, no pair shares a level-0 code, pairs are as far apart as random
    # A-B couples; on: paired clusters merge into shared level-0 codes
    assert share_off == 0.0
    assert share_on >= 0.25
    assert ratio_off > 0.8
    assert ratio_on < 0.5 * ratio_off


def test_bad_embeddings_raise_with_fix():
    x = _clustered()
    x[3, 5] = np.nan
    with pytest.raises(ValueError, match=r"1 rows contain NaN.*Fix: recompute"):
        rq_vae(x, 2, 16, config=_config())
    with pytest.raises(ValueError, match=r"10 items but codebook size 16.*Fix: pass"):
        rq_vae(_clustered(n=10), 2, 16, config=_config())


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        (np.zeros((5, 3), dtype=np.int64), r"expected a \(P, 2\) array.*Fix:"),
        (np.zeros(6, dtype=np.int64), r"expected a \(P, 2\) array.*Fix:"),
        (np.array([[0, 1], [2, 600]]), r"1 pairs hold indices outside \[0, 600\).*Fix:"),
        (np.array([[-1, 1]]), r"outside \[0, 600\).*Fix:"),
        (np.array([[0.0, 1.0]]), r"expected integer item indices.*Fix:"),
        (np.array([[4, 4], [7, 7]]), r"no pairs of two different items.*Fix: pass pairs=None"),
    ],
)
def test_bad_pairs_raise(pairs: np.ndarray, message: str):
    with pytest.raises(ValueError, match=message):
        rq_vae(_clustered(), 2, 16, config=_config(), pairs=pairs)


@pytest.mark.parametrize(
    ("overrides", "field_name"),
    [
        ({"latent_dim": 0}, "latent_dim"),
        ({"hidden_dims": [64, 0]}, "hidden_dims"),
        ({"epochs": 3, "warmup_epochs": 3}, "warmup_epochs"),
        ({"temperature": 0.0}, "temperature"),
        ({"pair_batch_size": 1}, "pair_batch_size"),
        ({"dropout": 1.0}, "dropout"),
        ({"beta": -0.1}, "beta"),
        ({"cooccurrence_window": 0}, "cooccurrence_window"),
    ],
)
def test_config_validation_names_the_field(overrides: dict[str, object], field_name: str):
    with pytest.raises(ValueError, match=field_name):
        _config(**overrides)
