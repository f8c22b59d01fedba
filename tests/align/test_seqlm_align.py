"""The alignment recipes on a SID-sequence decoder (recipes/seqlm.py), not only on chat models.

A SID-sequence decoder is trained on SIDs back to back, with no end-of-sequence token, and its
prompts end on the last history item's ``<|sid_end|>``; beam search then feeds ``<|sid_begin|>``
and the codes. TRL's own preparation of plain-text pairs appends the end-of-sequence token to
every answer (the control below shows it), so DPO would score and train a token the decoder
never emits. Here every stage trains on exactly the ids the decoder sees in evaluation, and
GRPO's per-token log-probs are the beam search's own scores.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from recllm.align.mining import MiningConfig, load_preferences, mine_preferences, mining_examples
from recllm.align.rewards import reward_from_spec
from recllm.data import DataConfig, load_rec_dataset, split_dataset
from recllm.decode import SIDTrie, encode_prompts, left_pad, sid_beam_search
from recllm.tasks.prompting import PromptSpec, build_prompts
from recllm.testing import save_tiny_recommender
from recllm.vocab import SID_FORMAT, load_model_with_sids
from tests.scripts.running import ROOT

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def seqlm_dir(tmp_path_factory) -> Path:
    """A tiny SID-sequence decoder trained a few steps by recipes/seqlm.py on the tiny data."""
    root = tmp_path_factory.mktemp("seqlm")
    data = save_tiny_recommender(root / "tiny").parent / "data"
    out = root / "run"
    cmd = [sys.executable, str(ROOT / "recipes" / "seqlm.py")]
    cmd += ["--config", str(ROOT / "recipes" / "seqlm.yaml"), "--data_path", str(data)]
    cmd += ["--output_dir", str(out), "--ensemble", "1", "--valid_users", "0", "--max_steps", "30"]
    cmd += ["--codebook_size", "4", "--hidden_size", "32", "--num_heads", "2"]
    cmd += ["--intermediate_size", "64", "--per_device_train_batch_size", "8"]
    cmd += ["--warmup_steps", "0", "--learning_rate", "3e-3", "--time_budget_minutes", "null"]
    cmd += ["--bf16", "false"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=root, env=ENV, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out / "model"


def _start(model_dir: Path):
    model, tok, sid_map = load_model_with_sids(model_dir)
    spec = PromptSpec.from_model_dir(model_dir)
    assert spec.style == "sid_sequence"
    cfg = DataConfig(**spec.data)
    dataset = load_rec_dataset(config=cfg)
    examples = mining_examples(split_dataset(dataset, cfg), spec.max_history)
    return model, tok, sid_map, spec, dataset.catalog, examples


def launch(recipe: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1"]
    cmd += [str(ROOT / "recipes" / f"{recipe}.py")]
    cmd += ["--config", str(ROOT / "recipes" / f"{recipe}.yaml")]
    return subprocess.run(
        [*cmd, *args], capture_output=True, text=True, cwd=cwd, env=ENV, timeout=600
    )


def test_mined_pairs_are_the_ids_the_decoder_sees(seqlm_dir):
    from trl import DPOConfig, DPOTrainer

    from recllm.align.dpo import TOKEN_COLUMNS, TokenizedDPOTrainer

    model, tok, sid_map, spec, catalog, examples = _start(seqlm_dir)
    reward = reward_from_spec("exact_hit=1,prefix_credit=0.5")
    prefs = mine_preferences(
        model, tok, sid_map, examples[:12], spec, catalog, reward, MiningConfig(beams=6)
    )
    assert len(prefs) > 0
    ids = SID_FORMAT.token_ids(tok, sid_map.codebook_sizes)
    by_user = {ex.user_id: ex for ex in examples}
    for row in prefs:
        prompt = build_prompts(spec, [by_user[row["example_id"]]], sid_map, catalog)[0]
        assert row["prompt_ids"] == encode_prompts(tok, [prompt])[0]  # evaluation's prompt
        assert row["prompt_ids"][-1] == ids.end_id  # ends on the last history item
        for side in ("chosen", "rejected"):  # the SID span, read from the SID map, no EOS
            assert row[f"{side}_ids"] == ids.encode(sid_map.code(row[f"{side}_item"]))
            assert tok.eos_token_id not in row[f"{side}_ids"]

    cfg = DPOConfig(output_dir="unused", use_cpu=True, report_to="none", max_length=512)
    ref, _, _ = load_model_with_sids(seqlm_dir)
    ours = TokenizedDPOTrainer(
        model=model,
        ref_model=ref,
        args=cfg,
        train_dataset=prefs.select_columns(TOKEN_COLUMNS),
        processing_class=tok,
    )
    assert ours.train_dataset["chosen_ids"] == prefs["chosen_ids"]
    # the control: TRL's preparation of the same pairs as text appends the EOS token
    theirs = DPOTrainer(
        model=model,
        ref_model=ref,
        args=cfg,
        train_dataset=prefs.select_columns(["prompt", "chosen", "rejected"]),
        processing_class=tok,
    )
    assert all(c[-1] == tok.eos_token_id for c in theirs.train_dataset["chosen_ids"])
    assert [c[:-1] for c in theirs.train_dataset["chosen_ids"]] == prefs["chosen_ids"]


def test_grpo_logprobs_are_the_beam_scores(seqlm_dir):
    """The rollout's per-token log-probs of the codes, averaged, are the constrained beam
    search's scores: the completions sit in the decoder's own context (``<|sid_begin|>``
    first). Without the begin marker the same codes score differently."""
    from recllm.align.grpo import _token_logprobs, constrained_rollout

    model, tok, sid_map, spec, catalog, examples = _start(seqlm_dir)
    model.eval()
    group = 4
    prompts = build_prompts(spec, examples[:3], sid_map, catalog)
    trainer = SimpleNamespace(
        num_generations=group,
        num_generations_eval=group,
        model=model,
        accelerator=SimpleNamespace(unwrap_model=lambda m: m, is_main_process=True),
        processing_class=tok,
        state=SimpleNamespace(global_step=0),  # a trainer's step seeds sampled rollouts
    )
    rollout = constrained_rollout(sid_map, spec, mode="beam", batch_size=4)
    out = rollout([p for p in prompts for _ in range(group)], trainer)

    ids = SID_FORMAT.token_ids(tok, sid_map.codebook_sizes)
    trie = SIDTrie.from_sid_map(sid_map, ids)
    enc, mask = left_pad(encode_prompts(tok, prompts), tok.pad_token_id, model.device)
    beams = sid_beam_search(model, enc, mask, trie, num_beams=group)
    levels = sid_map.levels
    for n, (completion, logprobs) in enumerate(
        zip(out["completion_ids"], out["logprobs"], strict=True)
    ):
        p, rank = divmod(n, group)
        code = tuple(int(c) for c in beams.codes[p, rank])
        assert completion == ids.encode(code)  # <|sid_begin|> codes <|sid_end|>, no EOS
        mean = sum(logprobs[1 : 1 + levels]) / levels
        assert mean == pytest.approx(float(beams.scores[p, rank]), abs=1e-4)
    # control: the codes right after the prompt, without the begin marker, score otherwise
    bare = _token_logprobs(model, out["prompt_ids"][:1], [out["completion_ids"][0][1:]], tok)
    assert abs(sum(bare[0][:levels]) / levels - float(beams.scores[0, 0])) > 1e-3


@pytest.mark.parametrize(
    "recipe",
    [
        "dpo",
        pytest.param("awsft", marks=pytest.mark.slow),
        pytest.param("grpo", marks=pytest.mark.slow),
    ],
)  # ~25 s each: DPO in the default run, the others with -m slow
def test_recipes_train_a_sequence_decoder(seqlm_dir, tmp_path, recipe):
    out = tmp_path / recipe
    args = ["--model_dir", str(seqlm_dir), "--output_dir", str(out), "--mining_users", "12"]
    args += ["--reward", "exact_hit=1,prefix_credit=0.5", "--max_steps", "4"]
    args += ["--learning_rate", "3e-3", "--logging_steps", "1", "--bf16", "false"]
    if recipe == "grpo":
        args += ["--num_generations", "4", "--per_device_train_batch_size", "4"]
        args += ["--reward", "exact_hit=1,prefix_credit=0.5,rank_shaped=0.2"]
    else:
        args += ["--beams", "4", "--per_device_train_batch_size", "4"]
    if recipe == "dpo":
        args += ["--loss_type", "sigmoid", "--loss_weights", "1.0"]
    proc = launch(recipe, *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]

    log = json.loads((out / f"{recipe}_log.json").read_text())
    history = (
        log["grpo"] if recipe == "grpo" else log["rounds"][0]["dpo" if recipe == "dpo" else "sft"]
    )
    losses = [h["loss"] for h in history if "loss" in h]
    assert losses and all(math.isfinite(x) for x in losses)
    if recipe == "dpo":
        assert losses[0] == pytest.approx(math.log(2), abs=1e-3)  # policy == reference
        prefs, meta = load_preferences(out / "round1" / "preferences")
        assert meta["prompt_style"] == "sid_sequence" and "prompt_ids" in prefs.column_names
    start, _, sid_map = load_model_with_sids(seqlm_dir)
    final, _, final_map = load_model_with_sids(out / "model")
    assert final_map.content_hash == sid_map.content_hash
    assert any(
        not torch.equal(a, b) for a, b in zip(start.parameters(), final.parameters(), strict=True)
    )
    assert PromptSpec.from_model_dir(out / "model").style == "sid_sequence"


@pytest.mark.slow  # ~45 s
def test_align_benchmark_script(seqlm_dir, tmp_path):
    """scripts/align_benchmark.py end to end on the tiny decoder: the reward model trained once
    and scored, the SFT start and each DPO round scored on the same users, the table, the PNG,
    the summary and a last line of JSON; a rerun trains and scores nothing again."""
    out = tmp_path / "bench"
    cmd = [sys.executable, str(ROOT / "scripts" / "align_benchmark.py"), "--sft", str(seqlm_dir)]
    cmd += ["--out", str(out), "--stages", "dpo", "--sasrec-minutes", "0.05", "--beams", "10"]
    cmd += ["--reward", "sasrec=1,prefix_credit=0.5"]
    cmd += ["--dpo-args", "--rounds 2 --mining_users 12 --beams 4 --max_steps 2 --bf16 false"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    names = ["SASRec (the reward model, same run)", "SFT start"]
    names += ["+ DPO round 1 (seed 0)", "+ DPO round 2 (seed 0)"]
    assert list(figures) == names
    summary = json.loads((out / "summary.json").read_text())
    assert summary["users"] == 40 and summary["model_kind"] == "sid_sequence"
    for name in names[1:]:
        assert summary["rows"][name]["invalid_rate"] == 0.0
        assert summary["rows"][name]["users"] == 40
    assert (out / "align_benchmark.png").stat().st_size > 10_000
    log = json.loads((out / "dpo_seed0" / "dpo_log.json").read_text())
    assert [r["round"] for r in log["rounds"]] == [1, 2]
    # each round's minutes are cumulative: round 2 counts round 1's time and its own
    seconds = [r["seconds"] for r in log["rounds"]]
    assert all(s > 0 for s in seconds)
    assert figures["+ DPO round 1 (seed 0)"]["minutes"] == round(seconds[0] / 60, 2)
    assert figures["+ DPO round 2 (seed 0)"]["minutes"] == round(
        seconds[0] / 60 + seconds[1] / 60, 2
    )
    # the kept ranks reproduce each row's metrics, so the paired differences are the table's
    sft = summary["rows"]["SFT start"]
    for name in names[2:]:
        diff = summary["paired_vs_sft"][name]
        row = summary["rows"][name]
        assert diff["R@10"]["delta"] == pytest.approx(row["recall@10"] - sft["recall@10"], abs=1e-4)
        assert diff["N@10"]["delta"] == pytest.approx(row["ndcg@10"] - sft["ndcg@10"], abs=1e-4)

    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.json") if "summary" not in p.name}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == figures
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())  # nothing redone


def test_paired_difference_of_two_rank_lists():
    """The per-user comparison behind the benchmark's significance column, by hand: R@10 and
    N@10 differences, the users gained and lost, and a p of 1 when nothing differs."""
    from recllm.eval.metrics import paired_difference

    base, other = [1, 0, 3, 12], [0, 2, 3, 1]  # 0: target not in the beam
    out = paired_difference(base, other)
    assert out["R@10"]["delta"] == pytest.approx((-1 + 1 + 0 + 1) / 4)
    gains = [-1.0, 1 / math.log2(3), 0.0, 1.0]
    assert out["N@10"]["delta"] == pytest.approx(sum(gains) / 4, abs=1e-5)
    assert (out["users_gained"], out["users_lost"]) == (2, 1)
    lo, hi = out["N@10"]["ci95"]
    assert lo < out["N@10"]["delta"] < hi
    same = paired_difference(base, base)
    assert same["R@10"]["delta"] == 0 and same["R@10"]["p"] == 1.0
    with pytest.raises(ValueError, match="not the same users"):
        paired_difference(base, other[:3])
