"""Tests of the tiny tokenizer and models in recllm.testing, and of the fixtures built on them."""

from __future__ import annotations

import hashlib
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    Qwen3ForCausalLM,
    Qwen3MoeForCausalLM,
)
from trl import SFTConfig, SFTTrainer
from trl.chat_template_utils import is_chat_template_stop_token_trained

from recllm import testing

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Recommend a movie."},
    {"role": "assistant", "content": "The Matrix (1999)"},
]


def _tokenizer_digest(tokenizer: PreTrainedTokenizerFast) -> str:
    # The serialized backend holds vocabulary, merges, added tokens and normalizer/pre-tokenizer.
    return hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()


# --- tokenizer -------------------------------------------------------------------------------


def test_tokenizer_is_deterministic_within_and_across_processes() -> None:
    first, second = testing.build_tiny_tokenizer(), testing.build_tiny_tokenizer()
    assert first.get_vocab() == second.get_vocab()
    assert _tokenizer_digest(first) == _tokenizer_digest(second)

    # A fresh interpreter has different hash seeds (Python and Rust); the BPE must not care.
    code = (
        "import hashlib; from recllm.testing import build_tiny_tokenizer; "
        "print(hashlib.sha256(build_tiny_tokenizer().backend_tokenizer.to_str().encode())"
        ".hexdigest())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == _tokenizer_digest(first)


def test_extra_texts_change_the_merges() -> None:
    base = testing.build_tiny_tokenizer()
    word = "zyxwvut"
    extended = testing.build_tiny_tokenizer(extra_texts=[word] * 50)
    assert len(extended) == testing.TINY_VOCAB_SIZE
    assert len(extended.encode(word)) < len(base.encode(word))


def test_tokenizer_special_tokens(tiny_tokenizer: PreTrainedTokenizerFast) -> None:
    tok = tiny_tokenizer
    assert len(tok) == testing.TINY_VOCAB_SIZE == 512
    assert tok.convert_tokens_to_ids([testing.ENDOFTEXT, testing.IM_START, testing.IM_END]) == [
        0,
        1,
        2,
    ]
    assert (tok.eos_token, tok.eos_token_id) == ("<|im_end|>", 2)
    assert (tok.pad_token, tok.pad_token_id) == ("<|endoftext|>", 0)
    assert tok.bos_token is None
    # Specials are atomic and no BOS/EOS is added around plain text, as with Qwen.
    assert tok.encode("<|im_start|>user<|im_end|>") == [1, *tok.encode("user"), 2]
    assert tok("hi")["input_ids"] == tok.encode("hi")
    assert tok.model_input_names == ["input_ids", "attention_mask"]


@pytest.mark.parametrize(
    "text",
    [
        "The user watched a science fiction movie.",
        "héllo wörld — naïve café, 日本語, emoji 🙂👍",
        "  leading spaces,\ttabs\n\nand blank lines\r\n",
        'def f(x: int) -> dict[str, int]:\n    return {"x": x}\n',
        "Price: $19.99; rating 4.5/5 <|im_start|>assistant\n<|im_end|>",
        "",
    ],
)
def test_encode_decode_round_trip(tiny_tokenizer: PreTrainedTokenizerFast, text: str) -> None:
    ids = tiny_tokenizer.encode(text)
    assert all(0 <= i < len(tiny_tokenizer) for i in ids)
    assert tiny_tokenizer.decode(ids) == text


def test_tokenizer_compresses_its_corpus(tiny_tokenizer: PreTrainedTokenizerFast) -> None:
    text = "Recommend the next item for this user based on the items they bought before."
    assert len(tiny_tokenizer.encode(text)) < len(text.encode()) / 2


# --- chat template -----------------------------------------------------------------------------


def test_chat_template_renders_chatml(tiny_tokenizer: PreTrainedTokenizerFast) -> None:
    rendered = tiny_tokenizer.apply_chat_template(CONVERSATION, tokenize=False)
    assert rendered == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi there<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n"
        "<|im_start|>user\nRecommend a movie.<|im_end|>\n"
        "<|im_start|>assistant\nThe Matrix (1999)<|im_end|>\n"
    )
    prompt = tiny_tokenizer.apply_chat_template(
        CONVERSATION[:2], tokenize=False, add_generation_prompt=True
    )
    assert prompt == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi there<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    without = tiny_tokenizer.apply_chat_template(CONVERSATION[:2], tokenize=False)
    assert prompt == without + "<|im_start|>assistant\n"


def test_assistant_mask_covers_exactly_assistant_content_and_im_end(
    tiny_tokenizer: PreTrainedTokenizerFast,
) -> None:
    tok = tiny_tokenizer
    out = tok.apply_chat_template(
        CONVERSATION, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    ids, mask = out["input_ids"], out["assistant_masks"]
    assert ids == tok.encode(tok.apply_chat_template(CONVERSATION, tokenize=False))
    assert len(mask) == len(ids)

    # Expected mask built from the rendered pieces: 1 exactly on each assistant content + <|im_end|>.
    expected: list[int] = []
    for message in CONVERSATION:
        header = tok.encode(f"<|im_start|>{message['role']}\n")
        body = [*tok.encode(message["content"]), tok.eos_token_id]
        newline = tok.encode("\n")
        is_assistant = int(message["role"] == "assistant")
        expected += [0] * len(header) + [is_assistant] * len(body) + [0] * len(newline)
    assert mask == expected

    masked = [i for i, m in zip(ids, mask, strict=True) if m]
    assert tok.decode(masked) == "Hello!<|im_end|>The Matrix (1999)<|im_end|>"
    # TRL's own check that the stop token is trained under assistant_only_loss.
    assert is_chat_template_stop_token_trained(tok)


# --- models ----------------------------------------------------------------------------------


@pytest.mark.parametrize("moe", [False, True], ids=["dense", "moe"])
def test_model_config_and_forward_shapes(
    tiny_tokenizer: PreTrainedTokenizerFast,
    tiny_qwen3: Qwen3ForCausalLM,
    tiny_qwen3_moe: Qwen3MoeForCausalLM,
    moe: bool,
) -> None:
    model = tiny_qwen3_moe if moe else tiny_qwen3
    cfg = model.config
    assert isinstance(model, Qwen3MoeForCausalLM if moe else Qwen3ForCausalLM)
    assert (cfg.hidden_size, cfg.num_hidden_layers) == (64, 2)
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim) == (4, 2, 32)
    assert cfg.vocab_size == len(tiny_tokenizer) == 512
    assert (cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id) == (0, 2, 0)
    assert cfg.tie_word_embeddings
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    if moe:
        assert (cfg.num_experts, cfg.num_experts_per_tok, cfg.moe_intermediate_size) == (4, 2, 32)
    assert not model.training
    assert model.generation_config.do_sample is False

    batch = tiny_tokenizer(["The user watched a movie", "Hi"], return_tensors="pt", padding=True)
    assert batch["input_ids"].shape[0] == 2
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (2, batch["input_ids"].shape[1], 512)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("moe", [False, True], ids=["dense", "moe"])
def test_model_is_deterministic_per_seed_and_leaves_global_rng_alone(moe: bool) -> None:
    rng_before = torch.get_rng_state()
    a = testing.build_tiny_qwen3(512, moe=moe, seed=3)
    b = testing.build_tiny_qwen3(512, moe=moe, seed=3)
    c = testing.build_tiny_qwen3(512, moe=moe, seed=4)
    assert torch.equal(torch.get_rng_state(), rng_before)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["model.embed_tokens.weight"], sc["model.embed_tokens.weight"])
    # A bare vocabulary size leaves the special ids unset.
    assert a.config.eos_token_id is None


def test_untied_model_has_separate_lm_head(tiny_tokenizer: PreTrainedTokenizerFast) -> None:
    model = testing.build_tiny_qwen3(tiny_tokenizer, tie_word_embeddings=False)
    assert not model.config.tie_word_embeddings
    head, emb = model.get_output_embeddings().weight, model.get_input_embeddings().weight
    assert head.data_ptr() != emb.data_ptr()
    assert not torch.equal(head, emb)


@pytest.mark.parametrize("moe", [False, True], ids=["dense", "moe"])
def test_save_and_reload_give_identical_logits(
    tmp_path: Path, tiny_tokenizer: PreTrainedTokenizerFast, moe: bool
) -> None:
    path = testing.save_tiny_model(tmp_path / "model", moe=moe, tokenizer=tiny_tokenizer)
    assert path == tmp_path / "model"
    assert {"config.json", "generation_config.json", "model.safetensors"} <= {
        p.name for p in path.iterdir()
    }
    original = testing.build_tiny_qwen3(tiny_tokenizer, moe=moe)
    reloaded = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    assert type(reloaded) is type(original)
    assert reloaded.generation_config.do_sample is False
    assert reloaded.generation_config.num_beams == 1
    assert reloaded.generation_config.eos_token_id == 2

    tok = AutoTokenizer.from_pretrained(path)
    assert tok.get_vocab() == tiny_tokenizer.get_vocab()
    assert tok.chat_template == testing.CHATML_TEMPLATE
    assert (tok.eos_token, tok.pad_token) == ("<|im_end|>", "<|endoftext|>")

    ids = torch.tensor([tok.encode("The user watched a science fiction movie.")])
    with torch.no_grad():
        assert torch.equal(original(ids).logits, reloaded(ids).logits)


# --- TRL SFT on the tiny models -------------------------------------------------------------


# TRL 1.16 sets `gradient_checkpointing`, which transformers 5.23 renamed `activation_checkpointing`
# (absent in 5.19, so the old name is the one that works on both); the rename warns.
@pytest.mark.filterwarnings("ignore:`gradient_checkpointing` is deprecated:FutureWarning")
@pytest.mark.usefixtures("torch_single_thread")
@pytest.mark.parametrize("moe", [False, True], ids=["dense", "moe"])
def test_sft_with_assistant_only_loss_learns(
    tmp_path: Path, tiny_tokenizer: PreTrainedTokenizerFast, moe: bool
) -> None:
    conversations = [
        [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"}],
        [
            {"role": "user", "content": "Recommend a movie."},
            {"role": "assistant", "content": "The Matrix (1999)"},
        ],
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Next item?"},
            {"role": "assistant", "content": "Wireless Headphones"},
        ],
        [{"role": "user", "content": "Rate it"}, {"role": "assistant", "content": "four stars"}],
    ]
    dataset = Dataset.from_list([{"messages": m} for m in conversations * 20])
    model = testing.build_tiny_qwen3(tiny_tokenizer, moe=moe, seed=1)
    args = SFTConfig(
        output_dir=str(tmp_path),
        max_steps=20,
        per_device_train_batch_size=8,
        learning_rate=1e-2,
        lr_scheduler_type="constant",
        logging_steps=1,
        assistant_only_loss=True,
        bf16=False,
        gradient_checkpointing=False,  # TRL defaults to True; pointless on a 2-layer model
        save_strategy="no",
        report_to="none",
        seed=0,
        use_cpu=True,
    )
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=tiny_tokenizer
    )

    # TRL turned the template's assistant mask into labels: only the answer and its stop token.
    row = trainer.train_dataset[0]
    trained = [i for i in row["labels"] if i != -100]
    assert tiny_tokenizer.decode(trained) == "Hello!<|im_end|>"

    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses) == 20
    assert all(math.isfinite(loss) for loss in losses)
    # A random init predicts nearly uniformly: ln(512) = 6.24. Twenty steps on four repeated answers
    # reach about 1 (measured 0.9 dense, 1.1 MoE over the last five steps).
    assert abs(losses[0] - math.log(512)) < 0.5
    assert sum(losses[-5:]) / 5 < 2.0


# --- locating shared files -------------------------------------------------------------------


def test_find_shared_dir_honours_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECLLM_SHARED_DIR", str(tmp_path))
    assert testing.find_shared_dir() == tmp_path
    assert testing.shared_data_dir() is None
    assert testing.load_qwen3_tokenizer() is None
    (tmp_path / "data").mkdir()
    assert testing.shared_data_dir() == tmp_path / "data"

    monkeypatch.setenv("RECLLM_SHARED_DIR", str(tmp_path / "missing"))
    assert testing.find_shared_dir() is None
    assert testing.shared_data_dir() is None


def test_find_shared_dir_looks_beside_checkout_then_beside_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RECLLM_SHARED_DIR", raising=False)
    # Pretend the package lives in <tmp>/a/repo/recllm and the user works in <tmp>/b/work.
    fake_module = tmp_path / "a" / "repo" / "recllm" / "testing.py"
    fake_module.parent.mkdir(parents=True)
    monkeypatch.setattr(testing, "__file__", str(fake_module))
    (tmp_path / "b" / "work").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "b" / "work")
    assert testing.find_shared_dir() is None

    (tmp_path / "b" / "shared").mkdir()
    assert testing.find_shared_dir() == tmp_path / "b" / "shared"
    (tmp_path / "a" / "shared").mkdir()
    assert testing.find_shared_dir() == tmp_path / "a" / "shared"  # the checkout's sibling wins


def test_load_qwen3_tokenizer_returns_none_for_missing_path(tmp_path: Path) -> None:
    assert testing.load_qwen3_tokenizer(tmp_path / "nope") is None


# --- the real Qwen3 tokenizer (only when ../shared holds it) -----------------------------------


def test_real_qwen3_tokenizer(qwen3_tokenizer: PreTrainedTokenizerBase) -> None:
    tok = qwen3_tokenizer
    assert len(tok) == testing.QWEN3_LEN == 151_669
    assert (tok.eos_token, tok.eos_token_id) == ("<|im_end|>", 151_645)
    assert (tok.pad_token, tok.pad_token_id) == ("<|endoftext|>", 151_643)
    assert tok.convert_tokens_to_ids("<|im_start|>") == 151_644

    model = testing.build_tiny_qwen3(tok)
    assert model.config.vocab_size == 151_669
    assert (model.config.eos_token_id, model.config.pad_token_id) == (151_645, 151_643)
    text = tok.apply_chat_template(
        [{"role": "user", "content": "Recommend a movie."}],
        tokenize=False,
        add_generation_prompt=True,
    )
    ids = torch.tensor([tok.encode(text)])
    assert ids[0, 0].item() == 151_644  # starts with <|im_start|>: no BOS is prepended
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], 151_669)
    assert torch.isfinite(logits).all()
