"""Same seed, same weights: the embedding rows that padding adds are not drawn at random."""

from __future__ import annotations

import pytest
import torch

from recllm import testing
from recllm.vocab import extend_vocab
from tests.vocab.test_vocab import make_catalog, make_sid_map

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def extended(global_seed: int, tie: bool):
    torch.manual_seed(0)
    tok = testing.build_tiny_tokenizer()
    model = testing.build_tiny_qwen3(tok, tie_word_embeddings=tie)
    torch.manual_seed(global_seed)  # the state a user's process happens to be in
    ext = extend_vocab(model, tok, make_sid_map(), init="item_text", catalog=make_catalog())
    return model, ext


@pytest.mark.parametrize("tie", [False, True], ids=["untied", "tied"])
def test_padding_rows_do_not_depend_on_the_global_generator(tie):
    a, ext = extended(1, tie)
    b, _ = extended(2, tie)
    rows = a.get_input_embeddings().weight.shape[0]
    # the map's 12 tokens after 512 => 524 rows, padded to 576: 52 rows no token uses
    assert rows == 576 and ext.token_ids.last_id == 523
    for name, wa in a.state_dict().items():
        assert torch.equal(wa, b.state_dict()[name]), name
    pad = a.get_input_embeddings().weight[524:]
    mean = a.get_input_embeddings().weight[:512].float().mean(0)
    assert torch.allclose(pad, mean.expand_as(pad))
