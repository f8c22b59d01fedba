"""``--mining_engine vllm``: mining and rollouts on a vLLM engine kept in sync with the policy.

Each recipe runs twice on the same tiny chat recommender, once decoding with recllm's HF SID
beam search and once with vLLM (in the recipe's process: ``VLLM_ENABLE_V1_MULTIPROCESSING=0``);
everything mined or rolled out must be identical, round after round and step after step. The
controls show the policy moved enough between rounds (steps) that an engine left on the start
weights would have decoded other beams, so identity proves the weight push.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from recllm.align.mining import _beams, load_preferences, mining_examples
from recllm.data import DataConfig, load_rec_dataset, split_dataset
from recllm.errors import UserError
from recllm.tasks.prompting import PromptSpec, build_prompts
from recllm.testing import save_tiny_recommender
from recllm.vocab import SID_FORMAT, load_model_with_sids
from tests.scripts.running import ROOT

pytestmark = pytest.mark.vllm

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
# the engine in the recipe's process (load ~3 s instead of ~25 s), 1 GiB of KV cache
VLLM_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1"}


def launch(recipe, *args, cwd, vllm=False):
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1"]
    cmd += [str(ROOT / "recipes" / f"{recipe}.py")]
    cmd += ["--config", str(ROOT / "recipes" / f"{recipe}.yaml"), *map(str, args)]
    if vllm:
        cmd += ["--mining_engine", "vllm"]
    env = {**ENV, **(VLLM_ENV if vllm else {})}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def test_dpo_mines_the_same_pairs_on_vllm_every_round(tmp_path):
    sft = save_tiny_recommender(tmp_path / "tiny")
    common = ["--model_dir", sft, "--rounds", "2", "--beams", "6", "--mining_users", "16"]
    common += ["--reward", "exact_hit=1,prefix_credit=0.5", "--loss_type", "sigmoid"]
    common += ["--loss_weights", "1.0", "--learning_rate", "3e-3", "--max_steps", "6"]
    common += ["--per_device_train_batch_size", "4", "--bf16", "false"]
    launch("dpo", *common, "--output_dir", tmp_path / "hf", cwd=tmp_path)
    launch("dpo", *common, "--output_dir", tmp_path / "vllm", cwd=tmp_path, vllm=True)

    columns = ["example_id", "beam_items", "beam_rewards", "chosen_item", "rejected_item"]
    mined = {}
    for engine in ("hf", "vllm"):
        for r in (1, 2):
            prefs, meta = load_preferences(tmp_path / engine / f"round{r}" / "preferences")
            assert meta["engine"] == engine and len(prefs) > 0
            mined[engine, r] = prefs.select_columns(columns).to_dict()
    assert mined["vllm", 1] == mined["hf", 1]
    assert mined["vllm", 2] == mined["hf", 2]  # round 2: the engine holds round 1's policy
    # control: round 1's policy beams otherwise than the SFT model, so an engine left on the
    # SFT weights would have mined round 1's beams again in round 2
    assert mined["hf", 2]["beam_items"] != mined["hf", 1]["beam_items"]
    start, _, _ = load_model_with_sids(sft)
    final, _, _ = load_model_with_sids(tmp_path / "vllm" / "model")
    assert any(
        not torch.equal(a, b) for a, b in zip(start.parameters(), final.parameters(), strict=True)
    )


@pytest.mark.slow  # ~2.5 min: three GRPO runs
def test_grpo_rollouts_on_vllm_follow_the_policy(tmp_path):
    sft = save_tiny_recommender(tmp_path / "tiny")
    common = [
        "--model_dir",
        sft,
        "--mining_users",
        "8",
        "--reward",
        "exact_hit=1,prefix_credit=0.5",
    ]
    common += ["--num_generations", "4", "--per_device_train_batch_size", "4", "--max_steps", "4"]
    common += ["--learning_rate", "1e-2", "--bf16", "false"]
    launch("grpo", *common, "--output_dir", tmp_path / "hf", cwd=tmp_path)
    launch("grpo", *common, "--output_dir", tmp_path / "vllm", cwd=tmp_path, vllm=True)

    def calls(engine):
        lines = (tmp_path / engine / "rewards.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines]

    hf, vl = calls("hf"), calls("vllm")
    assert len(hf) == 4 and vl == hf  # same users, completion ids, ranks and rewards every step

    # control: after the first step, the start model beams some of those users otherwise, so
    # rollouts from an engine that missed the pushes would differ from the HF ones
    model, tok, sid_map = load_model_with_sids(sft)
    spec = PromptSpec.from_model_dir(sft)
    cfg = DataConfig(**spec.data)
    data = load_rec_dataset(config=cfg)
    examples = {ex.user_id: ex for ex in mining_examples(split_dataset(data, cfg), 20)}
    ids = SID_FORMAT.token_ids(tok, sid_map.codebook_sizes)
    stale = 0
    for call in hf[1:]:
        users = call["example_id"][::4]
        prompts = build_prompts(spec, [examples[u] for u in users], sid_map, data.catalog)
        with torch.inference_mode():
            start_beams = _beams(model.eval(), tok, prompts, sid_map, spec, 4, 8)
        for g, row in enumerate(start_beams):
            rolled = [
                sid_map.item(ids.decode(c[c.index(ids.begin_id) :][: sid_map.levels + 2]))
                for c in call["completion_ids"][4 * g : 4 * g + 4]
            ]
            stale += rolled != [item for item, _, _ in row]
    assert stale > 0

    # sampled rollouts on vLLM: constrained, so every one a catalog item
    launch("grpo", *common, "--output_dir", tmp_path / "sample", "--rollout", "sample",
           cwd=tmp_path, vllm=True)  # fmt: skip
    lines = (tmp_path / "sample" / "rollouts.jsonl").read_text().splitlines()
    groups = [json.loads(line) for line in lines]
    assert groups and all(i in sid_map for g in groups for i in g["items"])
    assert all(g["ranks"] == [None] * 4 for g in groups)


def test_a_sid_sequence_decoder_is_refused(tmp_path):
    """vLLM's beam rounds end on a stop token a SID-sequence decoder never emits."""
    from recllm.align.vllm_policy import VLLMPolicy

    sft = save_tiny_recommender(tmp_path / "tiny")
    _, tok, sid_map = load_model_with_sids(sft)
    with pytest.raises(UserError, match="--mining_engine hf"):
        VLLMPolicy(sft, tok, sid_map, SimpleNamespace(style="sid_sequence"), max_beams=4)


def test_trl_use_vllm_is_refused_with_the_fix(tmp_path):
    """TRL's own vLLM engine samples without the SID constraint: GRPO names the option to use."""
    sft = save_tiny_recommender(tmp_path / "tiny")
    cmd = [sys.executable, str(ROOT / "recipes" / "grpo.py")]
    cmd += ["--config", str(ROOT / "recipes" / "grpo.yaml"), "--model_dir", str(sft)]
    cmd += ["--output_dir", str(tmp_path / "g"), "--use_vllm", "true"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=ENV, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("grpo: error: --use_vllm true:") and "--mining_engine vllm" in last
    assert not (tmp_path / "g").exists()  # stopped before anything was written
