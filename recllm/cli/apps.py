"""``recllm chat`` (a terminal conversation, :class:`recllm.apps.chat.ChatSession`) and
``recllm playground`` (the web page, :mod:`recllm.apps.playground`): the interactive faces.

Both decode with the shared decoding options (:func:`recllm.cli.args.add_decoding_args`).
"""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING, Any

from recllm.cli.args import _flag, _positive, add_decoding_args

if TYPE_CHECKING:
    from rich.console import Console

    from recllm.apps.chat import ChatReply, ChatSession

HELP = """\
Type a message to get recommendations. Commands:
  /add ID or WORDS   add an item you liked (its id, or words of its title)
  /search WORDS      find catalog items by title
  /accept N          take pick N of the last answer: it joins your history
  /history           the items you liked, oldest first
  /k N               picks per answer
  /slate [N]         N distinct picks decoded as one slate (default: k), none seen before
  /think on|off      think before answering (models trained to think)
  /reset             forget the conversation and the history
  /help              this text
  /quit              leave (Ctrl-D too)"""


def _session(args: argparse.Namespace) -> ChatSession:
    from recllm.apps.chat import ChatSession
    from recllm.apps.recommender import Recommender

    history = list(args.history or [])
    if args.user is not None:  # before the model loads: a wrong id costs no wait
        from recllm.cli.recommend import user_history

        history = (
            user_history(args.model, args.data, args.user, allow_other_data=args.allow_other_data)
            + history
        )
    rec = Recommender.from_pretrained(
        args.model,
        engine=args.engine,
        data=args.data,
        max_k=max(args.k, 50),
        allow_other_data=args.allow_other_data,
    )
    return ChatSession(rec, history, k=args.k, think=args.think)


def _render(console: Console, session: ChatSession, reply: ChatReply) -> None:
    from rich.table import Table
    from rich.text import Text

    from recllm.vocab import SID_FORMAT

    if reply.rationales:
        for n, r in enumerate(reply.rationales, 1):
            console.print(Text(f"thought {n}: {r}", style="dim"))
    if reply.mode == "dialogue":
        text, at = Text(), 0
        for span in reply.spans:
            text.append(reply.reply[at : span.start])
            style = "bold green" if span.match == "exact" else "yellow"
            text.append(f"[{span.label}]", style=style)
            at = span.end
        text.append(reply.reply[at:])
        console.print(Text("model: ", style="bold") + text)
    elif reply.mode == "history":
        console.print(Text(reply.reply, style="italic"))
    title = f"top {len(reply.picks)} ({reply.seconds:.2f} s)"
    if reply.score is not None:
        title = (
            f"slate of {len(reply.picks)}, joint log-prob {reply.score:.3f} ({reply.seconds:.2f} s)"
        )
    table = Table(title=title, title_justify="left")
    for col in ("#", "title", "item", "SID", "score"):
        table.add_column(col, justify="right" if col in ("#", "score") else "left")
    for n, p in enumerate(reply.picks, 1):
        code = SID_FORMAT.render(session.rec.sid_map.code(p.item_id))
        table.add_row(str(n), p.title or "", p.item_id, code, f"{p.score:.3f}")
    console.print(table)


def _command(console: Console, session: ChatSession, line: str) -> bool:
    """Run one /command; False when the user leaves."""
    name, _, rest = line[1:].partition(" ")
    rest = rest.strip()
    if name in ("quit", "exit", "q"):
        return False
    if name == "help":
        console.print(HELP, markup=False)
    elif name == "history":
        if not session.history:
            console.print("(empty: /add an item you liked)")
        for n, item in enumerate(session.history, 1):
            console.print(f"{n:>3}. {session.rec.catalog.title(item)} ({item})", markup=False)
    elif name == "reset":
        session.reset()
        console.print("conversation and history cleared")
    elif name == "k":
        if not rest.isdigit():
            raise ValueError(f"/k takes a number, got {rest!r}; Fix: e.g. /k 5")
        session.set_k(int(rest))
        console.print(f"k = {session.k}")
    elif name == "slate":
        if rest and not rest.isdigit():
            raise ValueError(
                f"/slate takes a number, got {rest!r}; Fix: e.g. /slate 5 (or /slate for k)"
            )
        _render(console, session, session.slate(int(rest) if rest else None))
    elif name == "think":
        if rest not in ("on", "off"):
            raise ValueError(f"/think takes on or off, got {rest!r}; Fix: /think on or /think off")
        session.set_think(rest == "on")
        console.print(f"thinking {rest}")
    elif name == "accept":
        if not rest.isdigit():
            raise ValueError(f"/accept takes a pick number, got {rest!r}; Fix: e.g. /accept 1")
        item = session.accept(int(rest))
        console.print(f"added {session.rec.catalog.title(item)} ({item}) to your history")
    elif name in ("add", "search"):
        if not rest:
            raise ValueError(
                f"/{name} needs an item id or words of a title; Fix: e.g. /{name} star wars"
            )
        if name == "add" and rest in session.rec.sid_map:
            console.print(f"added {session.add(rest)} ({rest})", markup=False)
            return True
        hits = session.search(rest)
        if name == "add" and len(hits) == 1:
            console.print(f"added {session.add(hits[0][0])} ({hits[0][0]})", markup=False)
        elif not hits:
            console.print(f"no item title contains {rest!r}", markup=False)
        else:
            for item, title in hits:
                console.print(f"  {item}: {title}", markup=False)
            if name == "add":
                console.print("several items match: /add ID with one of these ids")
    else:
        raise ValueError(f"unknown command /{name}; Fix: /help lists the commands")
    return True


def cmd_chat(args: argparse.Namespace) -> int:
    from rich.console import Console

    from recllm.errors import UserError

    console = Console(highlight=False)
    if not args.verbose:  # loading bars are not the conversation's
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    session = _session(args)
    if not args.verbose:  # from here on the screen is the conversation's, not the log's
        logging.getLogger().setLevel(logging.WARNING)
    mode = (
        "dialogue model: your words steer the picks"
        if session.dialogue
        else "not trained on conversations: picks follow your history"
    )
    console.print(f"recllm chat - {args.model} ({mode}); /help for commands", markup=False)
    console.print(f"history: {len(session.history)} items; k = {session.k}", markup=False)
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            console.print()
            return 0
        if not line:
            continue
        try:
            if line.startswith("/"):
                if not _command(console, session, line):
                    return 0
            else:
                _render(console, session, session.ask(line))
        except (UserError, ValueError) as e:
            console.print(f"error: {' '.join(str(e).split())}", style="red", markup=False)


def add_chat_parser(sub: Any) -> None:
    """``recllm chat``."""
    c = sub.add_parser(
        "chat",
        help="a terminal conversation with a model: recommendations as item cards",
        description="Talk with a recllm model. Start from a test user's history (--user) or "
        "from items you name (--history, /add); each message gets the top --k items. Models "
        "trained with the dialogue task (mixture.dialogue > 0) read your words; others answer "
        "from the history. /help lists the commands.",
    )
    c.add_argument("--model", required=True, help="model directory (e.g. outputs/quickstart/model)")
    c.add_argument("--data", default=None, help="dataset (default: the model's)")
    _flag(
        c,
        "allow_other_data",
        action="store_true",
        help="chat over --data although it is not the data the model records (its catalog or "
        "its users differ); without it such a run stops",
    )
    c.add_argument("--user", default=None, help="start from this test user's history")
    c.add_argument("--history", nargs="*", default=None, help="item ids you liked, oldest first")
    decoding = add_decoding_args(c, engines=("hf", "vllm"), engine="hf", k="picks", k_default=5)
    decoding.add_argument("--think", action="store_true", help="think first (reasoning models)")
    c.set_defaults(func=cmd_chat)


def cmd_playground(args: argparse.Namespace) -> int:
    import importlib.util

    from recllm.errors import UserError

    if importlib.util.find_spec("gradio") is None:
        raise UserError(
            "recllm playground",
            "needs Gradio, which is not installed",
            'pip install -e ".[apps]" (or pip install "recllm[apps]")',
        )
    from recllm.apps.playground import serve_playground

    print(f"recllm playground: loading {args.model} ...", flush=True)
    serve_playground(
        args.model,
        engine=args.engine,
        data=args.data,
        host=args.host,
        port=args.port,
        block=False,
        allow_other_data=args.allow_other_data,
    )
    print(f"recllm playground: open http://{args.host}:{args.port} (Ctrl-C stops)", flush=True)
    import time

    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0


def add_playground_parser(sub: Any) -> None:
    """``recllm playground``."""
    g = sub.add_parser(
        "playground",
        help="a web page to try a model: prompts, decoding settings side by side, chat",
        description="Serve an interactive page for a model directory on HOST:PORT: pick a test "
        "user or build a history, edit the prompt template with a live preview, compare two "
        "decoding configurations, read the raw generation with its SID spans named, and chat. "
        "Needs the [apps] extra (Gradio).",
    )
    g.add_argument("--model", required=True, help="model directory (e.g. outputs/quickstart/model)")
    g.add_argument("--data", default=None, help="dataset (default: the model's)")
    _flag(
        g,
        "allow_other_data",
        action="store_true",
        help="serve the page over --data although it is not the data the model records (its "
        "catalog or its users differ); without it the page does not start",
    )
    g.add_argument("--host", default="127.0.0.1", help="address to listen on (local by default)")
    g.add_argument("--port", type=_positive, default=7860, help="port")
    add_decoding_args(g, engines=("hf", "vllm"), engine="hf")
    g.set_defaults(func=cmd_playground)


def add_parsers(sub: Any) -> None:
    """``recllm chat`` and ``recllm playground``."""
    add_chat_parser(sub)
    add_playground_parser(sub)
