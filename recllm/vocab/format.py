"""The SID token format, defined once: how a semantic ID looks as text and as token ids.

A SID ``(12, 3, 200)`` of a three-level map is written as::

    <|sid_begin|><a_12><b_3><c_200><|sid_end|>

and is exactly five tokens once the vocabulary is extended (:func:`recllm.vocab.extend_vocab`):
the two markers and one token per level. Why this shape:

- **One token per (level, code)**, with the level in the token (``<a_12>`` differs from
  ``<b_12>``): the same code means different things at different levels, so the tokens must not
  share an embedding. The letter-per-level spelling is the one LC-Rec and LETTER publish their
  ``*.index.json`` files in, so imported SIDs keep their familiar look. 26 letters cap a map at 26
  levels; real maps have 3-5.
- **Begin and end markers** let a SID sit inside free text (a chat answer, a reasoning trace) and
  be found again by a plain scan, and they give constrained decoding a point where the SID trie
  switches on (after ``<|sid_begin|>``) and off (after ``<|sid_end|>``). They look like the
  ``<|im_start|>`` family so that they read as control tokens, but they are added as NON-special
  tokens (see :mod:`recllm.vocab.extend`) so ``decode(..., skip_special_tokens=True)`` keeps them.
- **A fixed token order** (markers, then level by level, code by code) gives the added tokens one
  contiguous id range, so id <-> (level, code) is arithmetic (:class:`SIDTokenIds`), the rows to
  train are a slice, and a tokenizer extended for another map is detected by comparing ids.
- **Strict parsing**: a span between markers is a SID only if it holds exactly one canonical
  token per level, in level order, each code inside its codebook. Everything else is reported as
  an :class:`InvalidSID` with a reason instead of being skipped, because "the model wrote a
  malformed SID" is a number evaluation must count, not hide.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "MAX_LEVELS",
    "SID_FORMAT",
    "InvalidSID",
    "SIDFormat",
    "SIDParse",
    "SIDTokenIds",
    "VocabMismatchError",
]

#: One letter per level: ``a`` .. ``z``.
MAX_LEVELS = 26

_LETTERS = "abcdefghijklmnopqrstuvwxyz"
# Any lower-case letter and any digit run, so that malformed tokens (``<a_012>``, ``<q_1>`` in a
# three-level map) are still recognised as code tokens and reported, not treated as plain text.
_CODE_TOKEN = r"<([a-z])_(\d+)>"


class VocabMismatchError(ValueError):
    """A tokenizer, model and SID map that do not belong together.

    The message names what differs and ends with ``Fix: ...``.
    """


@dataclass(frozen=True)
class InvalidSID:
    """A malformed SID span found by :meth:`SIDFormat.parse`.

    Attributes:
        start: Character offset of the span in the parsed text.
        end: Character offset one past the span.
        text: ``text[start:end]``.
        reason: Why it is not a SID, e.g. ``"missing <|sid_end|>"``.
    """

    start: int
    end: int
    text: str
    reason: str


@dataclass(frozen=True)
class SIDParse:
    """What :meth:`SIDFormat.parse` found in a text.

    Attributes:
        codes: The well-formed SIDs, as code tuples, in text order.
        spans: ``(start, end)`` character offsets of each entry of ``codes``.
        invalid: The malformed spans, in text order.
    """

    codes: list[tuple[int, ...]]
    spans: list[tuple[int, int]]
    invalid: list[InvalidSID]

    @property
    def ok(self) -> bool:
        """True when the text holds no malformed span."""
        return not self.invalid


@dataclass(frozen=True)
class SIDTokenIds:
    """Token ids of a SID vocabulary: one contiguous range in :meth:`SIDFormat.tokens` order.

    ``first_id`` is ``<|sid_begin|>``, ``first_id + 1`` is ``<|sid_end|>``, then come the code
    tokens of level 0 (codes ``0..K_0-1``), of level 1, and so on. Build it with
    :meth:`SIDFormat.token_ids`, which checks the tokenizer really has this layout.

    Attributes:
        first_id: Id of ``<|sid_begin|>``, the lowest SID token id.
        codebook_sizes: ``K_l`` per level.
    """

    first_id: int
    codebook_sizes: tuple[int, ...]
    # Cumulative level starts relative to the first code token; the last entry is the total.
    _offsets: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Frozen: normalise numpy ints and lists once, so ids and equality are plain Python.
        object.__setattr__(self, "first_id", int(self.first_id))
        object.__setattr__(self, "codebook_sizes", tuple(int(k) for k in self.codebook_sizes))
        offsets = [0]
        for k in self.codebook_sizes:
            offsets.append(offsets[-1] + k)
        object.__setattr__(self, "_offsets", tuple(offsets))

    @property
    def levels(self) -> int:
        return len(self.codebook_sizes)

    @property
    def level_offsets(self) -> tuple[int, ...]:
        """Position of each level's code 0 among the code tokens (``(0, K_0, K_0 + K_1, ...)``)."""
        return self._offsets[:-1]

    @property
    def begin_id(self) -> int:
        return self.first_id

    @property
    def end_id(self) -> int:
        return self.first_id + 1

    @property
    def num_tokens(self) -> int:
        """``2 + sum(K_l)``: markers plus code tokens."""
        return 2 + self._offsets[-1]

    @property
    def last_id(self) -> int:
        """The highest SID token id (the last code of the last level)."""
        return self.first_id + self.num_tokens - 1

    def all_ids(self) -> range:
        """Every SID token id, markers included (the embedding rows extension added)."""
        return range(self.first_id, self.last_id + 1)

    def code_ids(self) -> range:
        """The ids of all code tokens (no markers)."""
        return range(self.first_id + 2, self.last_id + 1)

    def level_ids(self, level: int) -> range:
        """The ids of level ``level``'s code tokens; position ``c`` holds code ``c``."""
        self._check_level(level)
        start = self.first_id + 2 + self._offsets[level]
        return range(start, start + self.codebook_sizes[level])

    def code_id(self, level: int, code: int) -> int:
        """The token id of code ``code`` at level ``level``.

        Raises:
            ValueError: ``level`` or ``code`` is out of range.
        """
        self._check_level(level)
        if not 0 <= code < self.codebook_sizes[level]:
            raise ValueError(
                f"code {code} at level {level} is outside [0, {self.codebook_sizes[level]})"
            )
        return self.first_id + 2 + self._offsets[level] + code

    def level_code(self, token_id: int) -> tuple[int, int] | None:
        """``(level, code)`` of a code token id; None for markers and non-SID ids."""
        rel = token_id - self.first_id - 2
        if rel < 0 or rel >= self._offsets[-1]:
            return None
        level = bisect.bisect_right(self._offsets, rel) - 1
        return level, rel - self._offsets[level]

    def encode(self, code: Sequence[int]) -> list[int]:
        """``[begin, level-0 id, ..., end]`` for a code tuple.

        Raises:
            ValueError: Wrong number of levels or a code out of range.
        """
        if len(code) != self.levels:
            raise ValueError(f"expected {self.levels} codes, got {len(code)}: {tuple(code)}")
        return [
            self.begin_id,
            *(self.code_id(lv, int(c)) for lv, c in enumerate(code)),
            self.end_id,
        ]

    def decode(self, token_ids: Sequence[int]) -> tuple[int, ...] | None:
        """The code tuple of exactly ``[begin, codes..., end]``; None if the ids are not one SID."""
        ids = [int(t) for t in token_ids]
        if len(ids) != self.levels + 2 or ids[0] != self.begin_id or ids[-1] != self.end_id:
            return None
        code = []
        for level, token_id in enumerate(ids[1:-1]):
            lc = self.level_code(token_id)
            if lc is None or lc[0] != level:
                return None
            code.append(lc[1])
        return tuple(code)

    def _check_level(self, level: int) -> None:
        if not 0 <= level < self.levels:
            raise ValueError(f"level {level} is outside [0, {self.levels})")


@dataclass(frozen=True)
class SIDFormat:
    """How SIDs are written as tokens (see the module docstring for the reasons).

    The markers are configurable for tokenizers that already use these strings; code tokens are
    always ``<{letter}_{code}>``, letter ``a`` for level 0.

    Attributes:
        begin: Marker before the code tokens.
        end: Marker after the code tokens.
    """

    begin: str = "<|sid_begin|>"
    end: str = "<|sid_end|>"
    _scanner: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.begin or not self.end or self.begin == self.end:
            raise ValueError(f"begin and end markers must be distinct and non-empty: {self}")
        for marker in (self.begin, self.end):
            if re.search(_CODE_TOKEN, marker):
                raise ValueError(f"marker {marker!r} must not contain a code token <x_N>")
        if self.begin in self.end or self.end in self.begin:
            raise ValueError(f"one marker contains the other: {self}")
        # Longer alternatives first: regex alternation is ordered.
        alternatives = sorted((self.begin, self.end), key=len, reverse=True)
        object.__setattr__(
            self,
            "_scanner",
            re.compile("|".join([*(re.escape(m) for m in alternatives), _CODE_TOKEN])),
        )

    # -- tokens ------------------------------------------------------------------------------

    @staticmethod
    def code_token(level: int, code: int) -> str:
        """``<a_12>`` for level 0, code 12.

        Raises:
            ValueError: ``level`` outside ``[0, 26)`` or a negative code.
        """
        if not 0 <= level < MAX_LEVELS:
            raise ValueError(
                f"level {level} has no token letter: the SID format supports at most "
                f"{MAX_LEVELS} levels (a..z)"
            )
        if code < 0:
            raise ValueError(f"code {code} at level {level} is negative")
        return f"<{_LETTERS[level]}_{int(code)}>"

    def tokens(self, codebook_sizes: Sequence[int]) -> list[str]:
        """All SID tokens of a map, in the fixed order the vocabulary is extended in.

        Markers first (begin, end), then level 0 codes ``0..K_0-1``, level 1 codes, and so on:
        ``2 + sum(K_l)`` tokens.

        Raises:
            ValueError: More than 26 levels, or a codebook size below 1.
        """
        sizes = [int(k) for k in codebook_sizes]
        if not sizes:
            raise ValueError("a SID map needs at least one level")
        if len(sizes) > MAX_LEVELS:
            raise ValueError(
                f"{len(sizes)} levels: the SID format supports at most {MAX_LEVELS} (a..z)"
            )
        if min(sizes) < 1:
            raise ValueError(f"codebook sizes must be >= 1, got {sizes}")
        out = [self.begin, self.end]
        for level, k in enumerate(sizes):
            out.extend(self.code_token(level, c) for c in range(k))
        return out

    def render(self, code: Sequence[int]) -> str:
        """``<|sid_begin|><a_12><b_3><c_200><|sid_end|>`` for ``(12, 3, 200)``."""
        if len(code) == 0:
            raise ValueError("cannot render an empty code tuple")
        body = "".join(self.code_token(level, int(c)) for level, c in enumerate(code))
        return f"{self.begin}{body}{self.end}"

    # -- parsing -----------------------------------------------------------------------------

    def parse(self, text: str, codebook_sizes: Sequence[int]) -> SIDParse:
        """Find every SID in ``text``, strictly.

        A span from a begin marker to the next end marker is a SID when it holds exactly one
        canonical token per level (``<a_N>``, ``<b_N>``, ... in order, no leading zeros, nothing
        else in between) with every code inside its codebook. Reported as invalid: such spans
        that break a rule, a begin marker with no end marker before the next begin marker or the
        end of the text, an end marker without a begin marker, and runs of code tokens outside
        markers.

        Args:
            text: Any text, e.g. a model's decoded output.
            codebook_sizes: ``K_l`` per level; the number of levels is its length.

        Returns:
            The valid code tuples with their spans, and the invalid spans with reasons.
        """
        sizes = tuple(int(k) for k in codebook_sizes)
        codes: list[tuple[int, ...]] = []
        spans: list[tuple[int, int]] = []
        invalid: list[InvalidSID] = []

        def bad(start: int, end: int, reason: str) -> None:
            invalid.append(InvalidSID(start, end, text[start:end], reason))

        open_at: int | None = None  # start of the current begin marker
        run: list[int] | None = None  # [start, end] of a run of code tokens outside markers

        def flush_run() -> None:
            nonlocal run
            if run is not None:
                bad(run[0], run[1], f"code tokens outside {self.begin}...{self.end}")
                run = None

        for m in self._matches(text):
            tok = m.group(0)
            if tok == self.begin:
                flush_run()
                if open_at is not None:
                    bad(open_at, m.start(), f"missing {self.end}")
                open_at = m.start()
            elif tok == self.end:
                flush_run()
                if open_at is None:
                    bad(m.start(), m.end(), f"{self.end} without {self.begin}")
                    continue
                body_start = open_at + len(self.begin)
                code, reason = self._parse_body(text[body_start : m.start()], sizes)
                if code is None:
                    bad(open_at, m.end(), reason)
                else:
                    codes.append(code)
                    spans.append((open_at, m.end()))
                open_at = None
            elif open_at is None:  # a code token outside markers
                if run is not None and run[1] == m.start():
                    run[1] = m.end()
                else:
                    flush_run()
                    run = [m.start(), m.end()]
        flush_run()
        if open_at is not None:
            bad(open_at, len(text), f"missing {self.end}")
        return SIDParse(codes, spans, invalid)

    def _matches(self, text: str) -> Iterator[re.Match[str]]:
        return self._scanner.finditer(text)

    @staticmethod
    def _parse_body(body: str, sizes: tuple[int, ...]) -> tuple[tuple[int, ...] | None, str]:
        """The code tuple of the text between markers, or None and the reason it is malformed."""
        pieces = list(re.finditer(_CODE_TOKEN, body))
        # Non-overlapping matches that add up to the whole body tile it: nothing else is in there.
        if sum(len(p.group(0)) for p in pieces) != len(body):
            return None, f"unexpected text between the markers: {body!r}"
        for position, piece in enumerate(pieces):
            level = ord(piece.group(1)) - ord("a")
            if level != position:
                expected = _LETTERS[position] if position < MAX_LEVELS else "?"
                return None, (
                    f"wrong level order: {piece.group(0)} at position {position}, "
                    f"expected <{expected}_N>"
                )
        if len(pieces) != len(sizes):
            return None, f"wrong length: {len(pieces)} level tokens, expected {len(sizes)}"
        code = []
        for level, piece in enumerate(pieces):
            digits = piece.group(2)
            if digits != str(int(digits)):
                return None, f"non-canonical code token {piece.group(0)} (leading zero)"
            value = int(digits)
            if value >= sizes[level]:
                return None, f"code {value} at level {level} is outside [0, {sizes[level]})"
            code.append(value)
        return tuple(code), ""

    # -- token ids ---------------------------------------------------------------------------

    def token_ids(self, tokenizer: Any, codebook_sizes: Sequence[int]) -> SIDTokenIds:
        """Look up the SID tokens in ``tokenizer`` and check they form the documented layout.

        Args:
            tokenizer: A Hugging Face tokenizer (anything with ``get_vocab()``).
            codebook_sizes: ``K_l`` per level.

        Returns:
            The id layout.

        Raises:
            VocabMismatchError: A token is missing, or the ids are not one contiguous range in
                :meth:`tokens` order (the tokenizer was extended for another map or format).
        """
        tokens = self.tokens(codebook_sizes)
        vocab = tokenizer.get_vocab()
        missing = [t for t in tokens if t not in vocab]
        if missing:
            raise VocabMismatchError(
                f"the tokenizer lacks {len(missing)} of {len(tokens)} SID tokens (first: "
                f"{missing[:3]}); Fix: extend it with recllm.vocab.extend_vocab for this SID map, "
                "or load the tokenizer saved with the model (recllm.vocab.load_model_with_sids)"
            )
        first = vocab[tokens[0]]
        for offset, tok in enumerate(tokens):
            if vocab[tok] != first + offset:
                raise VocabMismatchError(
                    f"SID token {tok} has id {vocab[tok]}, expected {first + offset} (SID tokens "
                    f"must be contiguous from {tokens[0]}={first} in the documented order); the "
                    "tokenizer was extended for a different SID map or format. Fix: start from "
                    "the base tokenizer, or use the tokenizer saved with this SID map"
                )
        return SIDTokenIds(first, tuple(int(k) for k in codebook_sizes))

    def is_sid_token(self, token: str) -> bool:
        """True for the markers and anything shaped like a code token (``<x_N>``)."""
        return token in (self.begin, self.end) or re.fullmatch(_CODE_TOKEN, token) is not None


#: The default format every recllm component uses unless told otherwise.
SID_FORMAT = SIDFormat()
