"""A generative recommender trained from scratch on SID sequences (TIGER-style, decoder only).

When there is no budget for a pretrained LLM (or to measure what the SIDs alone carry), a small
Qwen3-architecture decoder learns the language of item sequences directly: a user's history is
the concatenation of its items' SIDs,

    <|im_start|><|sid_begin|><a_12><b_3><c_200><|sid_end|><|sid_begin|><a_7>...<|sid_end|>

and the model is trained with next-token loss on every position, so one sequence teaches every
next-item prediction in it (as SASRec does with item ids). Recommending is constrained SID
generation after ``history + <|sid_begin|>`` (:func:`recllm.decode.sid_beam_search`), so every
recommendation is a catalog item. The vocabulary is the SID tokens plus three specials; the
saved directory carries its SID map like any other recllm model, and records its prompt style
(``"sid_sequence"``) so evaluation and serving build the same prompts.

Training runs through TRL's ``SFTTrainer`` on pre-tokenized sequences (no packing: each window is
its own row, batched by length so padding stays small).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

# The SID-sequence text format lives in tasks, below train and eval, which both prompt with it;
# these names stay importable from here.
from recllm.tasks.sequence import (  # noqa: F401
    BOS,
    EOS,
    PAD,
    PROMPT_STYLE,
    history_text,
    training_sequences,
)

if TYPE_CHECKING:
    import datasets
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from recllm.data.splits import Split
    from recllm.sid.sidmap import SIDMap

logger = logging.getLogger(__name__)


@dataclass
class SeqLMConfig:
    """Size of the from-scratch decoder and of its training windows."""

    hidden_size: int = field(default=256, metadata={"help": "Model width."})
    num_layers: int = field(default=4, metadata={"help": "Decoder layers."})
    num_heads: int = field(
        default=4, metadata={"help": "Attention heads (head_dim = width / heads)."}
    )
    num_kv_heads: int | None = field(
        default=None, metadata={"help": "Key/value heads (GQA when fewer); None = num_heads."}
    )
    intermediate_size: int = field(default=1024, metadata={"help": "MLP width."})
    attention_dropout: float = field(
        default=0.1, metadata={"help": "Dropout on attention weights."}
    )
    hidden_dropout: float = field(
        default=0.0,
        metadata={
            "help": "Dropout on the token embeddings and on each attention and MLP output before "
            "it joins the residual stream (GPT-2's embd/resid dropout; SASRec's dropout acts on "
            "the same places). Training only; Qwen3 itself has attention dropout alone."
        },
    )
    max_items: int = field(
        default=20, metadata={"help": "Items per training window and per prompt (TIGER: 20)."}
    )
    model_seed: int = field(default=0, metadata={"help": "Seed of the weight initialization."})


def sid_sequence_tokenizer() -> PreTrainedTokenizerBase:
    """A tokenizer that knows only three specials; :func:`recllm.vocab.extend_vocab` adds SIDs.

    Every SID token is an added token, so a sequence string tokenizes into exactly its tokens.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {PAD: 0, BOS: 1, EOS: 2, "<unk>": 3}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.Fuse()  # tokens decode back to back, no spaces
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token="<unk>",
    )
    tok.padding_side = "left"
    return tok


def build_seqlm(
    sid_map: SIDMap, cfg: SeqLMConfig | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A freshly initialized Qwen3 decoder and tokenizer whose vocabulary is ``sid_map``'s SIDs."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from recllm.vocab import extend_vocab

    cfg = cfg or SeqLMConfig()
    if cfg.hidden_size % cfg.num_heads:
        raise ValueError(
            f"hidden_size {cfg.hidden_size} is not a multiple of num_heads {cfg.num_heads}"
        )
    kv_heads = cfg.num_kv_heads or cfg.num_heads
    if cfg.num_heads % kv_heads:
        raise ValueError(f"num_heads {cfg.num_heads} is not a multiple of num_kv_heads {kv_heads}")
    tok = sid_sequence_tokenizer()
    per_item = sid_map.levels + 2
    config = Qwen3Config(
        vocab_size=len(tok),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=kv_heads,
        head_dim=cfg.hidden_size // cfg.num_heads,
        max_position_embeddings=max(512, 2 ** math.ceil(math.log2((cfg.max_items + 2) * per_item))),
        attention_dropout=cfg.attention_dropout,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        use_cache=True,
    )
    with torch.random.fork_rng():
        torch.manual_seed(cfg.model_seed)
        model = Qwen3ForCausalLM(config)
        ext = extend_vocab(model, tok, sid_map, init="mean")
        # from scratch: every SID row gets its own random init (the "mean" of the few special
        # rows would make all of them identical)
        with torch.no_grad():
            model.get_input_embeddings().weight[ext.first_id :].normal_(
                0.0, config.initializer_range
            )
    model.generation_config.do_sample = False
    if cfg.hidden_dropout:
        add_hidden_dropout(model, cfg.hidden_dropout)
    return model, tok


def add_hidden_dropout(model: PreTrainedModel, p: float) -> list:
    """Dropout ``p`` on the embedding output and on every attention/MLP output projection.

    Qwen3 (like Llama) has no hidden or embedding dropout, which sparse from-scratch training
    needs (SASRec on Amazon data uses .5). Forward hooks add it without a model subclass, so a
    saved model is a plain Qwen3 checkpoint: the hooks live only on this Python object, act
    only in ``model.train()`` mode, and vLLM/transformers load the weights unchanged.

    Returns:
        The hook handles (``handle.remove()`` takes the dropout out again).
    """
    import torch.nn.functional as F

    if not 0.0 <= p < 1.0:
        raise ValueError(f"hidden dropout must lie in [0, 1), got {p}")

    def hook(module, args, output):
        return F.dropout(output, p, module.training)

    base = model.get_decoder()
    targets = [base.embed_tokens]
    for layer in base.layers:
        targets += [layer.self_attn.o_proj, layer.mlp.down_proj]
    return [m.register_forward_hook(hook) for m in targets]


def training_dataset(
    split: Split, sid_map: SIDMap, tokenizer: PreTrainedTokenizerBase, max_items: int
) -> datasets.Dataset:
    """Pre-tokenized ``{"input_ids"}`` rows, one per training window."""
    import datasets

    texts = training_sequences(split, sid_map, max_items)
    return datasets.Dataset.from_dict(
        {"input_ids": tokenizer(texts, add_special_tokens=False)["input_ids"]}
    )


def time_budget_callback(minutes: float | None):
    """A ``TrainerCallback`` that ends training once ``minutes`` have passed (None: never).

    ``callback.stopped_at`` is the step at which it stopped training (None if it did not).
    """
    from transformers import TrainerCallback

    class TimeBudget(TrainerCallback):
        def __init__(self) -> None:
            self.start = time.monotonic()
            self.stopped_at: int | None = None

        def on_step_end(self, args, state, control, **kwargs):
            if minutes is not None and time.monotonic() - self.start > 60 * minutes:
                control.should_training_stop = True
                if self.stopped_at is None:
                    self.stopped_at = state.global_step
                    logger.info(
                        "time budget of %.1f min reached at step %d", minutes, state.global_step
                    )
            return control

    return TimeBudget()
