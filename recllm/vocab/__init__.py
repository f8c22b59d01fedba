"""The SID token format, vocabulary extension and model directories that carry their SID map.

- :mod:`recllm.vocab.format`: how a SID is written (``<|sid_begin|><a_12><b_3><|sid_end|>``),
  parsed, and mapped to token ids. Defined once; every other stage imports it from here.
- :mod:`recllm.vocab.extend`: :func:`extend_vocab` adds the tokens and initialises their rows.
- :mod:`recllm.vocab.checkpoint`: save and load a model together with its SID map, refusing
  mismatched parts.
"""

from recllm.vocab.checkpoint import (
    VOCAB_FILENAME,
    load_model_with_sids,
    read_vocab_record,
    save_model_with_sids,
)
from recllm.vocab.extend import CONFIG_HASH_ATTR, VocabExtension, check_vocab, extend_vocab
from recllm.vocab.format import (
    MAX_LEVELS,
    SID_FORMAT,
    InvalidSID,
    SIDFormat,
    SIDParse,
    SIDTokenIds,
    VocabMismatchError,
)

__all__ = [
    "CONFIG_HASH_ATTR",
    "MAX_LEVELS",
    "SID_FORMAT",
    "VOCAB_FILENAME",
    "InvalidSID",
    "SIDFormat",
    "SIDParse",
    "SIDTokenIds",
    "VocabExtension",
    "VocabMismatchError",
    "check_vocab",
    "extend_vocab",
    "load_model_with_sids",
    "read_vocab_record",
    "save_model_with_sids",
]
