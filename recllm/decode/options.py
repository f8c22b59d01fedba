"""How :func:`recllm.decode.generate_sids` decodes: one frozen settings object, checked once.

The settings travel as one :class:`DecodeOptions` from whoever chose them (the CLI, a recipe,
the playground, the server) down to the decoder, instead of a dozen keyword arguments re-spread
at every layer. Vary one setting with :func:`dataclasses.replace`, which checks the result again::

    opts = DecodeOptions(k=10, engine="sid_beam")
    wide = dataclasses.replace(opts, num_beams=20)

Per-call inputs (the prompts, titles, a prebuilt trie, think-ahead prefixes, per-prompt item
filters, a progress bar) stay arguments of :func:`~recllm.decode.generate_sids`: the exclude /
allow sets differ per prompt, so they travel as one :class:`recllm.decode.filters.ItemFilter`
(``item_filter=``), like the prefixes.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Literal

from recllm.errors import UserError
from recllm.vocab.format import SID_FORMAT, SIDFormat

__all__ = ["DecodeMode", "DecodeOptions", "Engine"]

DecodeMode = Literal["beam", "greedy", "sample"]
Engine = Literal["generate", "sid_beam"]

_MODES = ("beam", "greedy", "sample")
_ENGINES = ("generate", "sid_beam")


@dataclasses.dataclass(frozen=True)
class DecodeOptions:
    """The decoding settings of :func:`recllm.decode.generate_sids`.

    Every combination that cannot decode is refused when the object is made (and again by
    :func:`dataclasses.replace`), with an error naming the field and the fix.

    Attributes:
        k: Items per prompt (beam: ``num_return_sequences``; sample: samples drawn; greedy: 1).
        num_beams: Beams (beam mode); ``k`` when None; at least ``k``. See :attr:`beams`.
        batch_size: Prompts per ``generate`` call.
        mode: ``"beam"``, ``"greedy"`` or ``"sample"``.
        engine: Beam mode only: ``"generate"`` (``model.generate``) or ``"sid_beam"``
            (:func:`recllm.decode.beam.sid_beam_search`, same result, faster).
        length_penalty: Beam score = summed log-prob / length ** length_penalty (every answer
            has length ``L + 3``, so it rescales scores and never reorders them).
        temperature: Sampling temperature (> 0 in sample mode; unused by beam and greedy).
        top_k: Sampling top-k (None or 0: off; unused by beam and greedy).
        top_p: Sampling nucleus, in (0, 1] (1.0: off; unused by beam and greedy).
        seed: Seed of the sampling RNG (the global RNG is restored afterwards).
        stop_token_id: Token that ends the answer; the tokenizer's EOS token when None.
        fmt: The SID token format.
        chat_template_kwargs: Extra arguments of ``apply_chat_template`` (``enable_thinking``);
            kept as a read-only copy.
        constrained: False: decode without the SID trie, over the whole vocabulary; invalid
            answers come back with ``item_id=None``. Needs ``engine="generate"``.
        stop_after_sid: Unconstrained only. True: an answer is one SID then the stop token
            (chat models). False: an answer is the SID alone, ``L + 2`` tokens (``sid_sequence``
            models, whose next token is the following item's marker).
    """

    k: int = 10
    num_beams: int | None = None
    batch_size: int = 8
    mode: DecodeMode = "beam"
    engine: Engine = "generate"
    length_penalty: float = 1.0
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float = 1.0
    seed: int | None = None
    stop_token_id: int | None = None
    fmt: SIDFormat = SID_FORMAT
    chat_template_kwargs: Mapping[str, Any] | None = None
    constrained: bool = True
    stop_after_sid: bool = True

    def __post_init__(self) -> None:
        if self.chat_template_kwargs is not None:
            # frozen all the way down: a caller's later edit of its dict cannot leak in
            frozen = MappingProxyType(dict(self.chat_template_kwargs))
            object.__setattr__(self, "chat_template_kwargs", frozen)
        self._check_sizes()
        self._check_modes()

    @property
    def beams(self) -> int:
        """The beam width: ``num_beams``, or ``k`` when that is None."""
        return self.k if self.num_beams is None else self.num_beams

    def _check_sizes(self) -> None:
        _positive_int("k", self.k, "k=10 (the number of items per prompt)")
        _positive_int("batch_size", self.batch_size, "batch_size=8")
        if self.num_beams is not None:
            _positive_int("num_beams", self.num_beams, "num_beams=k, or None for k")
        if self.mode == "beam" and self.beams < self.k:
            raise _error(
                "num_beams",
                f"{self.beams} beams cannot return k={self.k} items (the beams are the list)",
                f"num_beams >= {self.k}, or None for num_beams=k",
            )
        if not (_is_real(self.length_penalty) and math.isfinite(self.length_penalty)):
            raise _error(
                "length_penalty",
                f"{self.length_penalty!r} is not a finite number",
                "length_penalty=1.0",
            )
        if self.mode == "sample":  # beam and greedy search never read these
            self._check_sampling()
        for name in ("seed", "stop_token_id"):
            value = getattr(self, name)
            if value is not None and not (_is_int(value) and value >= 0):
                raise _error(name, f"{value!r} is not an integer >= 0", f"{name}=None")

    def _check_sampling(self) -> None:
        if not (_is_real(self.temperature) and self.temperature > 0):
            raise _error(
                "temperature",
                f"{self.temperature!r} is not a positive number",
                "temperature > 0 (1.0 samples from the model as is); for the most likely item "
                "use mode='greedy'",
            )
        if not (_is_real(self.top_p) and 0 < self.top_p <= 1):
            raise _error("top_p", f"{self.top_p!r} is not in (0, 1]", "top_p=1.0 (off) or less")
        if self.top_k is not None and not (_is_int(self.top_k) and self.top_k >= 0):
            raise _error("top_k", f"{self.top_k!r} is not an integer >= 0", "top_k=None (off)")

    def _check_modes(self) -> None:
        if self.mode not in _MODES:
            raise _error(
                "mode", f"{self.mode!r} is not a decoding mode", "mode='beam', 'greedy' or 'sample'"
            )
        if self.engine not in _ENGINES:
            raise _error(
                "engine",
                f"{self.engine!r} is not an engine of generate_sids",
                "engine='generate' or 'sid_beam' (vLLM: recllm.apps.Recommender)",
            )
        if self.mode == "greedy" and self.k != 1:
            raise _error(
                "k",
                f"greedy decoding gives one item per prompt, not k={self.k}",
                "k=1 or mode='beam'",
            )
        if self.engine == "sid_beam" and self.mode != "beam":
            raise _error(
                "engine",
                f"engine='sid_beam' is a beam search, not mode={self.mode!r}",
                "mode='beam', or engine='generate'",
            )
        if not self.constrained and self.engine != "generate":
            raise _error(
                "engine",
                "engine='sid_beam' searches inside the SID trie only",
                "engine='generate' for constrained=False",
            )
        if self.constrained and not self.stop_after_sid:
            raise _error(
                "stop_after_sid",
                "stop_after_sid=False applies to constrained=False only (a constrained answer "
                "always ends with the stop token)",
                "stop_after_sid=True, or constrained=False",
            )


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _positive_int(name: str, value: object, fix: str) -> None:
    if not (_is_int(value) and value >= 1):  # type: ignore[operator]
        raise _error(name, f"{value!r} is not an integer >= 1", fix)


def _error(name: str, problem: str, fix: str) -> UserError:
    return UserError(f"DecodeOptions.{name}", problem, fix)
