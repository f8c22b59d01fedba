"""``recllm recommend``: one answer from a model directory, for a history or a test user.

recllm recommend --model DIR --history 50,172,181              # the top 10 next items
recllm recommend --model DIR --user 196 --slate 5              # a slate of 5 distinct items
recllm recommend --model DIR --history 50,172 --slate 5 --slate-mode greedy --exclude-history --json

Without ``--slate`` the answer is the next-item ranking (:meth:`Recommender.recommend`: the top
``--k`` beams, one SID each). With ``--slate N`` it is ONE answer of ``N`` distinct items
(:meth:`Recommender.recommend_slate`: each item chosen knowing the ones before it, the slate's
items excluded inside the SID constraint), printed with its joint log-prob. The output is a
table (position, item id, title, SID, score) or, with ``--json``, one JSON object.

Every check that needs no model (the history's ids, ``--slate`` against the catalog size and
the filters, sampled slates on vLLM, the test user) runs before the model loads: a typo costs
no engine start.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from recllm.cli.args import _flag, _fraction, _non_negative, _positive, add_decoding_args
from recllm.errors import UserError, clip

if TYPE_CHECKING:
    from recllm.decode.generate import Recommendation
    from recllm.sid.sidmap import SIDMap

__all__ = ["add_parsers", "cmd_recommend", "user_history"]

#: Default ``--k`` of a next-item ranking.
DEFAULT_K = 10
#: Widest title shown in the table (longer ones end with "...").
TITLE_WIDTH = 48


def _ids(values: Sequence[str] | None) -> list[str] | None:
    """Item ids from flag values, each comma- or space-separated (``50,172 181``)."""
    if values is None:
        return None
    return [t for v in values for t in re.split(r"[\s,]+", v) if t]


def user_history(
    model_dir: str, data: str | None, user: str, *, allow_other_data: bool = False
) -> list[str]:
    """The history of test user ``user`` of the split the model records (``data`` overrides it).

    Raises:
        UserError: ``user`` is not a test user (the message names ``--user`` and some ids).
    """
    from recllm.eval.run import eval_examples

    _, _, examples = eval_examples(model_dir, data, "test", 0, allow_other_data=allow_other_data)
    by_user = {ex.user_id: ex for ex in examples}
    if user not in by_user:
        some = ", ".join(list(by_user)[:5])
        raise UserError(
            f"--user {user}",
            "is not a test user of the model's data",
            f"pass one of its user ids (e.g. {some})",
        )
    return list(by_user[user].history)


def _check_ids(flag: str, ids: list[str], sid_map: SIDMap) -> None:
    unknown = [i for i in dict.fromkeys(ids) if i not in sid_map]
    if unknown:
        example = ",".join(sid_map.item_ids[:3])
        more = " ..." if len(unknown) > 5 else ""
        raise UserError(
            flag,
            f"unknown item ids [{', '.join(clip(i) for i in unknown[:5])}]{more}: not in the "
            f"catalog of {len(sid_map)} items this model was trained on",
            f"pass item ids of that catalog, comma-separated (e.g. {flag} {example})",
        )


def _request(args: argparse.Namespace) -> tuple[list[str], int]:
    """The checked history and the number of items to answer, before any model loads.

    Raises:
        UserError: Naming the flag at fault and the fix.
    """
    from recllm.vocab.checkpoint import load_tokenizer_with_sids

    slate = args.slate is not None
    if args.k is not None and slate:
        raise UserError(
            f"--k {args.k}", "a slate's size is --slate N", "drop --k (or drop --slate)"
        )
    if not slate:
        for flag, given in (
            ("--slate-mode", args.slate_mode is not None),
            ("--seed", args.seed is not None),
            ("--temperature", args.temperature is not None),
            ("--slate-spread", args.slate_spread),
            ("--slate-diversity-penalty", args.slate_diversity_penalty is not None),
        ):
            if given:
                raise UserError(flag, "applies to slates only", "add --slate N, or drop it")
    if slate and args.slate_mode == "sample" and args.engine == "vllm":
        raise UserError(
            "--slate-mode sample",
            "sampled slates run on the transformers engine only for now (vLLM decodes beam "
            "and greedy slates)",
            "use --slate-mode beam or greedy, or --engine hf",
        )
    history = _ids(args.history) or []
    if args.user is None and not history:
        raise UserError(
            "--history / --user",
            "no history to recommend from",
            "pass --history ID,ID,... (item ids, oldest first) or --user U (a test user of "
            "the model's data)",
        )
    _, sid_map = load_tokenizer_with_sids(args.model)
    _check_ids("--history", history, sid_map)
    exclude, allow = _ids(args.exclude), _ids(args.allow)
    for flag, ids in (("--exclude", exclude), ("--allow", allow)):
        if ids is not None:
            _check_ids(flag, ids, sid_map)
    if args.user is not None:
        history = (
            user_history(args.model, args.data, args.user, allow_other_data=args.allow_other_data)
            + history
        )
    want = args.slate if slate else (args.k or DEFAULT_K)
    flag = f"--slate {want}" if slate else f"--k {want}"
    if want > len(sid_map):
        raise UserError(
            flag,
            f"asks for more items than the catalog's {len(sid_map)}",
            f"ask for {flag.split()[0]} <= {len(sid_map)}",
        )
    free = set(sid_map.item_ids) if allow is None else set(allow)
    free -= set(exclude or ())
    if args.exclude_history:
        free -= set(history)
    if len(free) < want:
        raise UserError(
            flag,
            f"only {len(free)} items are left after --allow / --exclude / --exclude-history",
            f"ask for {flag.split()[0]} <= {len(free)}, or filter out fewer items",
        )
    return history, want


def cmd_recommend(args: argparse.Namespace) -> int:
    """``recllm recommend`` (see the module docstring)."""
    import os

    from recllm.apps.recommender import Recommender

    history, want = _request(args)
    # stdout holds the answer alone (``--json`` is read by programs); vLLM logs to stdout unless
    # told otherwise, so its log joins ours on stderr
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    beams = args.beams or 0
    rec = Recommender.from_pretrained(
        args.model,
        engine=args.engine,
        data=args.data,
        max_k=max(want, beams, 50),
        allow_other_data=args.allow_other_data,
    )
    exclude, allow = _ids(args.exclude), _ids(args.allow)
    if args.slate is None:
        items = rec.recommend(
            history,
            want,
            num_beams=args.beams,
            exclude=exclude,
            allow=allow,
            exclude_history=args.exclude_history,
        )
        answer: dict[str, Any] = {"object": "ranking", "k": want}
        score = None
    else:
        mode = args.slate_mode or "beam"
        slate = rec.recommend_slate(
            history,
            want,
            mode=mode,
            num_beams=args.beams,
            exclude=exclude,
            allow=allow,
            exclude_history=args.exclude_history,
            temperature=1.0 if args.temperature is None else args.temperature,
            seed=0 if args.seed is None else args.seed,
            spread=args.slate_spread,
            diversity_penalty=args.slate_diversity_penalty or 0.0,
        )
        items, score = slate.items, slate.score
        answer = {"object": "slate", "n": want, "mode": mode, "score": score}
        if args.slate_spread:
            answer["spread"] = True
        if args.slate_diversity_penalty:
            answer["diversity_penalty"] = args.slate_diversity_penalty
    rows = _rows(items, rec.sid_map)
    if args.json:
        print(json.dumps({**answer, "history": history, "items": rows}, ensure_ascii=False))
    else:
        print(format_table(rows))
        if score is not None:
            print(f"slate of {want} distinct items ({answer['mode']}): joint log-prob {score:.4f}")
    return 0


def _rows(items: Sequence[Recommendation], sid_map: SIDMap) -> list[dict[str, Any]]:
    from recllm.vocab import SID_FORMAT

    return [
        {
            "position": n,
            "item_id": r.item_id,
            "title": r.title,
            "sid": SID_FORMAT.render(sid_map.code(r.item_id)),
            "score": r.score,
        }
        for n, r in enumerate(items, 1)
    ]


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The answer as aligned text columns: #, item, title, SID, score."""

    def title(text: str | None) -> str:
        text = text or ""
        return text if len(text) <= TITLE_WIDTH else text[: TITLE_WIDTH - 3] + "..."

    cells = [("#", "item", "title", "SID", "score")] + [
        (str(r["position"]), r["item_id"], title(r["title"]), r["sid"], f"{r['score']:.4f}")
        for r in rows
    ]
    widths = [max(len(row[c]) for row in cells) for c in range(5)]
    lines = []
    for row in cells:
        left = [row[c].ljust(widths[c]) for c in (1, 2, 3)]
        lines.append("  ".join([row[0].rjust(widths[0]), *left, row[4].rjust(widths[4])]))
    return "\n".join(line.rstrip() for line in lines)


def add_parsers(sub: Any) -> None:
    """``recllm recommend``."""
    r = sub.add_parser(
        "recommend",
        help="one answer from a model: the top k next items, or a slate of N distinct items",
        description="Recommend from a model directory for a history (--history) or a test user "
        "(--user): the top --k next items, or with --slate N one slate of N distinct items "
        "decoded as one answer (each item chosen knowing the ones before it), with its joint "
        "log-prob. Prints a table, or JSON with --json.",
    )
    r.add_argument("--model", required=True, help="model directory (e.g. outputs/quickstart/model)")
    r.add_argument("--data", default=None, help="dataset (default: the model's)")
    _flag(
        r,
        "allow_other_data",
        action="store_true",
        help="recommend over --data although it is not the data the model records",
    )
    r.add_argument(
        "--history",
        nargs="+",
        default=None,
        metavar="ID,ID,...",
        help="item ids the user interacted with, oldest first (comma- or space-separated)",
    )
    r.add_argument(
        "--user", default=None, help="a test user of the model's data: start from its history"
    )
    r.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    decoding = add_decoding_args(r, engines=("hf", "vllm"), engine="hf", k="picks", k_default=None)
    decoding.add_argument(
        "--beams",
        type=_positive,
        default=None,
        help="beam width (default: k for a ranking, max(N, 4) for a slate; greedy uses 1)",
    )
    decoding.add_argument(
        "--slate",
        type=_positive,
        default=None,
        metavar="N",
        help="answer one slate of N distinct items instead of the top k",
    )
    _flag(
        decoding,
        "slate_mode",
        choices=("beam", "greedy", "sample"),
        default=None,
        help="how the slate is decoded: beam search over slates by joint log-prob (default), "
        "greedy, or sample (transformers engine only; the best of --beams draws)",
    )
    decoding.add_argument(
        "--slate-spread",
        action="store_true",
        help="each item of the slate under its own first SID code (a more varied slate)",
    )
    decoding.add_argument(
        "--slate-diversity-penalty",
        type=_fraction(0.0, 1e4),
        default=None,
        metavar="D",
        help="the soft form of --slate-spread: slates ranked by log-prob minus D for every item "
        "that shares an earlier item's first SID code (default: off)",
    )
    decoding.add_argument(
        "--seed", type=_non_negative, default=None, help="seed of a sampled slate (default 0)"
    )
    decoding.add_argument(
        "--temperature",
        type=_fraction(1e-3, 100.0),
        default=None,
        help="temperature of a sampled slate (default 1.0)",
    )
    _flag(
        decoding,
        "exclude_history",
        action="store_true",
        help="never recommend an item of the history (excluded inside the SID constraint)",
    )
    decoding.add_argument(
        "--exclude", nargs="+", default=None, metavar="ID,...", help="item ids never to recommend"
    )
    decoding.add_argument(
        "--allow",
        nargs="+",
        default=None,
        metavar="ID,...",
        help="the only item ids to recommend",
    )
    r.set_defaults(func=cmd_recommend)
