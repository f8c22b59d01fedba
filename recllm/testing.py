"""Tiny, hermetic stand-ins for real tokenizers and LLMs, for tests, smoke runs and examples.

Everything here is built in-process in a second or two on a CPU and never downloads anything:

- :func:`build_tiny_tokenizer` trains a byte-level BPE (Qwen-style pre-tokenization, ChatML special
  tokens, a chat template with ``{% generation %}`` markers for TRL's ``assistant_only_loss``).
- :func:`build_tiny_qwen3` builds a randomly initialised two-layer ``Qwen3ForCausalLM`` or
  ``Qwen3MoeForCausalLM`` whose shapes vLLM's CPU backend accepts.
- :func:`save_tiny_model` writes both to a directory that ``from_pretrained`` and ``vllm.LLM`` load.
- :func:`save_tiny_recommender` writes a tiny catalog + interactions data set and a tiny Qwen3
  extended with random SIDs for it, as a recllm model directory (serving and decoding tests).
- :func:`find_shared_dir`, :func:`shared_data_dir` and :func:`load_qwen3_tokenizer` locate the
  optional ``shared/`` folder (real Qwen3 tokenizer files, prepared data sets) next to the checkout.

Example:
    >>> from recllm.testing import build_tiny_tokenizer, build_tiny_qwen3
    >>> tok = build_tiny_tokenizer()
    >>> model = build_tiny_qwen3(tok)
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

if TYPE_CHECKING:
    from transformers import GenerationConfig, Qwen3ForCausalLM, Qwen3MoeForCausalLM

# torch and the model classes are imported inside the functions that need them, so that a script
# (or a test subprocess) that only builds the tokenizer starts in about a second, not ten.

logger = logging.getLogger(__name__)

__all__ = [
    "CHATML_TEMPLATE",
    "ENDOFTEXT",
    "IM_END",
    "IM_START",
    "QWEN3_LEN",
    "TINY_VOCAB_SIZE",
    "build_tiny_qwen3",
    "build_tiny_tokenizer",
    "find_shared_dir",
    "load_qwen3_tokenizer",
    "save_tiny_model",
    "save_tiny_recommender",
    "shared_data_dir",
]

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
ENDOFTEXT = "<|endoftext|>"

#: Target size of the tiny BPE vocabulary (256 byte tokens + 3 specials + merges).
TINY_VOCAB_SIZE = 512

#: ``len(tokenizer)`` of the real Qwen3 tokenizer (151,643 BPE tokens + 26 added tokens).
QWEN3_LEN = 151_669

#: The pre-tokenization regex of Qwen2/Qwen3 (same as GPT-4's cl100k), so the tiny tokenizer
#: splits text into pieces the way the real one does.
_QWEN_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

#: ChatML (the Qwen format) without a default system prompt. The assistant content and its
#: closing ``<|im_end|>`` sit inside ``{% generation %}`` so that
#: ``return_assistant_tokens_mask=True`` (TRL's ``assistant_only_loss``) trains the model to stop;
#: the newline after ``<|im_end|>`` stays outside, as the model never has to generate it.
CHATML_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- generation -%}"
    "{{- message['content'] + '<|im_end|>' -}}"
    "{%- endgeneration -%}"
    "{{- '\\n' -}}"
    "{%- else -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- endif -%}"
)

# Enough varied English (recommendation, catalog and chat text) for the BPE trainer to find the
# merges that fill TINY_VOCAB_SIZE. Changing it changes every tiny tokenizer's ids.
_CORPUS = (
    "The user watched a science fiction movie about space travel and then a quiet drama.",
    "Recommend the next item for this user based on the items they bought before.",
    "Here is the purchase history of the customer: running shoes, a water bottle, a yoga mat.",
    "The catalog contains books, movies, music, games, kitchen tools and outdoor equipment.",
    "Which movie should I watch tonight? I liked thrillers with a surprising ending.",
    "You might enjoy this film: it has a strong story, great actors and beautiful music.",
    "The item title is Wireless Headphones with Noise Cancelling and a long battery life.",
    "Users who bought this product also bought a charging cable and a protective case.",
    "Rate the movie from one to five stars. The user gave four stars to the comedy.",
    "A generative recommender predicts the semantic identifier of the next item directly.",
    "Semantic IDs are short sequences of codes learned from item embeddings with k-means.",
    "The assistant answers the question and explains why the recommendation fits the user.",
    "The quick brown fox jumps over the lazy dog while the cat sleeps in the warm sun.",
    "She reads novels in the evening, listens to jazz, and cooks pasta on weekends.",
    "Numbers like 1, 2, 3, 10, 42, 100 and 2024 appear in titles, dates and prices.",
    "Price: $19.99; rating: 4.5/5; category: Electronics > Audio > Headphones.",
    "Hello! How can I help you today? Please tell me what kind of movies you like.",
    "Thank you, that sounds great. Can you recommend something similar but shorter?",
    "Training with supervised fine-tuning teaches the model the format of the answers.",
    "Preference optimization compares a chosen answer with a rejected answer.",
    "Evaluation reports recall and NDCG at ten on the held-out last item of each user.",
    "def recommend(user_id: int, k: int = 10) -> list[int]:\n    return top_items[:k]\n",
    '{"user": 17, "history": [3, 8, 15], "target": 21, "title": "The Matrix (1999)"}',
    "Scientific instruments, lab supplies, microscopes, pipettes and safety goggles.",
    "Action, Adventure, Animation, Children, Comedy, Crime, Documentary, Fantasy, Horror.",
)


def build_tiny_tokenizer(extra_texts: list[str] | None = None) -> PreTrainedTokenizerFast:
    """Train a small Qwen-style byte-level BPE tokenizer in-process.

    The result behaves like the real Qwen3 tokenizer where tests care: byte-level BPE (any text
    encodes and decodes losslessly), ChatML special tokens, ``eos_token="<|im_end|>"``,
    ``pad_token="<|endoftext|>"``, no BOS, and a ChatML chat template with generation markers.
    Training is deterministic: the same ``extra_texts`` give the same vocabulary and merges.

    Args:
        extra_texts: Additional training texts, appended to the embedded corpus (for example
            strings a test wants to encode into few tokens).

    Returns:
        A fast tokenizer with :data:`TINY_VOCAB_SIZE` tokens (fewer only if the corpus runs out of
        merges), of which the first three ids are ``<|endoftext|>``, ``<|im_start|>``,
        ``<|im_end|>``.
    """
    # Imported here: `tokenizers` is a dependency of transformers, but only this builder needs it.
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    specials = [ENDOFTEXT, IM_START, IM_END]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_QWEN_SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB_SIZE,
        min_frequency=1,
        special_tokens=specials,
        # All 256 byte symbols up front, so text outside the corpus still encodes.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator([*_CORPUS, *(extra_texts or [])], trainer=trainer)

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        additional_special_tokens=[IM_START, IM_END],
        chat_template=CHATML_TEMPLATE,
        model_input_names=["input_ids", "attention_mask"],
        clean_up_tokenization_spaces=False,
        model_max_length=2048,
    )
    logger.debug("Built tiny tokenizer with %d tokens", len(tokenizer))
    return tokenizer


def build_tiny_qwen3(
    tokenizer_or_vocab_size: PreTrainedTokenizerBase | int,
    *,
    moe: bool = False,
    tie_word_embeddings: bool = True,
    seed: int = 0,
) -> Qwen3ForCausalLM | Qwen3MoeForCausalLM:
    """Build a randomly initialised two-layer Qwen3 (dense or MoE) in float32.

    Shapes: hidden 64, 2 layers, 4 attention heads, 2 KV heads, ``head_dim=32`` (vLLM's CPU
    attention rejects 16), MLP intermediate 128; MoE uses 4 experts, 2 per token, expert
    intermediate 32. The global torch RNG is left untouched.

    Args:
        tokenizer_or_vocab_size: A tokenizer (vocabulary = ``len(tokenizer)``; BOS/EOS/PAD ids
            taken from it) or a plain vocabulary size (special ids then left unset).
        moe: Build ``Qwen3MoeForCausalLM`` instead of ``Qwen3ForCausalLM``.
        tie_word_embeddings: Share the input embedding and LM-head matrices, as small Qwen3
            checkpoints (0.6B-4B) do.
        seed: Seed of the weight initialisation; the same seed gives identical weights.

    Returns:
        The model in eval mode.
    """
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM

    if isinstance(tokenizer_or_vocab_size, int):
        vocab_size = tokenizer_or_vocab_size
        eos_id = pad_id = bos_id = None
    else:
        tok = tokenizer_or_vocab_size
        vocab_size = len(tok)
        eos_id, pad_id = tok.eos_token_id, tok.pad_token_id
        # Qwen3 tokenizers have no BOS token, yet Qwen3 configs name <|endoftext|> (the pad) as BOS.
        bos_id = tok.bos_token_id if tok.bos_token_id is not None else pad_id

    common = {
        "vocab_size": vocab_size,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 32,
        "max_position_embeddings": 2048,
        "tie_word_embeddings": tie_word_embeddings,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "pad_token_id": pad_id,
    }
    config: Qwen3Config | Qwen3MoeConfig
    model_cls: type[Qwen3ForCausalLM] | type[Qwen3MoeForCausalLM]
    if moe:
        config = Qwen3MoeConfig(
            **common,
            num_experts=4,
            num_experts_per_tok=2,
            moe_intermediate_size=32,
            decoder_sparse_step=1,
            norm_topk_prob=True,
        )
        model_cls = Qwen3MoeForCausalLM
    else:
        config = Qwen3Config(**common)
        model_cls = Qwen3ForCausalLM

    # fork_rng restores the caller's RNG state, so building a fixture never shifts the random
    # stream of the test that uses it.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config)
    model.generation_config = _greedy_generation_config(eos_id, pad_id, bos_id)
    return model.eval()


def _greedy_generation_config(
    eos_id: int | None, pad_id: int | None, bos_id: int | None
) -> GenerationConfig:
    from transformers import GenerationConfig

    # Explicit greedy decoding: a generation_config.json with do_sample=True would otherwise turn
    # HF beam search into sampling. Sampling flags (temperature, top_k, top_p) stay unset: HF refuses
    # to save them next to do_sample=False, and vLLM, which reads its default SamplingParams from
    # this file, then keeps its own defaults, so vLLM callers pass SamplingParams(temperature=0.0).
    return GenerationConfig(
        do_sample=False,
        num_beams=1,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        bos_token_id=bos_id,
    )


def save_tiny_model(
    directory: str | os.PathLike[str],
    *,
    moe: bool = False,
    tokenizer: PreTrainedTokenizerBase | None = None,
    tie_word_embeddings: bool = True,
    seed: int = 0,
) -> Path:
    """Build a tiny Qwen3 and save it with its tokenizer and a greedy generation config.

    The directory loads with ``AutoModelForCausalLM.from_pretrained``,
    ``AutoTokenizer.from_pretrained`` and ``vllm.LLM``.

    Args:
        directory: Where to write; created if missing, existing files are overwritten.
        moe: Save the MoE variant.
        tokenizer: Tokenizer to size the model and save alongside; a fresh
            :func:`build_tiny_tokenizer` when None.
        tie_word_embeddings: Share embedding and LM-head matrices (see :func:`build_tiny_qwen3`).
        seed: Weight initialisation seed (see :func:`build_tiny_qwen3`).

    Returns:
        The directory as a ``Path``.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tok = tokenizer if tokenizer is not None else build_tiny_tokenizer()
    model = build_tiny_qwen3(tok, moe=moe, tie_word_embeddings=tie_word_embeddings, seed=seed)
    model.save_pretrained(out)  # also writes generation_config.json
    tok.save_pretrained(out)
    logger.info("Saved tiny %s Qwen3 to %s", "MoE" if moe else "dense", out)
    return out


def find_shared_dir() -> Path | None:
    """Locate the optional ``shared/`` folder (real tokenizer files, prepared data sets).

    Looked up in order: ``$RECLLM_SHARED_DIR``; ``shared/`` beside the repository checkout that
    contains this file; ``shared/`` beside the current working directory.

    Returns:
        The folder, or None when none of the candidates is an existing directory.
    """
    env = os.environ.get("RECLLM_SHARED_DIR")
    if env:
        path = Path(env).expanduser()
        if path.is_dir():
            return path
        # A set-but-wrong variable is a user mistake worth surfacing; falling back silently to
        # another folder would hide it.
        logger.warning("RECLLM_SHARED_DIR=%s is not a directory; ignoring shared files", env)
        return None
    repo_root = Path(__file__).resolve().parent.parent
    for candidate in (repo_root.parent / "shared", Path.cwd().resolve().parent / "shared"):
        if candidate.is_dir():
            return candidate
    return None


def shared_data_dir() -> Path | None:
    """``<shared>/data`` (see :func:`find_shared_dir`), or None when absent."""
    shared = find_shared_dir()
    if shared is None or not (shared / "data").is_dir():
        return None
    return shared / "data"


def load_qwen3_tokenizer(
    path: str | os.PathLike[str] | None = None,
) -> PreTrainedTokenizerBase | None:
    """Load the real Qwen3 tokenizer from local files, never from the network.

    Args:
        path: Folder with the tokenizer files; defaults to ``<shared>/tokenizers/qwen3``.

    Returns:
        The tokenizer (``len == 151669``), or None when the folder is absent.
    """
    if path is None:
        shared = find_shared_dir()
        if shared is None:
            return None
        path = shared / "tokenizers" / "qwen3"
    path = Path(path)
    if not path.is_dir():
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def _fingerprint_of(data_path: Path) -> dict[str, object]:
    """The data fingerprint a model trained on ``data_path`` (default DataConfig) records."""
    from recllm.data import DataConfig, load_rec_dataset, split_dataset
    from recllm.data.fingerprint import data_fingerprint

    cfg = DataConfig(data_path=str(data_path))
    dataset = load_rec_dataset(config=cfg)
    return data_fingerprint(split_dataset(dataset, cfg), dataset.catalog)


def save_tiny_recommender(
    directory: str | os.PathLike[str],
    *,
    num_items: int = 60,
    num_users: int = 40,
    codebook_sizes: tuple[int, ...] = (6, 7, 8),
    seed: int = 0,
    moe: bool = False,
    dialogue: bool = False,
) -> Path:
    """A tiny recommender model directory (untrained) and the data set it records (``moe``: a
    Qwen3-MoE model instead of a dense Qwen3; ``dialogue``: items get a ``genre`` and the model
    records the ``dialogue`` task, as if its mixture had held it).

    Writes ``directory/data/{items,interactions}.csv`` (items ``item0..``, titles ``movie 0..``,
    every item used, 5-12 interactions per user) and ``directory/model``: an untied tiny Qwen3
    extended with random unique SIDs for the items, whose SID rows get a wide random spread (so
    beam scores differ by far more than float noise), saved by
    :func:`recllm.vocab.save_model_with_sids` with a chat-style ``recommender`` record pointing at
    the data.

    Returns:
        The model directory.
    """
    import numpy as np
    import torch

    from recllm.sid.sidmap import SIDMap
    from recllm.vocab import extend_vocab, save_model_with_sids

    root = Path(directory)
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    items = [f"item{i}" for i in range(num_items)]
    genres = ("Comedy", "Drama", "Horror")
    lines = (
        ["item_id,title,genre"]
        + [f"{item},movie {i},{genres[i % 3]}" for i, item in enumerate(items)]
        if dialogue
        else ["item_id,title"] + [f"{item},movie {i}" for i, item in enumerate(items)]
    )
    (data / "items.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    rows, t = ["user_id,item_id,timestamp"], 0
    order = rng.permutation(num_items).tolist()  # every item appears at least once
    for u in range(num_users):
        n = int(rng.integers(5, 13))
        picks = [order.pop()] if order else []
        picks += rng.choice(num_items, size=n - len(picks), replace=False).tolist()
        for i in dict.fromkeys(picks):
            t += 1
            rows.append(f"u{u},{items[i]},{t}")
    (data / "interactions.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")

    grid = np.stack(np.meshgrid(*[np.arange(k) for k in codebook_sizes], indexing="ij"), -1)
    grid = grid.reshape(-1, len(codebook_sizes))
    codes = grid[rng.choice(len(grid), size=num_items, replace=False)]
    sid_map = SIDMap(items, codes, codebook_sizes)
    tok = build_tiny_tokenizer()
    model = build_tiny_qwen3(tok, moe=moe, tie_word_embeddings=False, seed=seed)
    ext = extend_vocab(model, tok, sid_map)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for weight in (model.get_input_embeddings().weight, model.get_output_embeddings().weight):
            span = ext.last_id - ext.first_id + 1
            weight[ext.first_id : ext.last_id + 1] = torch.randn(span, weight.shape[1], generator=g)
    recommender = {
        "prompt_style": "chat",
        "max_history": 20,
        "data": {"data_path": str(data)},
        "data_fingerprint": _fingerprint_of(data),
        "task": {},
        "dialogue": {"weight": 1.0, "steer": 0.5, "turns": 2} if dialogue else None,
    }
    return save_model_with_sids(
        model, tok, sid_map, root / "model", overwrite=True, recommender=recommender
    )
