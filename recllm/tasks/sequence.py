"""The SID-sequence text format: a user's history as its items' SIDs back to back.

A from-scratch SID decoder (:mod:`recllm.train.seqlm`) is trained on these texts and prompted
with them in evaluation and serving, so the format is defined once, here, below both::

    <|im_start|><|sid_begin|><a_12><b_3><c_200><|sid_end|><|sid_begin|><a_7>...<|sid_end|>
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from recllm.data.splits import Split
    from recllm.sid.sidmap import SIDMap

BOS = "<|im_start|>"
PAD = "<|endoftext|>"
EOS = "<|im_end|>"
#: The ``prompt_style`` a model directory records for these prompts.
PROMPT_STYLE = "sid_sequence"


def history_text(items: Sequence[str], sid_map: SIDMap, max_items: int | None) -> str:
    """``<|im_start|>`` + the SIDs of the last ``max_items`` items (a prompt, minus the marker)."""
    from recllm.vocab import SID_FORMAT

    if max_items:
        items = items[-max_items:]
    return BOS + "".join(SID_FORMAT.render(sid_map.code(i)) for i in items)


def training_sequences(
    split: Split, sid_map: SIDMap, max_items: int, session_length: int = 1
) -> list[str]:
    """Training windows of ``max_items + session_length`` items from every training sequence.

    Long sequences are cut into windows that end at the last item and step back so that
    consecutive windows share one item; the decoder is trained on every next SID of a window,
    so every training target is predicted once, with up to ``max_items`` items of context
    inside its window (more for the later items of a longer window). Only the training split
    is read. See :func:`training_windows` for ``session_length``.
    """
    return [
        history_text(window, sid_map, None)
        for _, window in training_windows(split, max_items, session_length)
    ]


def training_windows(
    split: Split, max_items: int, session_length: int = 1
) -> list[tuple[str, list[str]]]:
    """``(user, window)`` of :func:`training_sequences`, in its order: the window's last item
    is its newest target (what an incremental run's period selects by).

    The session task of the SID-sequence decoder (issue 32): this model learns from whole
    sequences, every item of a window a target of the items before it, so a "session" needs no
    new kind of example: the next N items of a history are the continuation of its SIDs, and a
    slate is that continuation decoded with the items distinct
    (:func:`recllm.decode.slate.slate_search`). What a slate needs from training is context
    *positions*: a prompt of ``max_items`` items followed by N SIDs reaches
    ``max_items + N`` items. ``session_length`` = N makes each window ``max_items + N`` items
    long, so the last N items of a full window (a session) are trained at the positions a slate
    after a full prompt is decoded at. ``session_length=1`` gives the next-item windows of
    ``max_items + 1`` items.
    """
    if session_length < 1:
        raise ValueError(f"session_length must be >= 1, got {session_length}")
    width = max_items + session_length
    windows = []
    for user, seq in split.train.sequences.items():
        if len(seq) < 2:
            continue
        end = len(seq)
        while end > 1:
            start = max(0, end - width)
            windows.append((user, seq[start:end]))
            if start == 0:
                break
            end = start + 1  # the window's first item is the next window's last target
    return windows
