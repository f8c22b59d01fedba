"""The list benchmark (``scripts/lists.py``): N-item lists scored against each user's next session
(issue 32 item 4).

The data is split by :func:`recllm.data.splits.next_session_split` (each user's last N items are
the test session, the N before the validation session, the rest trains; ``DataConfig.split:
session``, so the recipes train on the training part themselves). The recipe (``--kind chat``:
``recipes/plum_sft.py``; ``seqlm``: ``recipes/seqlm.py``, one decoder) trains two arms:

- the **next-item model**: the YAML as it is;
- the **slate model**: the same plus the session task (chat: ``mixture.rec_session`` and
  ``session_length`` N; seqlm: ``session_length`` N, windows of ``max_items + N`` items).

Rows, all on the same test users, each a list of N items:

- ``slate model (slate beam)``: the slate model, :func:`recllm.decode.slate.slate_search` (beam
  over slates, the best one) after the session prompt (chat: ``rec_session``; seqlm: the
  history's SIDs, which a slate continues);
- ``next-item model, top N beams``: constrained SID beam search, the N best beams;
- ``next-item model, slate beam (exclusion)``: ``slate_search`` on the next-item model after
  its ``rec`` prompt (the items already written excluded inside the constraint);
- ``... (spread)``, with ``spread_rows``: the two slate rows again with ``spread=True``: each
  item of a slate under its own first SID code (the items sharing a first code with one already
  in the slate are excluded inside the constraint too);
- ``slate model (slate beam, diversity penalty)``: the slate model with the soft form of spread
  (``diversity_penalty`` d), d chosen on a seeded sample of validation sessions
  (``valid_users``) among ``penalties`` and 0 by the issue's goal: the most set recall among
  the penalties whose slates are at least as diverse (SID diversity) as the next-item model's
  top N on the same validation users (none: the most diverse);
- ``SASRec top N`` (:mod:`recllm.baselines.sasrec`, trained on the same training part);
- ``popularity``: the training part's N most frequent items.

Figures (:func:`recllm.eval.lists.list_metrics`): set Recall@N and NDCG@N against the session,
SID diversity (distinct first-level codes / N), category diversity (distinct genre / category
tags / N, where the catalog has a categorical field), repeat rate (share of list slots holding
an item of the user's history).
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recllm.bench.scoring import ScoreCache, digest, model_fingerprint
from recllm.data.splits import Example, SessionExample, SessionSplit
from recllm.data.types import Catalog

logger = logging.getLogger(__name__)

__all__ = [
    "ListsSettings",
    "category_tags",
    "full_histories",
    "plot",
    "run",
    "sasrec_top",
    "shared_teacher",
    "slate_lists",
    "table",
]

RECIPES = {"chat": "plum_sft.py", "seqlm": "seqlm.py"}
ROW_SLATE = "slate model (slate beam)"
ROW_TOP = "next-item model, top N beams"
ROW_EXCL = "next-item model, slate beam (exclusion)"
ROW_SLATE_SPREAD = "slate model (slate beam, spread)"
ROW_EXCL_SPREAD = "next-item model, slate beam (spread)"
ROW_SLATE_PENALTY = "slate model (slate beam, diversity penalty)"
ROW_SASREC = "SASRec top N"
ROW_POP = "popularity"


@dataclasses.dataclass
class ListsSettings:
    """One list-benchmark run (the flags of ``scripts/lists.py``)."""

    kind: str  # "chat" (recipes/plum_sft.py) or "seqlm" (recipes/seqlm.py)
    config: Path
    out: Path
    data: str | None = None
    max_users: int | None = None
    n: int = 5
    users: int = 0
    seed: int = 0
    beams: int = 10
    batch_size: int = 16
    session_weight: float = 1.0
    sasrec_minutes: float = 5.0
    penalties: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
    valid_users: int = 200
    spread_rows: bool = False
    recipe_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        from recllm.errors import UserError

        if self.kind not in RECIPES:
            raise UserError("--kind", f"{self.kind!r} is not one of {sorted(RECIPES)}", "pick one")
        if self.n < 1:
            raise UserError("--n", f"must be >= 1, got {self.n}", "pass 1 or more")
        if self.beams < self.n:
            raise UserError(
                "--beams",
                f"{self.beams} beams cannot hold the next-item model's top {self.n}",
                f"pass --beams {self.n} or more",
            )
        if any(not 0 < d < float("inf") for d in self.penalties) or self.valid_users < 0:
            raise UserError(
                "--penalties / --valid-users",
                f"need finite penalties > 0 and valid users >= 0, got {list(self.penalties)} "
                f"and {self.valid_users}",
                "pass e.g. --penalties 0.5 1 2 4 --valid-users 200 (--penalties with no value: "
                "no penalty row)",
            )
        if self.session_weight <= 0:
            raise UserError(
                "--session-weight",
                "the slate model needs the session task (weight > 0)",
                "pass a weight such as 1.0",
            )


def full_histories(split: SessionSplit, sessions: Sequence[SessionExample]) -> list[list[str]]:
    """Each test user's whole history before the test session (training part + validation
    session), uncut: what the repeat rate checks against."""
    valid = {v.user_id: v.session for v in split.valid_sessions}
    return [
        list(split.train.sequences.get(s.user_id, [])) + list(valid.get(s.user_id, ()))
        for s in sessions
    ]


def category_tags(catalog: Catalog) -> tuple[str | None, dict[str, list[str]] | None]:
    """``(field, item -> tags)`` of the catalog's first categorical field that splits into tags
    (genre lists, category paths: :func:`recllm.tasks.reasoning.catalog_facets`); ``(None,
    None)`` when it has none (the Beauty P5 texts)."""
    from recllm.tasks.reasoning import catalog_facets

    for facet in catalog_facets(catalog):
        if facet.splitter == "whole":  # brands, years: one value, not categories
            continue
        tags = {i: list(facet.tags(catalog.items[i].get(facet.name, ""))) for i in catalog.ids}
        return facet.name, tags
    return None, None


def slate_lists(
    cache: ScoreCache,
    name: str,
    model_dir: str | Path,
    sessions: Sequence[SessionExample],
    catalog: Catalog,
    *,
    n: int,
    prompt: str,
    beams: int = 10,
    batch_size: int = 16,
    spread: bool = False,
    diversity_penalty: float = 0.0,
) -> list[list[str]]:
    """Each user's best slate of ``n`` distinct items (:func:`recllm.decode.slate.slate_search`,
    mode ``beam``, ``beams`` wide; ``spread``: each item under its own first code;
    ``diversity_penalty``: its soft form), cached under ``name``.

    Args:
        prompt: ``"session"`` (the session task's prompt: a chat model's ``rec_session``, a
            SID-sequence model's history) or ``"rec"`` (the next-item prompt).
    """
    if prompt not in ("session", "rec"):
        raise ValueError(f"prompt must be 'session' or 'rec', got {prompt!r}")
    key = {
        "model": model_fingerprint(model_dir),
        "users": digest([(list(s.history), list(s.session)) for s in sessions]),
        "n": n,
        "beams": beams,
        "prompt": prompt,
        **({"spread": True} if spread else {}),  # (older caches: no spread)
        **({"diversity_penalty": diversity_penalty} if diversity_penalty else {}),
    }

    def compute() -> dict:
        import torch
        from tqdm.auto import tqdm

        from recllm.decode import SIDTrie, encode_prompts, left_pad
        from recllm.decode.slate import slate_search
        from recllm.tasks.prompting import PromptSpec, build_prompts, task_builder
        from recllm.vocab import SID_FORMAT, load_model_with_sids

        start = time.perf_counter()
        model, tok, sid_map = load_model_with_sids(model_dir)
        model.eval()
        spec = PromptSpec.from_model_dir(model_dir)
        trie = SIDTrie.from_sid_map(sid_map, SID_FORMAT.token_ids(tok, sid_map.codebook_sizes))
        examples = [Example(s.user_id, s.history, s.session[0]) for s in sessions]
        if prompt == "session" and spec.style == "chat":
            builder = task_builder(spec, sid_map, catalog)
            builder.config = dataclasses.replace(builder.config, session_length=n)
            cut = spec.max_history
            prompts = [
                builder.session_prompt(list(ex.history[-cut:] if cut else ex.history))
                for ex in examples
            ]
        else:  # the rec prompt; a SID-sequence model's session prompt is the same history
            prompts = build_prompts(spec, examples, sid_map, catalog)
        encoded = encode_prompts(tok, prompts)
        stop = None if spec.style == "sid_sequence" else tok.eos_token_id
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        found: list[list[str]] = []
        for s in tqdm(range(0, len(encoded), batch_size), desc=f"slates ({name})"):
            ids, mask = left_pad(encoded[s : s + batch_size], pad, model.device)
            with torch.inference_mode():
                out = slate_search(
                    model,
                    ids,
                    mask,
                    trie,
                    n=n,
                    mode="beam",
                    num_beams=beams,
                    num_return_sequences=1,
                    stop_token_id=stop,
                    spread=spread,
                    diversity_penalty=diversity_penalty,
                )
            for row in out.items[:, 0].tolist():
                found.append([sid_map.item_ids[i] for i in row if i >= 0])
        del model
        gc.collect()
        return {"lists": found, "seconds": round(time.perf_counter() - start, 1)}

    return cache.get_or_compute(name, key, compute)["lists"]


def shared_teacher(arm_dir: Path, args: Sequence[str]) -> Path | None:
    """The SASRec teacher the next-item arm trained into ``arm_dir/teacher``, for the slate arm
    to reuse (both arms train on the same training part, so a second one would be the same
    model again, minutes later); None when the arm has none or ``args`` name a teacher."""
    from recllm.train.distill_args import TEACHER_DIR

    teacher = arm_dir / TEACHER_DIR
    named = any(a == "--teacher" or a.startswith("--teacher=") for a in args)
    if named or not teacher.is_dir():
        return None
    return teacher.resolve()


def sasrec_top(
    split: SessionSplit, catalog: Catalog, histories: Sequence[Sequence[str]], n: int, **cfg: Any
) -> tuple[list[list[str]], dict]:
    """SASRec trained on ``split``'s training part (epoch chosen on its validation targets,
    the validation sessions' first items), each history's top ``n``: (lists, info).

    ``cfg``: :class:`~recllm.baselines.sasrec.SASRecConfig` fields.
    """
    import torch

    from recllm.baselines.sasrec import SASRecConfig, score_histories, train_sasrec

    t = time.monotonic()
    config = SASRecConfig(**cfg)
    model, history = train_sasrec(split, catalog.ids, config, progress=False)
    model.eval()
    out: list[list[str]] = []
    with torch.no_grad():
        for start in range(0, len(histories), 256):
            scores = score_histories(model, histories[start : start + 256])
            for row in scores.topk(n, dim=1).indices.tolist():
                out.append([model.item_ids[j] for j in row])
    return out, {"minutes": round((time.monotonic() - t) / 60, 2), "epochs": len(history)}


def table(rows: dict[str, dict[str, Any]], n: int) -> str:
    """The markdown table of the rows."""
    from recllm.bench.report import markdown_table

    header = [
        "row",
        f"set R@{n}",
        f"N@{n}",
        "SID diversity",
        "category diversity",
        "repeat rate",
        "note",
    ]
    lines = [
        [
            name,
            f.get(f"recall@{n}"),
            f.get(f"ndcg@{n}"),
            f.get("sid_diversity"),
            f.get("category_diversity"),
            f.get("repeat_rate"),
            f.get("note", ""),
        ]
        for name, f in rows.items()
    ]
    return markdown_table(header, lines)


def plot(rows: dict[str, dict[str, Any]], path: str | Path, title: str, n: int) -> Path:
    """Set Recall@N over SID diversity, one point per row (named in the legend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from recllm.bench.report import save_png

    fig, ax = plt.subplots(figsize=(7, 5.5))
    for name, f in rows.items():
        if f.get(f"recall@{n}") is None or f.get("sid_diversity") is None:
            continue
        x, y = f["sid_diversity"], f[f"recall@{n}"]
        ax.scatter([x], [y], s=50, label=name)
    ax.set_xlabel(f"SID diversity (distinct first-level codes / {n})")
    ax.set_ylabel(f"set Recall@{n} against the next session")
    ax.set_xlim(0, 1.05)
    ax.set_ylim(bottom=0)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    # below the axes: inside, it covered points that sit near the top left
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    fig.tight_layout()
    return save_png(fig, path)


def choose_penalty(tried: dict[float, dict[str, float]], floor: float, n: int) -> float:
    """The penalty of the goal's rule: the most set Recall@N among those whose SID diversity is
    at least ``floor`` (the next-item model's top N on the same users); none: the most diverse.
    Ties go to the smaller penalty."""
    ok = [d for d, f in tried.items() if f["sid_diversity"] >= floor]
    if ok:
        return max(sorted(ok), key=lambda d: tried[d][f"recall@{n}"])
    return max(sorted(tried), key=lambda d: tried[d]["sid_diversity"])


def _round(figures: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()}


def run(s: ListsSettings, root: Path) -> dict[str, Any]:
    """Split, train both arms, decode every row's lists, score them.

    Args:
        s: The settings.
        root: The repository root (where ``recipes/`` is).

    Returns:
        The summary: sizes, settings, minutes and one figures dict per row.
    """
    from recllm.bench.arms import train_arm
    from recllm.bench.cold_start import _data_config, model_lists, popularity_lists
    from recllm.data import load_rec_dataset, split_dataset
    from recllm.eval.lists import list_metrics, paired_lists
    from recllm.eval.run import select_users
    from recllm.sid.sidmap import FILENAME, SIDMap

    out = Path(s.out)
    out.mkdir(parents=True, exist_ok=True)
    data_cfg, overrides = _data_config(s)
    overrides.update(split="session", split_session_length=s.n)
    data_cfg = dataclasses.replace(data_cfg, split="session", split_session_length=s.n)
    dataset = load_rec_dataset(config=data_cfg)
    split = split_dataset(dataset, data_cfg)
    if not isinstance(split, SessionSplit):  # split_dataset ignored split="session"
        raise TypeError(f"expected a next-session split, got {type(split).__name__}")
    catalog = dataset.catalog
    sessions = select_users(split.test_sessions, s.users, seed=s.seed)
    if s.kind == "seqlm":
        overrides["ensemble"] = 1  # one decoder per arm
    recipe = root / "recipes" / RECIPES[s.kind]
    args = list(s.recipe_args)
    info: dict[str, Any] = {}
    t = time.monotonic()
    base = train_arm(recipe, out / "next_item", config=s.config, overrides=overrides, args=args)
    slate_overrides: dict[str, Any] = {**overrides, "session_length": s.n}
    shared = shared_teacher(out / "next_item", args)
    if shared is not None:  # one SASRec teacher for both arms: the same training part
        slate_overrides["teacher"] = str(shared)
        info["shared_teacher"] = str(shared)
    if s.kind == "chat":
        slate_overrides["mixture"] = {"rec_session": s.session_weight}
    slate = train_arm(recipe, out / "slate", config=s.config, overrides=slate_overrides, args=args)
    info["train_minutes"] = {"next_item": round(base.minutes, 1), "slate": round(slate.minutes, 1)}
    logger.info("arms ready in %.1f min", (time.monotonic() - t) / 60)

    cache = ScoreCache(out / "scores")
    n = s.n
    decode = {"beams": s.beams, "batch_size": s.batch_size}
    lists: dict[str, list[list[str]]] = {}
    notes: dict[str, str] = {}
    lists[ROW_SLATE] = slate_lists(
        cache, "slate", slate.model_dir, sessions, catalog, n=n, prompt="session", **decode
    )
    notes[ROW_SLATE] = f"session task in training; best of {s.beams} slate beams"
    examples = [Example(x.user_id, x.history, x.session[0]) for x in sessions]
    top = model_lists(cache, "next_item_top", base.model_dir, examples, catalog, **decode)
    lists[ROW_TOP] = [row[:n] for row in top]
    notes[ROW_TOP] = f"beam {s.beams}, the {n} best beams"
    lists[ROW_EXCL] = slate_lists(
        cache, "next_item_slate", base.model_dir, sessions, catalog, n=n, prompt="rec", **decode
    )
    notes[ROW_EXCL] = "the next-item prompt; slate items excluded inside the constraint"
    if s.spread_rows:
        lists[ROW_SLATE_SPREAD] = slate_lists(
            cache,
            "slate_spread",
            slate.model_dir,
            sessions,
            catalog,
            n=n,
            prompt="session",
            spread=True,
            **decode,
        )
        notes[ROW_SLATE_SPREAD] = "as the slate model's row, each item under its own first code"
        lists[ROW_EXCL_SPREAD] = slate_lists(
            cache,
            "next_item_slate_spread",
            base.model_dir,
            sessions,
            catalog,
            n=n,
            prompt="rec",
            spread=True,
            **decode,
        )
        notes[ROW_EXCL_SPREAD] = "the next-item prompt; each item under its own first code"
    sid_map = SIDMap.load(Path(base.model_dir) / FILENAME)
    first_code = {i: int(sid_map.code(i)[0]) for i in sid_map.item_ids}
    tag_field, tags = category_tags(catalog)
    if s.penalties and s.valid_users:
        valid = select_users(split.valid_sessions, s.valid_users, seed=s.seed)
        valid_histories = [list(split.train.sequences.get(v.user_id, [])) for v in valid]

        def score(got: list[list[str]]) -> dict[str, float]:
            truth = [v.session for v in valid]
            return list_metrics(got, truth, valid_histories, n, first_code=first_code)

        vex = [Example(v.user_id, v.history, v.session[0]) for v in valid]
        top_valid = model_lists(
            cache, "valid_next_item_top", base.model_dir, vex, catalog, **decode
        )
        floor = score([row[:n] for row in top_valid])["sid_diversity"]
        tried: dict[float, dict[str, float]] = {}
        for d in (0.0, *s.penalties):
            got = slate_lists(
                cache, f"valid_slate_d{d:g}", slate.model_dir, valid, catalog, n=n,
                prompt="session", diversity_penalty=d, **decode,
            )  # fmt: skip
            tried[d] = {k: round(v, 4) for k, v in score(got).items() if v is not None}
        chosen = choose_penalty(tried, floor, n)
        info["penalty"] = {
            "valid_users": len(valid),
            "next_item_top_sid_diversity": round(floor, 4),
            "tried": {f"{d:g}": f for d, f in tried.items()},
            "chosen": chosen,
        }
        lists[ROW_SLATE_PENALTY] = slate_lists(
            cache, f"slate_d{chosen:g}", slate.model_dir, sessions, catalog, n=n,
            prompt="session", diversity_penalty=chosen, **decode,
        )  # fmt: skip
        notes[ROW_SLATE_PENALTY] = (
            f"diversity penalty {chosen:g}, chosen on {len(valid)} validation sessions"
        )
    histories = full_histories(split, sessions)
    sas, info["sasrec"] = sasrec_top(
        split,
        catalog,
        [list(x.history) for x in sessions],
        n,
        time_budget_minutes=s.sasrec_minutes,
        seed=s.seed,
    )
    lists[ROW_SASREC] = sas
    notes[ROW_SASREC] = "item ids, full softmax; the prompt's history"
    lists[ROW_POP] = [row[:n] for row in popularity_lists(split, len(sessions))]
    notes[ROW_POP] = "training counts"

    rows: dict[str, dict[str, Any]] = {}
    for name, got in lists.items():
        figures = list_metrics(
            got,
            [x.session for x in sessions],
            histories,
            n,
            first_code=first_code,
            tags=tags,
        )
        short = sum(len(g) < n for g in got)
        rows[name] = {**_round(figures), "short_lists": short, "note": notes[name]}
    # the goal's comparison, user by user: every recllm list row against the next-item top N
    truth = [x.session for x in sessions]
    info["paired_vs_next_item_top"] = {
        name: paired_lists(lists[ROW_TOP], got, truth, n, first_code=first_code)
        for name, got in lists.items()
        if name not in (ROW_TOP, ROW_SASREC, ROW_POP)
    }
    return {
        "kind": s.kind,
        "config": str(s.config),
        "data": data_cfg.data_path,
        "n": n,
        "items": len(catalog),
        "test_users": len(sessions),
        "split_users": len(split.test_sessions),
        "skipped_users": split.skipped_users,
        "category_field": tag_field,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(s).items()},
        **info,
        "rows": rows,
    }
