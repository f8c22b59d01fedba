"""split_sasrec: the reward model or teacher a recipe trains for itself is reused only when it
was made with the same settings on the same data."""

from __future__ import annotations

import json

from recllm.baselines.sasrec import SASRecConfig, split_sasrec
from recllm.data.splits import leave_one_out
from recllm.data.types import Catalog, Interactions

ITEMS = [f"i{n}" for n in range(12)]
CATALOG = Catalog({i: {"title": f"title {i}"} for i in ITEMS}, text_fields=("title",))


def split_of(shift: int):
    seqs = {f"u{u}": [ITEMS[(u + shift + t) % 12] for t in range(6)] for u in range(10)}
    return leave_one_out(Interactions(seqs), max_history=20)


def test_a_teacher_of_other_data_is_trained_again_not_reused(tmp_path, torch_single_thread):
    cfg = SASRecConfig(hidden_size=16, num_heads=2, max_len=8, epochs=2)
    out = tmp_path / "teacher"
    split_sasrec(out, split_of(0), CATALOG, cfg, "--teacher")
    stamp = (out / "sasrec.safetensors").stat().st_mtime_ns
    first = json.loads((out / "sasrec.json").read_text())["meta"]["data_fingerprint"]
    split_sasrec(out, split_of(0), CATALOG, cfg, "--teacher")  # control: same data, reused
    assert (out / "sasrec.safetensors").stat().st_mtime_ns == stamp
    split_sasrec(out, split_of(1), CATALOG, cfg, "--teacher")  # other data: trained again
    again = json.loads((out / "sasrec.json").read_text())["meta"]["data_fingerprint"]
    assert again != first and (out / "sasrec.safetensors").stat().st_mtime_ns != stamp
