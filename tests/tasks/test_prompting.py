"""Recommendation prompts for evaluation and serving, built in recllm.tasks (moved from
recllm.eval.run and recllm.train.seqlm so that eval and apps need not import train)."""

from __future__ import annotations

import numpy as np
import pytest

from recllm.data import Catalog, Example
from recllm.sid.sidmap import SIDMap
from recllm.tasks import PromptSpec, build_prompts
from recllm.tasks.sequence import PROMPT_STYLE, history_text

ITEMS = ["1", "2", "3", "4"]
CATALOG = Catalog({i: {"title": f"title {i}"} for i in ITEMS}, ("title",))
SIDS = SIDMap(
    item_ids=ITEMS, codes=np.array([(0, 0), (0, 1), (1, 0), (1, 1)]), codebook_sizes=(2, 2)
)
EXAMPLE = Example("u", ("1", "2", "3"), "4")


def test_chat_prompt_golden_cut_to_max_history():
    (prompt,) = build_prompts(PromptSpec(max_history=2), [EXAMPLE], SIDS, CATALOG)
    assert prompt == [
        {
            "role": "user",
            "content": "A user interacted with these items, oldest first:\n"
            "<|sid_begin|><a_0><b_1><|sid_end|>\n"
            "<|sid_begin|><a_1><b_0><|sid_end|>\n"
            "Which item will the user interact with next? Answer with its semantic ID.",
        }
    ]


def test_chat_prompt_with_titles_from_the_recorded_task_settings():
    spec = PromptSpec(max_history=1, task={"rec_history_titles": True})
    (prompt,) = build_prompts(spec, [EXAMPLE], SIDS, CATALOG)
    assert prompt[0]["content"].splitlines()[1] == "<|sid_begin|><a_1><b_0><|sid_end|> title 3"


def test_compact_history_from_the_recorded_task_settings():
    """A model trained with ``rec_history_markers: false`` records it; its prompts are built
    compact, and a record without the key (older models) gets the marked lines."""
    spec = PromptSpec(max_history=2, task={"rec_history_markers": False})
    (prompt,) = build_prompts(spec, [EXAMPLE], SIDS, CATALOG)
    assert prompt[0]["content"].splitlines()[1] == "<a_0><b_1><a_1><b_0>"
    (old,) = build_prompts(PromptSpec(max_history=2, task={}), [EXAMPLE], SIDS, CATALOG)
    assert old[0]["content"].splitlines()[1] == "<|sid_begin|><a_0><b_1><|sid_end|>"


def test_sid_sequence_prompt_golden():
    spec = PromptSpec(style=PROMPT_STYLE, max_history=2)
    assert build_prompts(spec, [EXAMPLE], SIDS, CATALOG) == [
        "<|im_start|><|sid_begin|><a_0><b_1><|sid_end|><|sid_begin|><a_1><b_0><|sid_end|>"
    ]
    assert history_text(["4"], SIDS, None) == "<|im_start|><|sid_begin|><a_1><b_1><|sid_end|>"


def test_unknown_history_item_names_the_fix():
    with pytest.raises(KeyError, match=r"no SID in the model's SID map.*Fix: evaluate on the data"):
        build_prompts(PromptSpec(), [Example("u", ("1", "9"), "2")], SIDS, CATALOG)


def test_unknown_style_is_refused():
    with pytest.raises(ValueError, match="prompt style 'xml' is not one of"):
        PromptSpec(style="xml")


def test_old_import_paths_still_work():
    from recllm.eval.run import PromptSpec as FromEval
    from recllm.eval.run import build_prompts as build_from_eval
    from recllm.train.seqlm import history_text as from_seqlm

    assert FromEval is PromptSpec and build_from_eval is build_prompts
    assert from_seqlm is history_text
