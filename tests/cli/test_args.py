"""The decoding options, defined once (:func:`recllm.cli.args.add_decoding_args`) and shared by
eval, chat, playground and serve, each with its own defaults; and their DecodeOptions."""

from __future__ import annotations

import subprocess
import sys

import pytest

from recllm.cli import build_parser
from recllm.errors import UserError


def _decoding_group(argv: list[str]) -> dict[str, object]:
    """The options of the command's ``decoding`` group, parsed from ``argv``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    sub = parser._subparsers._group_actions[0].choices[argv[0]]
    [group] = [g for g in sub._action_groups if g.title == "decoding"]
    return {a.dest: getattr(args, a.dest) for a in group._group_actions}


def test_each_command_keeps_its_own_defaults():
    assert _decoding_group(["eval", "--model", "M"]) == {
        "engine": "sid_beam",
        "beams": 20,
        "k": [5, 10],
        "batch_size": None,  # 8 with transformers, 32 with vLLM (cmd_eval)
        "no_constraint": False,
        "think": False,
        "rationales": 1,
        "think_tokens": 256,
        "think_temperature": 0.0,
        "think_seed": 0,
        "prefixes": None,
    }
    assert _decoding_group(["chat", "--model", "M"]) == {"engine": "hf", "k": 5, "think": False}
    assert _decoding_group(["playground", "--model", "M"]) == {"engine": "hf"}
    assert _decoding_group(["serve", "--model", "M"]) == {"max_k": 50}


def test_one_definition_one_help():
    """The same flag reads the same in every command: --engine's help is composed from one
    table, so eval's three engines and chat's two describe vLLM in the same words."""
    parser = build_parser()
    subs = parser._subparsers._group_actions[0].choices
    helps = {
        name: next(a.help for a in subs[name]._actions if a.dest == "engine")
        for name in ("eval", "chat", "playground")
    }
    assert helps["eval"] == (
        "recllm's SID beam search (default), transformers generate + SID processor, or the same "
        "beam search on vLLM (the [vllm] extra)"
    )
    assert (
        helps["chat"]
        == helps["playground"]
        == ("transformers (default) or the same beam search on vLLM (the [vllm] extra)")
    )


def test_decode_options_from_parsed_flags():
    pytest.importorskip("recllm.decode.options")
    from recllm.cli.args import decode_options
    from recllm.decode import DecodeOptions

    parse = build_parser().parse_args
    args = parse(["eval", "--model", "M", "--beams", "12", "--k", "5,10", "--batch-size", "4"])
    assert decode_options(args) == DecodeOptions(
        k=10, num_beams=12, batch_size=4, engine="sid_beam", constrained=True
    )
    args = parse(["eval", "--model", "M", "--no-constraint"])
    opts = decode_options(args)
    assert (opts.constrained, opts.engine, opts.k, opts.beams) == (False, "generate", 10, 20)
    args = parse(["chat", "--model", "M", "--k", "3", "--engine", "vllm"])
    assert decode_options(args) == DecodeOptions(k=3, engine="sid_beam")
    assert decode_options(args, num_beams=6).beams == 6
    # the control: a combination that cannot decode is refused, naming the field
    args = parse(["eval", "--model", "M", "--beams", "5", "--k", "10"])
    with pytest.raises(UserError, match=r"DecodeOptions.num_beams: 5 beams cannot return k=10"):
        decode_options(args)


def test_python_m_recllm_cli_and_the_decoding_section_of_help():
    proc = subprocess.run(
        [sys.executable, "-m", "recllm.cli", "chat", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    section = proc.stdout.split("\ndecoding:\n", 1)[1]
    assert "--engine {hf,vllm}" in section and "--k K" in section and "--think" in section
    assert "--allow-other-data" in proc.stdout.split("\ndecoding:\n", 1)[0]
