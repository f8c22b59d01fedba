"""The SID build pipeline end to end, through the CLI as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from recllm.data import load_rec_dataset
from recllm.sid.build import build_sid_map
from recllm.sid.config import SIDConfig
from recllm.sid.embed import load_embeddings, save_embeddings
from recllm.sid.sidmap import SIDMap


def run(*args: str, cache: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RECLLM_CACHE": cache}
    return subprocess.run(
        [sys.executable, "-m", "recllm.cli", *args], capture_output=True, text=True, env=env
    )


@pytest.fixture(scope="module")
def lcrec_small(tmp_path_factory):
    """A 300-item LC-Rec-layout dataset with real-looking text and co-occurrence structure."""
    rng = np.random.default_rng(0)
    d = tmp_path_factory.mktemp("lc")
    words = [
        "red",
        "blue",
        "steel",
        "wood",
        "drill",
        "saw",
        "tape",
        "glue",
        "lamp",
        "cable",
        "pro",
        "mini",
    ]
    items = {
        str(i): {
            "title": " ".join(rng.choice(words, 3)) + f" model {i % 17}",
            "brand": f"brand{i % 9}",
        }
        for i in range(300)
    }
    inter = {str(u): [int(x) for x in rng.choice(300, size=8, replace=False)] for u in range(400)}
    (d / "Toy.item.json").write_text(json.dumps(items))
    (d / "Toy.inter.json").write_text(json.dumps(inter))
    return d


@pytest.mark.parametrize("method", ["rq-kmeans", "balanced"])
def test_cli_build_is_byte_identical_and_stats(lcrec_small, tmp_path, method):
    outs = []
    for k in range(2):
        out = tmp_path / f"sid{k}"
        proc = run(
            "sid",
            "build",
            "--data",
            str(lcrec_small),
            "--method",
            method,
            "--levels",
            "3",
            "--codebook-size",
            "16",
            "--collab-weight",
            "0.3",
            "--seed",
            "0",
            "--no-cache",
            "--out",
            str(out),
            cache=str(tmp_path / f"cache{k}"),
        )
        assert proc.returncode == 0, proc.stderr
        outs.append(out)
    assert (outs[0] / "sid_map.json").read_bytes() == (outs[1] / "sid_map.json").read_bytes()
    assert sorted(p.name for p in outs[0].iterdir()) == [
        "code_usage.png",
        "metrics.json",
        "quantizer",
        "sid_map.json",
    ]
    for name in ("quantizer.json", "arrays.safetensors"):  # the saved quantizer is reproducible
        q0, q1 = (o / "quantizer" / name for o in outs)
        assert q0.read_bytes() == q1.read_bytes()
    assert (outs[0] / "code_usage.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    proc = run("sid", "stats", str(outs[0]), cache=str(tmp_path))
    stats = json.loads(proc.stdout)
    assert stats["items"] == 300 and stats["unique_codes"] == 300 and stats["collisions_after"] == 0
    assert stats["unique_codes_before"] + stats["collisions_before"] == 300
    assert len(stats["utilization"]) == 3 and all(0 < u <= 1 for u in stats["utilization"])
    if method == "balanced":
        # 300 items over 16 codes: 18 or 19 per code at every level -> all codes used
        assert stats["utilization"] == [1.0, 1.0, 1.0]
    m = SIDMap.load(outs[0])
    assert m.meta["sid_config"]["method"] == method and m.meta["embedding"]["collab_weight"] == 0.3
    assert "numpy" in m.meta["versions"]


def test_extra_level_strategy(lcrec_small):
    ds = load_rec_dataset(lcrec_small)
    cfg = SIDConfig(levels=2, codebook_size=8, collisions="extra-level")
    build = build_sid_map(ds, cfg, cache=False)
    assert build.sid_map.levels == 3
    assert build.metrics["collisions_before"] > 0 and build.metrics["collisions_after"] == 0


def test_embeddings_cache_hit(lcrec_small, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("RECLLM_CACHE", str(tmp_path))
    ds = load_rec_dataset(lcrec_small)
    cfg = SIDConfig(levels=2, codebook_size=32)
    a = build_sid_map(ds, cfg)
    with caplog.at_level("INFO"):
        b = build_sid_map(ds, cfg)
    assert "embeddings from cache" in caplog.text
    assert np.array_equal(a.sid_map.codes, b.sid_map.codes)
    assert len(list((tmp_path / "embeddings").glob("*.npy"))) == 1


def test_embed_file_roundtrip_and_mismatched_ids(lcrec_small, tmp_path):
    cache = str(tmp_path / "cache")
    npz = tmp_path / "emb.npz"
    proc = run("sid", "embed", "--data", str(lcrec_small), "--out", str(npz), cache=cache)
    assert proc.returncode == 0, proc.stderr
    ds = load_rec_dataset(lcrec_small)
    x = load_embeddings(npz, ds.catalog.ids)
    assert x.shape[0] == 300 and 2 <= x.shape[1] <= 128 and np.isfinite(x).all()
    assert np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)

    def build_with(npz_file, codebook_size: str) -> subprocess.CompletedProcess:
        args = ["--embeddings", str(npz_file), "--codebook-size", codebook_size]
        return run(
            "sid",
            "build",
            "--data",
            str(lcrec_small),
            *args,
            "--out",
            str(tmp_path / "o"),
            cache=cache,
        )

    # ids that do not match the catalog
    save_embeddings(tmp_path / "bad.npz", [*ds.catalog.ids[:-1], "ghost"], x)
    proc = build_with(tmp_path / "bad.npz", "8")
    assert proc.returncode == 2
    assert (
        "item ids do not match the catalog (1 catalog items have no embedding, e.g. ['299']; 1 embedded ids are not in the catalog, e.g. ['ghost'])"
        in proc.stderr
    )
    assert "Fix: embed the same catalog" in proc.stderr
    # NaN embeddings
    bad = x.copy()
    bad[5] = np.nan
    save_embeddings(tmp_path / "nan.npz", ds.catalog.ids, bad)
    proc = build_with(tmp_path / "nan.npz", "8")
    assert (
        proc.returncode == 2
        and "1 rows contain NaN or infinite values (first rows: [5])" in proc.stderr
    )
    # fewer items than codes
    proc = build_with(npz, "512")
    assert proc.returncode == 2 and "300 items but codebook size 512" in proc.stderr
    assert not (tmp_path / "o").exists()  # nothing half-written


def test_published_index_stats(shared_data, tmp_path):
    proc = run(
        "sid", "stats", str(shared_data / "amazon_p5/beauty/Beauty.index.json"), cache=str(tmp_path)
    )
    stats = json.loads(proc.stdout)
    assert (stats["items"], stats["unique_codes"], stats["collisions_before"]) == (12101, 12088, 13)
