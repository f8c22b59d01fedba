"""Score only the supervised positions in TRL's fused LM head on CPU.

TRL's ``SFTTrainer`` replaces the model's forward with a fused LM head
(``trl.trainer.utils.add_fused_lm_head``): per-token log-probabilities in vocabulary tiles,
without the ``(batch, length, vocab)`` logits. On Triton devices it projects only the positions
whose label is not ``-100``; everywhere else it projects *every* position and masks afterwards,
because on compiled backends (XLA, Neuron) a changing number of rows would recompile the tiles.
CPU has no such compilation, yet gets the dense path: with completion-only loss most positions
are prompt tokens, so most of the LM head's projection, log-softmax statistics and backward GEMMs
are thrown away.

:func:`compact_lm_head` makes the compact choice for CPU too, for the duration of a ``with``
block. The kernel itself (``trl.kernels.chunked_logprob``) is untouched: on CPU it runs its
torch tiles either way, on fewer rows. Losses and gradients are the same as the dense path's
(``tests/train/test_fast_head.py``); only the work differs. Devices other than CPU keep TRL's
own decision.

Private API: the switch is ``trl.trainer.utils._use_triton(device) -> bool`` (imported there
from ``trl/kernels/chunked_logprob.py`` and called by ``add_fused_lm_head`` in
``trl/trainer/utils.py``), tested with trl 1.16. No upstream option exists for this; TRL's plans
for the fused loss head are in huggingface/trl#7244. Guard: a TRL outside the tested versions
logs one warning (:mod:`recllm.train.compat`); a TRL without the function, or with one of
another signature, gets no patch and one loud warning, and trains on TRL's dense path (correct,
slower).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import threading
from collections.abc import Iterator

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_depth = 0
_original = None
_missing_warned = False


def _switch_fits(fn: object) -> bool:
    """Whether ``fn`` looks like the ``_use_triton(device) -> bool`` this patch replaces."""
    if not callable(fn):
        return False
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    return len(params) == 1 and params[0].kind in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    )


def _compact_on_cpu(original):
    def use_compact(device) -> bool:
        return device.type == "cpu" or original(device)

    return use_compact


@contextlib.contextmanager
def compact_lm_head(enabled: bool = True) -> Iterator[bool]:
    """Within the block, TRL's fused LM head scores only labelled positions on CPU.

    Yields whether the patch is active. With ``enabled=False``, or a TRL whose fused head no
    longer decides through ``trl.trainer.utils._use_triton``, it is a no-op (logged once) and
    training runs TRL's dense path, correct but slower. Nested and concurrent blocks share one
    patch, removed when the outermost block exits.
    """
    global _depth, _original, _missing_warned
    if not enabled:
        yield False
        return
    try:
        import trl.trainer.utils as trl_utils
    except ImportError:  # pragma: no cover - trl is a core dependency
        yield False
        return
    from recllm.train.compat import warn_if_untested

    warn_if_untested("trl", "compact_lm_head patch of trl.trainer.utils._use_triton")
    # Inside an active block the function is our own wrapper: check TRL's original.
    current = _original if _depth else getattr(trl_utils, "_use_triton", None)
    if not _switch_fits(current):
        if not _missing_warned:
            _missing_warned = True
            logger.warning(
                "compact_lm_head: this TRL has no trl.trainer.utils._use_triton(device) (missing "
                "or another signature); NOT patched: the fused LM head scores every position on "
                "CPU (correct, slower). Tested with trl 1.16"
            )
        yield False
        return
    with _lock:
        if _depth == 0:
            _original = trl_utils._use_triton
            trl_utils._use_triton = _compact_on_cpu(_original)
        _depth += 1
    try:
        yield True
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                trl_utils._use_triton = _original
                _original = None
