"""History in, ranked catalog items out: the recommendation API of a saved recllm model.

:class:`Recommender` loads a directory written by :func:`recllm.vocab.save_model_with_sids`,
rebuilds the prompt the model was trained with (:class:`recllm.tasks.prompting.PromptSpec`
and :func:`recllm.tasks.prompting.build_prompts`, exactly what evaluation uses) from an item
history, and decodes the top ``k`` items with constrained SID beam search on one of two engines:

- ``engine="vllm"``: :func:`recllm.decode.vllm_beam.vllm_sid_beam_search` on a ``vllm.LLM``
  with the SID logits processor (or, in the server, the async engine it shares).
- ``engine="hf"``: :func:`recllm.decode.generate_sids` with ``engine="sid_beam"`` on the
  transformers model.

Both return the same items with the same scores (length-normalised full-vocabulary sequence
log-probs of ``begin + codes + end + stop``), up to float noise.

**Item filters.** ``exclude=`` (item ids never to recommend), ``allow=`` (the only item ids to
recommend) and ``exclude_history=True`` (skip the history's items) act inside the SID constraint
(:class:`recllm.decode.filters.ItemFilter`): the beams never hold a filtered item, so the top
``k`` is ``k`` admissible items. Without them the answer is the P5 protocol's: items of the
history may come back.

Example:
    >>> rec = Recommender.from_pretrained("outputs/quickstart/model", engine="vllm")
    >>> rec.recommend(["50", "172", "181"], k=5)
    [Recommendation(item_id='100', score=-4.2, title='Fargo (1996)'), ...]
    >>> rec.recommend(["50", "172", "181"], k=5, exclude_history=True, exclude=["100"])
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from recllm.decode.generate import Recommendation
from recllm.errors import UserError, clip

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from recllm.data.types import Catalog
    from recllm.decode import Prompt
    from recllm.decode.filters import ItemFilter
    from recllm.decode.fresh import TextNewItems
    from recllm.decode.slate import Slate
    from recllm.decode.think import ThinkOptions, ThinkResult
    from recllm.sid.sidmap import SIDMap
    from recllm.tasks.prompting import PromptSpec

__all__ = ["Recommender"]

logger = logging.getLogger(__name__)

EngineName = Literal["vllm", "hf"]
#: Per prompt: item ids, or None.
ItemLists = Sequence[Sequence[Any] | None]


class Recommender:
    """A saved recommender, ready to answer ``recommend(history, k)`` (see the module docstring).

    Build it with :meth:`from_pretrained`. Attributes ``tokenizer``, ``sid_map``, ``catalog``,
    ``spec`` and ``trie`` are the loaded parts; ``llm`` / ``model`` the engine.

    Args:
        model_dir: The model directory.
        tokenizer: Its tokenizer.
        sid_map: Its SID map.
        spec: How it is prompted.
        catalog: Item titles (and texts the prompt may use).
        engine: ``"vllm"`` or ``"hf"``.
        backend: The ``vllm.LLM`` / vLLM async engine client, or the transformers model; None
            for an object that only validates and builds prompts.
        max_k: Largest ``k`` a request may ask for (capped at the catalog size).
        batch_size: Prompts per transformers batch (``engine="hf"``).
    """

    def __init__(
        self,
        model_dir: Path,
        tokenizer: PreTrainedTokenizerBase,
        sid_map: SIDMap,
        spec: PromptSpec,
        catalog: Catalog,
        *,
        engine: EngineName,
        backend: Any = None,
        max_k: int = 50,
        batch_size: int = 16,
        new_items: Sequence[str] = (),
        new_item_bonus: float | None = None,
        text_new: TextNewItems | None = None,
    ) -> None:
        from recllm.decode import SIDTrie
        from recllm.vocab import SID_FORMAT

        if engine not in ("vllm", "hf"):
            raise ValueError(
                f"engine must be 'vllm' or 'hf', not {engine!r}; Fix: pick one of them"
            )
        self.model_dir = Path(model_dir)
        self.tokenizer = tokenizer
        self.sid_map = sid_map
        self.spec = spec
        self.catalog = catalog
        self.engine = engine
        self.backend = backend
        self.max_k = min(max_k, len(sid_map))
        self.batch_size = batch_size
        self.stop_token_id = tokenizer.eos_token_id
        if self.stop_token_id is None:
            raise ValueError(
                f"{model_dir}: the tokenizer has no EOS token to end an answer with; Fix: set "
                "eos_token in its tokenizer_config.json"
            )
        self.trie = SIDTrie.from_sid_map(
            sid_map, SID_FORMAT.token_ids(tokenizer, sid_map.codebook_sizes)
        )
        # items added after training, searched in a beam group of their own with a score bonus
        # (recllm.decode.fresh) when a bonus is set
        self.new_items = list(new_items)
        self.new_item_bonus = new_item_bonus
        self.fresh = None
        # or: the new items scored by text similarity beside a search of the trained items alone
        # (the hybrid, recllm.decode.fresh.TextNewItems); it replaces the beam group
        self.text_new = text_new
        if text_new is None and new_item_bonus is not None and self.new_items:
            from recllm.decode.fresh import FreshItems

            self.fresh = FreshItems.from_ids(self.trie, self.new_items, new_item_bonus)
            self._new_rows = set(self.fresh.items.nonzero().flatten().tolist())  # vLLM merge

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        model_dir: str | Path,
        *,
        engine: EngineName = "vllm",
        data: str | None = None,
        max_k: int = 50,
        dtype: str = "float32",
        vllm_kwargs: Mapping[str, Any] | None = None,
        backend: Any = None,
        batch_size: int = 16,
        allow_other_data: bool = False,
        new_item_bonus: float | None = None,
        new_item_text_alpha: float | None = None,
    ) -> Recommender:
        """Load a model directory written by recllm and start its engine.

        Args:
            model_dir: Directory written by :func:`recllm.vocab.save_model_with_sids` (a
                ``recllm quickstart`` / PLUM recipe output).
            engine: ``"vllm"`` (needs the ``[vllm]`` extra) or ``"hf"``.
            data: Data set path or name for titles and prompts; default: the data the model
                records it was trained on.
            max_k: Largest ``k`` accepted (also vLLM's ``max_logprobs``).
            dtype: Model dtype (``"float32"`` or ``"bfloat16"``).
            vllm_kwargs: Extra ``vllm.LLM`` arguments (``max_model_len``, ``enforce_eager``...).
            backend: An engine to reuse instead of starting one (a ``vllm.LLM`` built with
                :func:`recllm.decode.vllm_processor.vllm_engine_kwargs`, the server's async
                engine client, or a transformers model).
            batch_size: Prompts per transformers batch (``engine="hf"``).
            allow_other_data: Serve ``data`` even when its catalog is not the one the model
                records it was trained on (a warning instead of an error).
            new_item_bonus: Score bonus of the items added by ``recllm catalog add``, searched
                in a beam group of their own (:mod:`recllm.decode.fresh`); default: the bonus
                the model directory records (``recllm catalog add --new-item-bonus``), None
                when it records none (plain search).
            new_item_text_alpha: Score the added items by ``alpha`` x their text cosine to the
                history's recent items + the bonus, beside a search of the trained items alone
                (:class:`recllm.decode.fresh.TextNewItems`, the hybrid); default: the alpha the
                model directory records (``recllm catalog add --new-item-text-alpha``). Its
                ``norm_top`` and ``guide`` are always the recorded ones.

        Raises:
            VocabMismatchError: Model, tokenizer and SID map do not belong together.
            ValueError: No data set recorded and none given, or a bad engine name.
        """
        from recllm.data import load_rec_dataset
        from recllm.data.config import DataConfig
        from recllm.tasks.prompting import PromptSpec
        from recllm.vocab.catalog_add import model_catalog
        from recllm.vocab.checkpoint import load_tokenizer_with_sids

        model_dir = Path(model_dir)
        if engine not in ("vllm", "hf"):
            raise ValueError(
                f"engine must be 'vllm' or 'hf', not {engine!r}; Fix: pick one of them"
            )
        if max_k < 1:
            raise ValueError(f"max_k must be >= 1, got {max_k}; Fix: --max-k 1 or more")
        tokenizer, sid_map = load_tokenizer_with_sids(model_dir)
        spec = PromptSpec.from_model_dir(model_dir)
        fields = dict(spec.data or {})
        if data is not None:
            fields["data_path"] = data
        if "data_path" not in fields:
            raise ValueError(
                f"{model_dir} does not record the data set it was trained on, and titles and "
                "prompts need its catalog; Fix: pass data=PATH_OR_NAME (--data)"
            )
        catalog = load_rec_dataset(config=DataConfig(**fields)).catalog
        if data is not None:
            _check_catalog(model_dir, data, catalog, allow_other_data)
        catalog = model_catalog(model_dir, catalog)  # + items added by `recllm catalog add`
        from recllm.vocab.catalog_add import (
            read_added_items,
            recorded_new_item_bonus,
            recorded_new_item_text,
            recorded_new_item_text_alpha,
        )

        if new_item_bonus is None:
            new_item_bonus = recorded_new_item_bonus(model_dir)
        if new_item_text_alpha is None:
            new_item_text_alpha = recorded_new_item_text_alpha(model_dir)
        new_items = read_added_items(model_dir).ids
        text_new = None
        if new_item_text_alpha is not None and new_items:
            from recllm.decode.fresh import TextNewItems
            from recllm.sid.quantizer import SIDQuantizer
            from recllm.vocab.catalog_add import model_quantizer_dir

            quantizer = SIDQuantizer.load(model_quantizer_dir(model_dir, None))
            text_new = TextNewItems.build(
                quantizer,
                catalog,
                new_items,
                new_item_text_alpha,
                new_item_bonus or 0.0,
                **recorded_new_item_text(model_dir),  # norm_top, guide, max_new
            )
        if backend is None:
            backend = _start_backend(model_dir, engine, tokenizer, dtype, max_k, vllm_kwargs)
        return cls(
            model_dir,
            tokenizer,
            sid_map,
            spec,
            catalog,
            engine=engine,
            backend=backend,
            max_k=max_k,
            batch_size=batch_size,
            new_items=new_items,
            new_item_bonus=new_item_bonus,
            text_new=text_new,
        )

    # -- requests ----------------------------------------------------------------------------

    def check_request(self, history: Sequence[Any], k: int) -> list[str]:
        """The history as item ids, after checking it and ``k``.

        Raises:
            ValueError: Empty or malformed history, unknown item ids, or ``k`` out of range;
                the message says what to send instead.
        """
        if isinstance(k, bool) or not isinstance(k, int):
            raise ValueError(
                f"k must be an integer between 1 and {self.max_k}, got {clip(k)}; Fix: send a "
                'JSON number such as "k": 10'
            )
        if not 1 <= k <= self.max_k:
            raise ValueError(
                f"k={k} is out of range; Fix: ask for 1 <= k <= {self.max_k} items (the "
                "server's --max-k and the catalog size bound it)"
            )
        if isinstance(history, str | bytes) or not isinstance(history, Sequence):
            raise ValueError(
                f"history must be a list of item ids, got {type(history).__name__}; Fix: send "
                'e.g. {"history": ["item1", "item2"]}'
            )
        if not history:
            raise ValueError(
                "history is empty; Fix: send at least one item id the user interacted with "
                "(oldest first)"
            )
        items = []
        for item in history:
            if isinstance(item, bool) or not isinstance(item, str | int):
                raise ValueError(
                    f"item ids are strings, got {clip(item)} in history; Fix: send the history "
                    'as a flat list of item ids, e.g. ["item1", "item2"]'
                )
            items.append(str(item))
        unknown = [
            i for i in dict.fromkeys(items) if i not in self.sid_map or i not in self.catalog
        ]
        if unknown:
            example = ", ".join(repr(i) for i in self.sid_map.item_ids[:3])
            raise ValueError(
                f"unknown item ids [{', '.join(clip(i) for i in unknown[:5])}]"
                f"{' ...' if len(unknown) > 5 else ''}: not in the "
                f"catalog of {len(self.sid_map)} items this model was trained on; Fix: send item "
                f"ids from that catalog (e.g. {example})"
            )
        return items

    def check_thinking(self) -> None:
        """Raise ``ValueError`` (with the fix) unless the model was trained to think."""
        if self.spec.style != "chat" or self.spec.think is None:
            raise ValueError(
                "this model was not trained to think (its recllm_vocab.json records no "
                "`think`); Fix: train it with recipes/onerec_think.py, or decode without thinking"
            )

    def prompts(self, histories: Sequence[Sequence[Any]], k: int) -> list[Prompt]:
        """Checked histories -> the prompts the model was trained with (one per history)."""
        from recllm.data.splits import Example
        from recllm.tasks.prompting import build_prompts

        checked = [self.check_request(h, k) for h in histories]
        examples = [Example(f"request{n}", tuple(h), h[-1]) for n, h in enumerate(checked)]
        return build_prompts(self.spec, examples, self.sid_map, self.catalog)

    def recommend(
        self,
        history: Sequence[Any],
        k: int = 10,
        *,
        num_beams: int | None = None,
        think: bool = False,
        think_options: ThinkOptions | None = None,
        exclude: Sequence[Any] | None = None,
        allow: Sequence[Any] | None = None,
        exclude_history: bool = False,
    ) -> list[Recommendation] | ThinkResult:
        """The top ``k`` items after ``history`` (item ids, oldest first), best first.

        ``think=True`` (a model from ``recipes/onerec_think.py``): the model writes rationales
        first; returns a :class:`recllm.decode.think.ThinkResult` (``.recommendations`` and
        ``.rationales``).

        ``exclude`` / ``allow`` (item ids) and ``exclude_history`` filter the items inside the
        SID constraint (see the module docstring).

        Raises:
            UserError: An unknown item id in ``exclude`` / ``allow`` (named), filters that
                leave no item, or filters with ``think=True``.
        """
        if think:
            if exclude is not None or allow is not None or exclude_history:
                raise UserError(
                    "exclude / allow / exclude_history",
                    "item filters are not applied to thinking yet",
                    "decode without think, or leave the filters out",
                )
            return self.recommend_thinking(
                [history], k, num_beams=num_beams, options=think_options
            )[0]
        return self.recommend_batch(
            [history],
            k,
            num_beams=num_beams,
            exclude=None if exclude is None else [exclude],
            allow=None if allow is None else [allow],
            exclude_history=exclude_history,
        )[0]

    def recommend_batch(
        self,
        histories: Sequence[Sequence[Any]],
        k: int = 10,
        *,
        num_beams: int | None = None,
        exclude: ItemLists | None = None,
        allow: ItemLists | None = None,
        exclude_history: bool = False,
    ) -> list[list[Recommendation]]:
        """:meth:`recommend` for many histories in one batch (``exclude`` / ``allow``: one
        entry per history, each a list of item ids or None)."""
        prompts = self.prompts(histories, k)
        exclude = self.filter_lists(histories, exclude, exclude_history)
        if self.text_new is None:
            return self.recommend_prompts(
                prompts, k, num_beams=num_beams, exclude=exclude, allow=allow
            )
        self.item_filter(exclude, allow)  # unknown ids and empty filters: refused here
        searched = self._without_new(len(histories), exclude, allow)
        found = self.recommend_prompts(
            prompts, k, num_beams=num_beams, exclude=searched, allow=allow
        )
        return self._with_text_new(found, histories, k, exclude, allow)

    def _without_new(
        self, n_prompts: int, exclude: ItemLists | None, allow: ItemLists | None
    ) -> ItemLists:
        """``exclude`` plus the new items (the hybrid's search is over trained items only); a
        prompt whose allow-list holds only new items keeps its search over them (an empty
        search is refused), and the text candidates join it."""
        new = list(self.text_new.new_items) if self.text_new is not None else []
        rows = exclude if exclude is not None else [None] * n_prompts
        out: list[Sequence[Any] | None] = []
        for n, ex in enumerate(rows):
            a = allow[n] if allow is not None else None
            if a is not None and set(map(str, a)) <= set(new):
                out.append(ex)  # nothing trained is allowed: leave the search as it is
            else:
                out.append([*(ex or ()), *new])
        return out

    def _with_text_new(
        self,
        found: list[list[Recommendation]],
        histories: Sequence[Sequence[Any]],
        k: int,
        exclude: ItemLists | None,
        allow: ItemLists | None,
    ) -> list[list[Recommendation]]:
        """Merge the trained items' lists with the new items' text-similarity candidates."""
        from recllm.decode.fresh import TextNewItems

        extra = self.text_new.candidates(  # type: ignore[union-attr]
            [[str(i) for i in h] for h in histories],
            k,
            _as_ids(exclude),
            _as_ids(allow),
            found=[[(r.item_id, r.score) for r in recs] for recs in found],
        )
        out = []
        for recs, more in zip(found, extra, strict=True):
            have = {r.item_id for r in recs}
            more = [(i, s) for i, s in more if i not in have]
            merged = TextNewItems.merge([(r.item_id, r.score) for r in recs], more, k)
            out.append(
                [
                    Recommendation(i, s, self.catalog.title(i) if i in self.catalog else None)
                    for i, s in merged
                ]
            )
        return out

    def filter_lists(
        self, histories: Sequence[Sequence[Any]], exclude: ItemLists | None, exclude_history: bool
    ) -> ItemLists | None:
        """Per history, the item ids to exclude: ``exclude``, plus the history's own items
        when ``exclude_history``."""
        if exclude is not None and len(exclude) != len(histories):
            raise ValueError(
                f"{len(exclude)} exclude lists for {len(histories)} histories; Fix: one list "
                "(or None) per history"
            )
        if not exclude_history:
            return exclude
        given = exclude if exclude is not None else [None] * len(histories)
        return [[*(e or ()), *h] for e, h in zip(given, histories, strict=True)]

    def item_filter(
        self, exclude: ItemLists | None, allow: ItemLists | None, *, where: str = ""
    ) -> ItemFilter | None:
        """The :class:`recllm.decode.filters.ItemFilter` of per-prompt ``exclude`` / ``allow``
        item-id lists (None when both are None).

        Raises:
            UserError: An unknown item id (naming ``exclude`` or ``allow`` and the id), a
                malformed list, or filters that leave no item.
        """
        if exclude is None and allow is None:
            return None
        from recllm.decode.filters import ItemFilter

        for key, lists in (("exclude", exclude), ("allow", allow)):
            for ids in lists or ():
                if ids is not None and (
                    isinstance(ids, str | bytes) or not isinstance(ids, Sequence)
                ):
                    raise UserError(
                        f"{where}{key}",
                        f"must be a list of item ids, got {clip(ids)}",
                        f'send e.g. "{key}": ["item1", "item2"]',
                    )
        return ItemFilter.from_ids(self.trie, exclude, allow, where=where)

    def recommend_prompts(
        self,
        prompts: Sequence[Prompt],
        k: int,
        *,
        num_beams: int | None = None,
        prefixes: Sequence[Sequence[Sequence[int]] | None] | None = None,
        stop_token_id: int | None = None,
        exclude: ItemLists | None = None,
        allow: ItemLists | None = None,
    ) -> list[list[Recommendation]]:
        """Top ``k`` items for prompts already built (evaluation), ``num_beams`` wide (>= k).

        ``prefixes``: per prompt, the SID prefixes its items must start with (think-ahead,
        :mod:`recllm.decode.prefixes`), or None for an unrestricted prompt.
        ``stop_token_id``: the token that follows the SID in the answer and is scored with it
        (default: the EOS token; a dialogue reply goes on after its SID with a new line,
        :func:`recllm.tasks.dialogue.reply_stop_token`).
        ``exclude`` / ``allow``: per prompt, item ids to skip / the only ones to recommend
        (inside the SID constraint; see :meth:`item_filter` for the errors).
        """
        beams = self._beams(k, num_beams)
        stop = self.stop_token_id if stop_token_id is None else stop_token_id
        filters = self.item_filter(exclude, allow)  # checks the ids on either engine
        if self.engine == "hf":
            from recllm.decode import DecodeOptions, generate_sids
            from recllm.decode.prefixes import PrefixSets

            sets = None if prefixes is None else PrefixSets.from_prefixes(self.trie, prefixes)

            return generate_sids(
                self.backend,
                self.tokenizer,
                prompts,
                self.sid_map,
                DecodeOptions(
                    k=k,
                    num_beams=beams,
                    batch_size=self.batch_size,
                    engine="sid_beam",
                    stop_token_id=stop,
                ),
                titles=self.catalog,
                trie=self.trie,
                prefixes=sets,
                item_filter=filters,
                fresh=self.fresh,
            )
        from recllm.decode import encode_prompts
        from recllm.decode.vllm_beam import vllm_sid_beam_search

        encoded = encode_prompts(self.tokenizer, prompts)
        search = dict(
            num_beams=beams,
            k=k,
            prefixes=prefixes,
            stop_token_id=None if stop == self.stop_token_id else stop,
            exclude=_as_ids(exclude),
        )
        first = search
        if self.fresh is not None:  # the trained items alone first, as the HF beam groups do
            rows = search["exclude"] or [[] for _ in encoded]
            first = {**search, "exclude": [[*(r or []), *self.new_items] for r in rows]}
        ranked = vllm_sid_beam_search(
            self.backend, encoded, self.trie, allow=_as_ids(allow), **first
        )
        if self.fresh is not None:
            ranked = self._with_new_items(ranked, encoded, allow, search)
        return [self._named(r) for r in ranked]

    def _with_new_items(self, ranked, encoded, allow, search) -> list[list[tuple[int, float]]]:
        """vLLM: the new items' search (an allow-list of them; vLLM's prefix cache serves the
        prompt again), merged with ``ranked`` (the trained items' search) after the bonus, as
        the HF beam groups are."""
        from recllm.decode.vllm_beam import vllm_sid_beam_search

        new = set(self.new_items)
        lists = _as_ids(allow) or [None] * len(encoded)
        groups = [sorted(new if a is None else new & set(a)) for a in lists]
        todo = [n for n, g in enumerate(groups) if g]
        if not todo:
            return ranked
        sub = {
            **search,
            "exclude": None if search["exclude"] is None else [search["exclude"][n] for n in todo],
        }
        if search["prefixes"] is not None:
            sub["prefixes"] = [search["prefixes"][n] for n in todo]
        found = vllm_sid_beam_search(
            self.backend,
            [encoded[n] for n in todo],
            self.trie,
            allow=[groups[n] for n in todo],
            **sub,
        )
        is_new = self._new_rows
        out = [list(r) for r in ranked]
        for n, extra in zip(todo, found, strict=True):
            best: dict[int, float] = {}
            for row, score in [*ranked[n], *extra]:
                score = score + (self.fresh.bonus if row in is_new else 0.0)
                best[row] = max(score, best.get(row, float("-inf")))
            out[n] = sorted(best.items(), key=lambda kv: -kv[1])[: search["k"]]
        return out

    # -- slates ------------------------------------------------------------------------------

    def recommend_slate(
        self,
        history: Sequence[Any],
        n: int = 5,
        *,
        mode: str = "beam",
        num_beams: int | None = None,
        exclude: Sequence[Any] | None = None,
        allow: Sequence[Any] | None = None,
        exclude_history: bool = False,
        temperature: float = 1.0,
        seed: int | None = None,
        spread: bool = False,
        diversity_penalty: float = 0.0,
    ) -> Slate:
        """The best slate of ``n`` distinct items after ``history``, decoded in ONE answer of
        ``n`` SIDs (:func:`recllm.decode.slate.slate_search`): each item is chosen knowing the
        items before it, and the constraint excludes the slate's items as it grows.

        ``mode``: ``"beam"`` (``num_beams`` slates kept by joint log-prob; default
        ``max(n, 4)``), ``"greedy"`` or ``"sample"`` (``num_beams`` draws at ``temperature``,
        seeded by ``seed``; the best is returned). ``exclude`` / ``allow`` /
        ``exclude_history`` act inside the constraint as in :meth:`recommend`. On vLLM,
        ``"beam"`` and ``"greedy"`` (:func:`recllm.decode.vllm_slate.vllm_slate_search`, the
        same slates and scores); ``"sample"`` runs on the transformers engine only.
        ``spread``: each item of the slate under its own first SID code (the items sharing a
        first code with one already in the slate are excluded too), on either engine.
        ``diversity_penalty``: the soft form of ``spread``: slates are ranked by log-prob minus
        this for every item sharing an earlier item's first SID code (the scores stay the
        log-probs); on either engine (vLLM asks for ``num_beams + n - 1`` log-probs per step,
        within its ``max_logprobs``).

        Raises:
            UserError: ``"sample"`` on vLLM, a bad ``mode``, unknown item ids in the filters,
                or filters that leave fewer than ``n`` items.
        """
        return self.recommend_slates(
            [history],
            n,
            mode=mode,
            num_beams=num_beams,
            exclude=None if exclude is None else [exclude],
            allow=None if allow is None else [allow],
            exclude_history=exclude_history,
            temperature=temperature,
            seed=seed,
            spread=spread,
            diversity_penalty=diversity_penalty,
        )[0][0]

    def recommend_slates(
        self,
        histories: Sequence[Sequence[Any]],
        n: int = 5,
        *,
        mode: str = "beam",
        num_beams: int | None = None,
        num_slates: int = 1,
        exclude: ItemLists | None = None,
        allow: ItemLists | None = None,
        exclude_history: bool = False,
        temperature: float = 1.0,
        seed: int | None = None,
        prompts: Sequence[Prompt] | None = None,
        spread: bool = False,
        diversity_penalty: float = 0.0,
    ) -> list[list[Slate]]:
        """:meth:`recommend_slate` for many histories: per history, its best ``num_slates``
        slates, best first (``exclude`` / ``allow``: one entry per history). ``prompts``: the
        prompts to decode from, one per history, when not the model's own (the playground's
        edited template); the histories are still checked and ``exclude_history`` reads them."""
        import torch

        from recllm.decode import left_pad
        from recllm.decode.slate import Slate, slate_search

        encoded, beams, exclude, filters = self._slate_job(
            histories, n, mode, num_beams, num_slates, exclude, allow, exclude_history, prompts
        )
        if spread:
            self._check_spread(filters, n, len(encoded))
        _check_penalty(diversity_penalty)
        if self.engine == "vllm":
            from recllm.decode.vllm_slate import vllm_slate_search

            found = vllm_slate_search(
                self.backend,
                encoded,
                self.trie,
                n=n,
                num_beams=beams,
                k=num_slates,
                exclude=_as_ids(exclude),
                allow=_as_ids(allow),
                spread=spread,
                diversity_penalty=diversity_penalty,
            )
            return [[self._slate(s) for s in row] for row in found]
        model = self.backend
        pad = self.tokenizer.pad_token_id
        out: list[list[Slate]] = []
        for start in range(0, len(encoded), self.batch_size):
            stop = min(start + self.batch_size, len(encoded))
            ids, mask = left_pad(encoded[start:stop], pad if pad is not None else 0, model.device)
            found = slate_search(
                model,
                ids,
                mask,
                self.trie,
                n=n,
                mode=mode,  # type: ignore[arg-type]
                num_beams=beams,
                num_return_sequences=num_slates,
                stop_token_id=self.stop_token_id,
                item_filter=None if filters is None else filters.slice(start, stop),
                temperature=temperature,
                seed=None if seed is None else seed + start,
                spread=spread,
                diversity_penalty=diversity_penalty,
            )
            for b in range(stop - start):
                slates = []
                for j in range(num_slates):
                    if not bool(torch.isfinite(found.scores[b, j])):
                        continue
                    ranked = list(
                        zip(
                            found.items[b, j].tolist(),
                            found.item_scores[b, j].tolist(),
                            strict=True,
                        )
                    )
                    slates.append(Slate(self._named(ranked), float(found.scores[b, j])))
                out.append(slates)
        return out

    def _check_spread(self, filters: ItemFilter | None, n: int, rows: int) -> None:
        """A spread slate needs ``n`` first SID codes left per history.

        Raises:
            UserError: A history whose filters leave fewer.
        """
        import torch

        from recllm.decode.slate import _first_nodes

        first = _first_nodes(self.trie)
        every = torch.arange(self.trie.num_items)
        for row in range(rows):
            ok = every if filters is None else every[filters.allows_items(torch.tensor(row), every)]
            have = int(first[ok].unique().numel())
            if have < n:
                raise UserError(
                    "spread",
                    f"history {row} has {have} first SID codes left, fewer than the slate's {n}",
                    f"ask for n <= {have}, or leave spread off",
                )

    def slate_filter(
        self, exclude: ItemLists | None, allow: ItemLists | None, n: int
    ) -> ItemFilter | None:
        """:meth:`item_filter`, and each row must leave at least ``n`` items for a slate.

        Raises:
            UserError: As :meth:`item_filter`, or a row with fewer than ``n`` items left.
        """
        import torch

        filters = self.item_filter(exclude, allow)
        if filters is None:
            return None
        every = torch.arange(self.trie.num_items)
        for row in range(filters.rows):
            free = int(filters.allows_items(torch.tensor(row), every).sum())
            if free < n:
                raise UserError(
                    "exclude / allow / exclude_history",
                    f"leave {free} items for history {row}, fewer than the slate's {n}",
                    f"ask for n <= {free}, or exclude fewer items",
                )
        return filters

    def _slate_job(
        self, histories, n, mode, num_beams, num_slates, exclude, allow, history, prompts=None
    ):
        """Checked slate request: ``(encoded prompts, beams, exclude lists, item filter)``."""
        from recllm.decode import encode_prompts
        from recllm.decode.slate import SLATE_MODES

        if mode not in SLATE_MODES:
            raise UserError("mode", f"unknown slate mode {clip(mode)}", f"use one of {SLATE_MODES}")
        if mode == "sample" and self.engine != "hf":
            raise UserError(
                "mode",
                "sampled slates run on the transformers engine only for now (vLLM decodes "
                "beam and greedy slates)",
                'use mode="beam" or "greedy" on vLLM, or load the model with engine="hf"',
            )
        beams = max(n, 4, num_slates) if num_beams is None else num_beams
        if mode == "greedy":
            beams = 1
        if not 1 <= num_slates <= beams:
            raise UserError(
                "num_slates",
                f"{num_slates} slates from {beams} beams",
                "ask for 1 <= num_slates <= num_beams (greedy decodes one slate)",
            )
        if prompts is None:
            prompts = self.prompts(histories, n)  # checks the histories and 1 <= n <= max_k
        elif len(prompts) != len(histories):
            raise ValueError(
                f"{len(prompts)} prompts for {len(histories)} histories; Fix: one prompt per "
                "history"
            )
        else:
            for h in histories:
                self.check_request(h, n)
        exclude = self.filter_lists(histories, exclude, history)
        filters = self.slate_filter(exclude, allow, n)
        return encode_prompts(self.tokenizer, prompts), beams, exclude, filters

    def _slate(self, found: Any) -> Slate:
        """A :class:`recllm.decode.vllm_slate.RankedSlate` as a named :class:`Slate`."""
        from recllm.decode.slate import Slate

        ranked = list(zip(found.items, found.item_scores, strict=True))
        return Slate(self._named(ranked), found.score)

    async def arecommend_slates(
        self,
        histories: Sequence[Sequence[Any]],
        n: int = 5,
        *,
        mode: str = "beam",
        num_beams: int | None = None,
        num_slates: int = 1,
        exclude: ItemLists | None = None,
        allow: ItemLists | None = None,
        exclude_history: bool = False,
        **kwargs: Any,
    ) -> list[list[Slate]]:
        """:meth:`recommend_slates` on the server's vLLM async engine client, or on the
        transformers model in a worker thread."""
        given = dict(mode=mode, num_beams=num_beams, num_slates=num_slates, exclude=exclude)
        given.update(allow=allow, exclude_history=exclude_history, **kwargs)
        if self.engine == "hf":
            import asyncio

            return await asyncio.to_thread(self.recommend_slates, histories, n, **given)
        from recllm.decode.vllm_slate import async_vllm_slate_search

        encoded, beams, exclude, filters = self._slate_job(
            histories, n, mode, num_beams, num_slates, exclude, allow, exclude_history
        )
        spread = bool(kwargs.get("spread", False))
        if spread:
            self._check_spread(filters, n, len(encoded))
        penalty = kwargs.get("diversity_penalty", 0.0)
        _check_penalty(penalty)
        found = await async_vllm_slate_search(
            self.backend,
            encoded,
            self.trie,
            n=n,
            num_beams=beams,
            k=num_slates,
            catalog=self.sid_map.content_hash,
            exclude=_as_ids(exclude),
            allow=_as_ids(allow),
            spread=spread,
            diversity_penalty=penalty,
        )
        return [[self._slate(s) for s in row] for row in found]

    def recommend_thinking(
        self,
        histories: Sequence[Sequence[Any]],
        k: int = 10,
        *,
        num_beams: int | None = None,
        options: ThinkOptions | None = None,
    ) -> list[ThinkResult]:
        """Think, then recommend (a model from ``recipes/onerec_think.py``): per history the
        merged items and the rationales (:func:`recllm.decode.think.think_then_sid`).

        Raises:
            ValueError: The model was not trained to think, or a bad request.
        """
        from recllm.data.splits import Example
        from recllm.decode.think import ThinkOptions, think_then_sid
        from recllm.tasks.prompting import build_prompts

        checked = [self.check_request(h, k) for h in histories]
        examples = [Example(f"request{n}", tuple(h), h[-1]) for n, h in enumerate(checked)]
        prompts = build_prompts(self.spec, examples, self.sid_map, self.catalog, think=True)
        o = options or ThinkOptions()
        return think_then_sid(
            self.backend if self.engine == "hf" else None,
            self.tokenizer,
            prompts,
            self.sid_map,
            k=k,
            num_beams=self._beams(k, num_beams),
            rationales=o.rationales,
            max_think_tokens=o.max_think_tokens,
            temperature=o.temperature,
            top_p=o.top_p,
            batch_size=self.batch_size,
            seed=o.seed,
            trie=self.trie,
            titles=self.catalog,
            engine=self.backend if self.engine == "vllm" else None,
        )

    async def arecommend_batch(
        self,
        histories: Sequence[Sequence[Any]],
        k: int = 10,
        *,
        num_beams: int | None = None,
        exclude: ItemLists | None = None,
        allow: ItemLists | None = None,
        exclude_history: bool = False,
    ) -> list[list[Recommendation]]:
        """:meth:`recommend_batch` on a vLLM async engine client (the API server's engine), or
        on the transformers model in a worker thread (``engine="hf"``)."""
        if self.engine == "hf":
            import asyncio

            return await asyncio.to_thread(
                self.recommend_batch,
                histories,
                k,
                num_beams=num_beams,
                exclude=exclude,
                allow=allow,
                exclude_history=exclude_history,
            )
        from recllm.decode import encode_prompts
        from recllm.decode.vllm_beam import async_vllm_sid_beam_search

        prompts = encode_prompts(self.tokenizer, self.prompts(histories, k))
        exclude = self.filter_lists(histories, exclude, exclude_history)
        self.item_filter(exclude, allow)  # unknown ids and empty filters: refused here
        searched = exclude
        if self.text_new is not None:
            searched = self._without_new(len(histories), exclude, allow)
        ranked = await async_vllm_sid_beam_search(
            self.backend,
            prompts,
            self.trie,
            num_beams=self._beams(k, num_beams),
            k=k,
            catalog=self.sid_map.content_hash,  # the engine keeps it across a catalog reload
            exclude=_as_ids(searched),
            allow=_as_ids(allow),
        )
        found = [self._named(r) for r in ranked]
        if self.text_new is None:
            return found
        return self._with_text_new(found, histories, k, exclude, allow)

    async def arecommend_thinking(
        self,
        histories: Sequence[Sequence[Any]],
        k: int = 10,
        *,
        num_beams: int | None = None,
        options: ThinkOptions | None = None,
    ) -> list[ThinkResult]:
        """:meth:`recommend_thinking` on a vLLM async engine client (the API server's engine).

        Raises:
            ValueError: The model was not trained to think, or a bad request.
        """
        from recllm.data.splits import Example
        from recllm.decode.think import athink_then_sid
        from recllm.tasks.prompting import build_prompts

        checked = [self.check_request(h, k) for h in histories]
        examples = [Example(f"request{n}", tuple(h), h[-1]) for n, h in enumerate(checked)]
        prompts = build_prompts(self.spec, examples, self.sid_map, self.catalog, think=True)
        return await athink_then_sid(
            self.backend,
            self.tokenizer,
            prompts,
            self.sid_map,
            self.trie,
            k=k,
            num_beams=self._beams(k, num_beams),
            options=options,
            titles=self.catalog,
        )

    def _beams(self, k: int, num_beams: int | None) -> int:
        beams = k if num_beams is None else num_beams
        if beams < k:
            raise ValueError(
                f"num_beams ({beams}) must be >= k ({k}); Fix: raise num_beams or lower k"
            )
        return beams

    def _named(self, ranked: list[tuple[int, float]]) -> list[Recommendation]:
        out = []
        for row, score in ranked:
            item = self.sid_map.item_ids[row]
            title = self.catalog.title(item) if item in self.catalog else None
            out.append(Recommendation(item, score, title))
        return out


def _check_penalty(penalty: Any) -> None:
    """A slate's ``diversity_penalty``: a finite number >= 0.

    Raises:
        UserError: Anything else.
    """
    import math

    ok = isinstance(penalty, (int, float)) and not isinstance(penalty, bool)
    if not ok or not 0 <= penalty < math.inf:
        raise UserError(
            "diversity_penalty",
            f"must be a finite number >= 0, got {clip(penalty)}",
            "pass 0 (off) or a log-prob penalty such as 0.5 or 2",
        )


def _as_ids(lists: ItemLists | None) -> list[list[str] | None] | None:
    """Per prompt, the item ids as strings (what the vLLM processor's switches carry)."""
    if lists is None:
        return None
    return [None if ids is None else [str(i) for i in ids] for ids in lists]


def _start_backend(
    model_dir: Path,
    engine: str,
    tokenizer: Any,
    dtype: str,
    max_k: int,
    vllm_kwargs: Mapping[str, Any] | None,
) -> Any:
    """A vLLM engine (with the SID processor) or a transformers model on ``model_dir``."""
    if engine == "vllm":
        from recllm.decode.vllm_beam import start_vllm_engine

        return start_vllm_engine(
            model_dir,
            stop_token_id=tokenizer.eos_token_id,
            dtype=dtype,
            max_k=max_k,
            vllm_kwargs=vllm_kwargs,
        )
    import torch

    from recllm.vocab import load_model_with_sids

    model, _, _ = load_model_with_sids(model_dir, dtype=getattr(torch, dtype))
    return model.eval()


def _check_catalog(model_dir: Path, data: str, catalog: Catalog, allow_other_data: bool) -> None:
    from recllm.data.fingerprint import check_catalog
    from recllm.vocab.catalog_add import read_added_items
    from recllm.vocab.checkpoint import read_vocab_record

    recorded = (read_vocab_record(model_dir).get("recommender") or {}).get("data_fingerprint")
    check_catalog(
        recorded,
        catalog,
        model=str(model_dir),
        data=data,
        allow_other_data=allow_other_data,
        added=read_added_items(model_dir).ids,
    )


def check_serving_data(model_dir: str | Path, data: str, *, allow_other_data: bool = False) -> None:
    """Before an engine starts: refuse ``data`` whose catalog is not the model's.

    Raises:
        UserError: The catalogs differ and ``allow_other_data`` is False.
    """
    from recllm.data import load_rec_dataset
    from recllm.data.config import DataConfig
    from recllm.tasks.prompting import PromptSpec

    fields = {**(PromptSpec.from_model_dir(model_dir).data or {}), "data_path": data}
    catalog = load_rec_dataset(config=DataConfig(**fields)).catalog
    _check_catalog(Path(model_dir), data, catalog, allow_other_data)
