"""Rationales for reasoning SFT (OneRec-Think): why a user moves from a history to the next item.

One rationale per training example (the training part of the split only: valid and test targets
are never read), from one of two sources:

- ``teacher``: any OpenAI-compatible chat endpoint (``recllm serve`` / ``vllm serve`` of a bigger
  model, or a hosted API). As in the OneRec-Think paper, the teacher sees the (pruned) history
  AND the target, and is asked to explain the move without naming the target; the dataset
  records that it did (``teacher_saw_target``). Requests run concurrently with retries and
  exponential backoff; every answer is appended to an on-disk cache keyed by the hash of the
  request, so a rerun or a crashed run resumes where it stopped and asks nothing twice
  (:class:`RationaleCache`).
- ``metadata``: a deterministic rationale built from item metadata (:func:`metadata_rationale`):
  the facets the history's items share (genres, categories, brands, years), the most recent
  items' facets, and which of them the target shares. It needs no model, so CPU runs and tests
  use it; it explains the data's regularities, not a model's view of the user.

A **leakage filter** drops any rationale that names the target's title or SID verbatim
(:func:`leaks`); the count is reported. Output: a ``datasets`` dataset with columns ``user_id,
history, target, rationale, source, teacher, prompt_hash``, written atomically
(:func:`write_rationales`), plus ``rationales.json`` with the settings and counts.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import os
import random
import re
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recllm.errors import UserError

if TYPE_CHECKING:
    import datasets

    from recllm.data.splits import Example, Split
    from recllm.data.types import Catalog

logger = logging.getLogger(__name__)

SOURCES = ("metadata", "teacher")
#: Columns of a rationale dataset, in order.
COLUMNS = ("user_id", "history", "target", "rationale", "source", "teacher", "prompt_hash")
#: Version of the metadata rationale builder (part of every cache key and of the record).
METADATA_VERSION = 1

_WORD = re.compile(r"[A-Za-z][A-Za-z'-]{3,}")
_STOP = frozenset(
    [
        "with",
        "from",
        "that",
        "this",
        "have",
        "your",
        "their",
        "they",
        "them",
        "into",
        "over",
        "more",
        "than",
        "will",
        "what",
        "when",
        "which",
        "about",
        "each",
        "other",
        "some",
        "such",
        "only",
        "also",
        "just",
        "very",
        "most",
        "made",
        "make",
        "like",
        "pack",
        "piece",
        "pieces",
        "inch",
        "inches",
        "size",
        "sizes",
        "color",
        "black",
        "white",
        "the",
        "and",
        "for",
    ]
)


# -- which examples get a rationale -----------------------------------------------------------


def reason_examples(split: Split, max_history: int | None, per_user: int = 1) -> list[Example]:
    """The training examples to explain: per training user, the last ``per_user`` next-item
    transitions of the training sequence (history cut to the last ``max_history`` items).

    Only ``split.train`` is read, so no valid or test target can leak into the rationales.
    """
    from recllm.data.splits import Example

    if per_user < 1:
        raise ValueError(f"per_user must be >= 1, got {per_user}")
    out = []
    for user, seq in split.train.sequences.items():
        for t in range(max(1, len(seq) - per_user), len(seq)):
            history = seq[:t][-max_history:] if max_history else seq[:t]
            out.append(Example(user, tuple(history), seq[t]))
    return out


# -- facets of a catalog (for metadata rationales) ---------------------------------------------


@dataclass(frozen=True)
class Facet:
    """A short categorical field of the catalog and how its values split into tags."""

    name: str
    label: str
    splitter: str  # "whole" | "words" | "commas"
    common: frozenset[str] = field(default_factory=frozenset)  # tags on > half the items

    def tags(self, value: str) -> list[str]:
        value = value.strip()
        if not value:
            return []
        if self.splitter == "commas":  # "A,B & C, D,E": split on commas not followed by a space
            parts = re.split(r",(?! )", value)
        elif self.splitter == "words":
            parts = value.split()
        else:
            parts = [value]
        return [p.strip() for p in parts if p.strip() and p.strip() not in self.common]


def catalog_facets(catalog: Catalog, max_chars: int = 120) -> list[Facet]:
    """The catalog's categorical fields (every text field but the title whose values are short),
    with how to split each into tags:

    - values with commas: a category path (``"Industrial & Scientific,Tapes, Adhesives &
      Sealants"``): split on commas not followed by a space;
    - few distinct words recombined into more distinct values (genre lists such as ``"Comedy
      Romance"``): split on spaces;
    - otherwise (brands, years): the whole value.

    Tags carried by more than half of the items (a root category) say nothing and are dropped.
    """
    title = catalog.title_field
    facets = []
    items = list(catalog.items.values())
    for name in catalog.text_fields:
        if name == title:
            continue
        values = [row.get(name, "") for row in items]
        filled = sorted(len(v) for v in values if v)
        if not filled or filled[len(filled) // 2] > max_chars:
            continue  # a free-text field (descriptions)
        distinct = {v for v in values if v}
        words = {w for v in distinct for w in v.split()}
        if sum("," in v for v in distinct) > 0.3 * len(distinct):
            splitter = "commas"
        elif (
            len(words) <= 64 and len(words) < len(distinct) + 8 and any(" " in v for v in distinct)
        ):
            splitter = "words"
        else:
            splitter = "whole"
        facet = Facet(name, name.replace("_", " "), splitter)
        counts = Counter(t for v in values for t in set(facet.tags(v)))
        common = frozenset(t for t, n in counts.items() if n > len(items) / 2)
        facets.append(Facet(name, facet.label, splitter, common))
    return facets


def _ranked(counts: Counter) -> list[tuple[str, int]]:
    """Most common first, ties in alphabetical order: the same text in every process (string
    hashing, and so set order, differs between Python processes)."""
    return sorted(counts.items(), key=lambda tc: (-tc[1], tc[0]))


def _title_words(title: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(title) if w.lower() not in _STOP}


def metadata_rationale(
    catalog: Catalog, facets: Sequence[Facet], history: Sequence[str], target: str
) -> str:
    """A deterministic rationale from item metadata (see the module docstring).

    It never quotes the target's title; it names the facets the history and the target share,
    and title words the target shares with the history's items.
    """
    n = len(history)
    sentences = []
    shown: list[str] = []
    for facet in facets:
        counts = Counter(
            t for i in history for t in sorted(set(facet.tags(catalog.items[i][facet.name])))
        )
        top = [(t, c) for t, c in _ranked(counts)[:3] if c > 1 or n <= 2]
        if top:
            parts = ", ".join(f"{t} ({c} of {n})" for t, c in top)
            shown.append(f"{facet.label}: {parts}")
    if shown:
        sentences.append(f"Across the {n} items of the history, the recurring " + "; ".join(shown))
    recent = history[-3:]
    recent_tags = []
    for facet in facets:
        tags = [t for i in recent for t in facet.tags(catalog.items[i][facet.name])]
        recent_tags += [t for t, _ in _ranked(Counter(tags))[:2]]
    if recent_tags:
        sentences.append("The most recent items show " + ", ".join(dict.fromkeys(recent_tags)))
    shared, new = [], []
    for facet in facets:
        counts = Counter(
            t for i in history for t in sorted(set(facet.tags(catalog.items[i][facet.name])))
        )
        for t in facet.tags(catalog.items[target][facet.name]):
            (shared if counts[t] else new).append((facet.label, t, counts[t]))
    if shared:
        parts = ", ".join(f"{label} {t} (like {c} earlier items)" for label, t, c in shared)
        sentences.append(f"So the next item likely continues this: {parts}")
    if new:
        parts = ", ".join(f"{label} {t}" for label, t, _ in new)
        sentences.append(f"It may also bring something new: {parts}")
    words = _title_words(catalog.title(target))
    echoed = Counter(w for i in history for w in sorted(_title_words(catalog.title(i)) & words))
    if echoed:
        top = [w for w, _ in _ranked(echoed)[:3]]
        sentences.append("Earlier titles already mention " + ", ".join(f'"{w}"' for w in top))
    if not sentences:
        sentences.append(f"The history has {n} items with no shared metadata to go on")
    return ". ".join(sentences) + "."


# -- leakage -------------------------------------------------------------------------------------


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w]+", " ", text.lower()).split())


def leaks(rationale: str, target_title: str, target_sid: str | None = None) -> bool:
    """Whether ``rationale`` names the target verbatim: its SID text, or its title (compared on
    words, case and punctuation ignored; also without a trailing ``(year)``)."""
    if target_sid and target_sid in rationale:
        return True
    text = f" {_norm(rationale)} "
    titles = {_norm(target_title), _norm(re.sub(r"\s*\([^)]*\)\s*$", "", target_title))}
    return any(len(t) >= 4 and f" {t} " in text for t in titles)


# -- the on-disk cache ---------------------------------------------------------------------------


class RationaleCache:
    """Append-only JSONL of ``{"key", "rationale", ...}`` lines, one per finished request.

    Each line is written whole and flushed to disk (``fsync``) before the next, so a killed run
    loses at most the request in flight; a torn last line (killed mid-write) is cut off when the
    cache is opened again. Keys are content hashes (:func:`request_key`): the same request is
    never sent twice, and a changed prompt or teacher gets a new key.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.entries: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        if self.path.exists():
            data = self.path.read_bytes()
            keep = data.rfind(b"\n") + 1
            if keep < len(data):
                logger.warning("%s: dropping a torn last line (a killed write)", self.path)
                with open(self.path, "r+b") as f:
                    f.truncate(keep)
            for n, line in enumerate(data[:keep].decode("utf-8").splitlines(), 1):
                try:
                    entry = json.loads(line)
                    self.entries[entry["key"]] = entry
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise UserError(
                        f"{self.path}:{n}",
                        "is not a rationale cache line",
                        "point --cache at a cache recllm wrote, or delete the file",
                    ) from None

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, key: str) -> dict[str, Any] | None:
        return self.entries.get(key)

    def put(self, key: str, **fields: Any) -> None:
        entry = {"key": key, **fields}
        line = (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock:
            if key in self.entries:
                return
            with open(self.path, "ab") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            self.entries[key] = entry


def request_key(payload: dict[str, Any]) -> str:
    """Content hash of a request (sorted-key JSON, SHA-256, 24 hex digits)."""
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:24]


# -- the teacher -----------------------------------------------------------------------------


@dataclass
class TeacherConfig:
    """An OpenAI-compatible chat endpoint.

    Attributes:
        url: Base URL (``http://127.0.0.1:8000/v1``); ``/chat/completions`` is appended.
        model: The ``model`` field of requests.
        api_key_env: Environment variable holding the API key (unset: no key sent).
        max_tokens: Longest rationale, in tokens.
        temperature: Sampling temperature.
        concurrency: Requests in flight.
        retries: Attempts per request beyond the first (429, 5xx, timeouts, refused
            connections), with exponential backoff and jitter.
        timeout: Seconds per attempt.
    """

    url: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    max_tokens: int = 160
    temperature: float = 0.7
    concurrency: int = 8
    retries: int = 5
    timeout: float = 120.0
    backoff: float = 1.0

    def endpoint(self) -> str:
        base = self.url.rstrip("/")
        return base if base.endswith("/chat/completions") else base + "/chat/completions"


class TeacherError(RuntimeError):
    """A request the teacher refused for good (HTTP 4xx other than 429), or out of retries."""


def _post_chat(cfg: TeacherConfig, messages: list[dict[str, str]]) -> str:
    """One chat completion, retried; returns the answer text."""
    body = json.dumps(
        {
            "model": cfg.model,
            "messages": messages,
            "max_tokens": cfg.max_tokens,
            "temperature": cfg.temperature,
        }
    ).encode("utf-8")
    headers = {"Content-Type": "application/json"}
    key = os.environ.get(cfg.api_key_env or "", "")
    if key:
        headers["Authorization"] = f"Bearer {key}"
    last = ""
    for attempt in range(cfg.retries + 1):
        if attempt:
            delay = cfg.backoff * 2 ** (attempt - 1) * (0.5 + random.random())
            time.sleep(min(delay, 60.0))
        req = urllib.request.Request(cfg.endpoint(), data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=cfg.timeout) as resp:
                answer = json.loads(resp.read().decode("utf-8"))
            content = answer["choices"][0]["message"]["content"]
            if not isinstance(content, str):
                raise TeacherError(f"the answer has no text content: {str(answer)[:300]}")
            return content
        except urllib.error.HTTPError as e:
            detail = e.read().decode("utf-8", "replace")[:300]
            last = f"HTTP {e.code}: {detail}"
            if e.code != 429 and e.code < 500:
                raise TeacherError(f"{cfg.endpoint()} refused the request ({last})") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
            last = f"{type(e).__name__}: {e}"
        except (json.JSONDecodeError, KeyError, IndexError, TypeError) as e:
            raise TeacherError(f"{cfg.endpoint()}: not an OpenAI chat answer ({e})") from None
        logger.debug("teacher attempt %d failed: %s", attempt + 1, last)
    raise TeacherError(f"{cfg.endpoint()}: no answer after {cfg.retries + 1} attempts ({last})")


@dataclass
class TeacherAnswers:
    """What :func:`ask_teacher` got: per request its answer (None if the cache lost it) and
    its cache key, and how many were requested now or read from the cache."""

    answers: list[str | None]
    hashes: list[str]
    requested: int = 0
    cached: int = 0


def ask_teacher(
    requests: Sequence[list[dict[str, str]]],
    teacher: TeacherConfig,
    cache: RationaleCache,
    *,
    what: str,
    progress: bool = True,
    on_estimate: Callable[[str], None] | None = None,
) -> TeacherAnswers:
    """Ask ``teacher`` every chat request (message lists) not already in ``cache``.

    Identical requests are asked once (keyed by the hash of the whole request: model, messages,
    sampling settings). The first request runs alone; its latency gives the count/time estimate
    (logged and passed to ``on_estimate``) before the rest run ``teacher.concurrency`` at a time,
    each answer appended to the cache as it arrives, so a killed run resumes where it stopped.

    Raises:
        TeacherError: The teacher refused a request for good, or stayed unreachable.
    """
    from tqdm.auto import tqdm

    hashes = [
        request_key(
            {
                "model": teacher.model,
                "messages": messages,
                "max_tokens": teacher.max_tokens,
                "temperature": teacher.temperature,
            }
        )
        for messages in requests
    ]
    out = TeacherAnswers([None] * len(requests), hashes)
    first_of: dict[str, int] = {}
    for n, h in enumerate(hashes):
        first_of.setdefault(h, n)
    todo = [n for h, n in first_of.items() if h not in cache]
    out.cached = len(first_of) - len(todo)
    bar = tqdm(total=len(todo), desc="teacher", unit="req", disable=not progress)
    if todo:
        # One request first, alone: its latency gives the estimate printed before the rest.
        t0 = time.monotonic()
        cache.put(hashes[todo[0]], rationale=_post_chat(teacher, requests[todo[0]]))
        latency = time.monotonic() - t0
        out.requested += 1
        bar.update(1)
        rest = len(todo) - 1
        eta = rest * latency / max(1, teacher.concurrency)
        line = (
            f"teacher {teacher.model} at {teacher.endpoint()}: {what}, {out.cached} cached, "
            f"{len(todo)} to request; first answer took {latency:.1f}s, so about "
            f"{eta / 60:.1f} min at {teacher.concurrency} concurrent requests"
        )
        logger.info(line)
        if on_estimate:
            on_estimate(line)
        with concurrent.futures.ThreadPoolExecutor(teacher.concurrency) as pool:
            futures = {pool.submit(_post_chat, teacher, requests[n]): n for n in todo[1:]}
            try:
                for fut in concurrent.futures.as_completed(futures):
                    n = futures[fut]
                    cache.put(hashes[n], rationale=fut.result())
                    out.requested += 1
                    bar.update(1)
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
    bar.close()
    for n in range(len(requests)):
        entry = cache.get(hashes[n])
        out.answers[n] = entry["rationale"] if entry else None
    return out


# -- generation ------------------------------------------------------------------------------


@dataclass
class RationaleRun:
    """What :func:`generate_rationales` did."""

    rows: list[dict[str, Any]]
    requested: int = 0
    cached: int = 0
    leaked: int = 0
    empty: int = 0
    seconds: float = 0.0


def teacher_messages(
    renderer: Any, catalog: Catalog, history: Sequence[str], target: str, max_text_chars: int
) -> list[dict[str, str]]:
    """The teacher's chat request (``reason_teacher.jinja``): the history and the target."""
    from recllm.tasks.builders import ItemView, _cut

    fields = [f for f in catalog.text_fields if f != catalog.title_field]

    def view(i: str) -> ItemView:
        text = catalog.text(i, fields) if fields else ""
        return ItemView(i, "", _cut(catalog.title(i), 120), _cut(text, max_text_chars))

    user, _ = renderer.render(
        "reason_teacher", history=[view(i) for i in history], target=view(target)
    )
    return [{"role": "user", "content": user}]


def generate_rationales(
    examples: Sequence[Example],
    catalog: Catalog,
    *,
    source: str,
    sid_text: Callable[[str], str] | None = None,
    teacher: TeacherConfig | None = None,
    cache: RationaleCache | None = None,
    prompts_dir: str | os.PathLike[str] | None = None,
    max_text_chars: int = 200,
    progress: bool = True,
    on_estimate: Callable[[str], None] | None = None,
) -> RationaleRun:
    """One rationale per example (see the module docstring).

    Args:
        examples: Training examples (:func:`reason_examples`).
        catalog: Item titles and metadata.
        source: ``"metadata"`` or ``"teacher"``.
        sid_text: Item id -> its SID text, for the leakage filter (None: titles only).
        teacher: The endpoint (``source="teacher"``).
        cache: Where teacher answers are kept (``source="teacher"``; required there).
        prompts_dir: Folder with ``reason_teacher.jinja`` (default: the packaged templates).
        max_text_chars: Item text shown to the teacher per item.
        progress: Show a progress bar.
        on_estimate: Called with the count/time estimate line before the bulk of the work.

    Raises:
        UserError: Bad source or missing teacher settings.
        TeacherError: The teacher refused a request for good, or stayed unreachable.
    """

    from recllm.tasks.builders import TaskRenderer
    from recllm.tasks.config import PROMPTS_DIR

    if source not in SOURCES:
        raise UserError(
            "--source", f"{source!r} is not a rationale source", f"use one of {SOURCES}"
        )
    start = time.monotonic()
    run = RationaleRun(rows=[])
    texts: list[str | None] = [None] * len(examples)
    hashes: list[str] = [""] * len(examples)
    teacher_name = ""
    if source == "metadata":
        facets = catalog_facets(catalog)
        for n, ex in enumerate(examples):
            texts[n] = metadata_rationale(catalog, facets, ex.history, ex.target)
            hashes[n] = request_key({"v": METADATA_VERSION, "h": list(ex.history), "t": ex.target})
    else:
        if teacher is None or cache is None:
            raise UserError(
                "--source teacher", "needs --teacher-url and --teacher-model", "pass both"
            )
        teacher_name = teacher.model
        renderer = TaskRenderer(prompts_dir or PROMPTS_DIR)
        payloads = [
            teacher_messages(renderer, catalog, ex.history, ex.target, max_text_chars)
            for ex in examples
        ]
        asked = ask_teacher(
            payloads,
            teacher,
            cache,
            what=f"{len(examples)} examples",
            progress=progress,
            on_estimate=on_estimate,
        )
        texts, hashes = list(asked.answers), asked.hashes
        run.requested, run.cached = asked.requested, asked.cached

    for n, ex in enumerate(examples):
        text = _clean(texts[n] or "")
        if not text:
            run.empty += 1
            continue
        sid = sid_text(ex.target) if sid_text else None
        if leaks(text, catalog.title(ex.target), sid):
            run.leaked += 1
            continue
        run.rows.append(
            {
                "user_id": ex.user_id,
                "history": list(ex.history),
                "target": ex.target,
                "rationale": text,
                "source": source,
                "teacher": teacher_name,
                "prompt_hash": hashes[n],
            }
        )
    run.seconds = time.monotonic() - start
    return run


def _clean(text: str) -> str:
    """A teacher's answer as a rationale: think tags removed, whitespace collapsed per line."""
    text = re.sub(r"</?think>", " ", text)
    lines = [" ".join(line.split()) for line in text.strip().splitlines()]
    return "\n".join(line for line in lines if line)


def write_rationales(
    run: RationaleRun, out: str | os.PathLike[str], record: dict[str, Any]
) -> Path:
    """Save the rows as a ``datasets`` dataset at ``out`` (atomically: a temp directory renamed
    into place), with ``rationales.json`` (settings, counts, versions)."""
    import datasets

    from recllm.io import atomic_dir, write_json_atomic

    features = datasets.Features(
        {
            "user_id": datasets.Value("string"),
            "history": datasets.Sequence(datasets.Value("string")),
            "target": datasets.Value("string"),
            "rationale": datasets.Value("string"),
            "source": datasets.Value("string"),
            "teacher": datasets.Value("string"),
            "prompt_hash": datasets.Value("string"),
        }
    )
    columns = {c: [r[c] for r in run.rows] for c in COLUMNS}
    ds = datasets.Dataset.from_dict(columns, features=features)
    out = Path(out)
    with atomic_dir(out, overwrite=True) as tmp:
        ds.save_to_disk(str(tmp / "data"))
        write_json_atomic(tmp / "rationales.json", record)
    return out


def load_rationales(path: str | os.PathLike[str]) -> tuple[datasets.Dataset, dict[str, Any]]:
    """A dataset written by :func:`write_rationales` and its record.

    Raises:
        UserError: ``path`` is not such a directory.
    """
    import datasets

    path = Path(path)
    if not (path / "rationales.json").is_file() or not (path / "data").is_dir():
        raise UserError(
            str(path),
            "is not a rationale dataset (no rationales.json and data/)",
            "make one with: recllm reason generate --out DIR",
        )
    record = json.loads((path / "rationales.json").read_text())
    return datasets.load_from_disk(str(path / "data")), record


def examples_by_key(rows: Iterable[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Rows keyed by ``(user_id, target)``."""
    return {(r["user_id"], r["target"]): r for r in rows}
