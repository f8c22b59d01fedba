"""``recllm eval --exclude-history`` (issue 32): each user's history is excluded inside the SID
constraint and the figures name their protocol (``p5_exclude_history``); the default stays the
P5 protocol, where seen items may come back (the control)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recllm.cli import main
from recllm.eval.run import PromptSpec, eval_examples, evaluate_recommender
from recllm.testing import save_tiny_recommender
from recllm.vocab import load_model_with_sids

pytestmark = pytest.mark.usefixtures("torch_single_thread")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_recommender(tmp_path_factory.mktemp("ev") / "tiny", seed=0)


def test_exclude_history_never_ranks_a_seen_item(model_dir: Path):
    model, tokenizer, sid_map = load_model_with_sids(model_dir)
    _, dataset, examples = eval_examples(model_dir, None, "test", 12)
    spec = PromptSpec.from_model_dir(model_dir)

    def run(exclude: bool):
        return evaluate_recommender(
            model, tokenizer, sid_map, examples, spec, dataset.catalog,
            beams=20, ks=(5, 20), batch_size=4, progress=False, exclude_history=exclude,
        )  # fmt: skip

    p5, unseen = run(False), run(True)
    assert p5.metrics["protocol"] == "p5"
    assert unseen.metrics["protocol"] == "p5_exclude_history"
    seen_in_p5 = sum(
        len(set(r) & set(ex.history)) for r, ex in zip(p5.ranked, examples, strict=True)
    )
    assert seen_in_p5 > 0  # the control: the P5 lists hold history items
    for ranked, ex in zip(unseen.ranked, examples, strict=True):
        assert len(ranked) == 20 and not set(ranked) & set(ex.history)
    with pytest.raises(ValueError, match="inside the SID constraint"):
        evaluate_recommender(
            model, tokenizer, sid_map, examples, spec, dataset.catalog,
            beams=5, ks=(5,), constrained=False, exclude_history=True, progress=False,
        )  # fmt: skip


def test_cli_writes_the_protocol_beside_the_p5_figures(model_dir: Path, capsys):
    args = ["eval", "--model", str(model_dir), "--max-users", "4", "--beams", "6", "--k", "3,6"]
    assert main([*args, "--exclude-history"]) == 0
    assert "protocol p5_exclude_history" in capsys.readouterr().out
    doc = json.loads((model_dir / "eval_test_exclude_history" / "metrics.json").read_text())
    assert doc["metrics"]["protocol"] == "p5_exclude_history"
    assert main(args) == 0
    doc = json.loads((model_dir / "eval_test" / "metrics.json").read_text())
    assert doc["metrics"]["protocol"] == "p5"
    assert main([*args, "--exclude-history", "--no-constraint"]) == 2
    assert "--exclude-history: excludes each user's history" in capsys.readouterr().err
