"""YAML + command line -> a recipe's config dataclasses, with one-line errors.

Every recipe (``recipes/*.py``) parses its ``--config FILE`` and ``--key value`` flags with
``trl.TrlParser`` over its dataclasses. HF's parser answers a typo with its whole usage text, or
(for a YAML key) with a ``ValueError`` deep in a traceback; :func:`parse_recipe_args` checks the
flags and the YAML's keys first and raises :class:`~recllm.errors.UserError` naming the flag, the
file and line, or the key (with the closest known name), which ``recllm.errors.user_errors``
prints as one line.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recllm.errors import UserError


def packaged_recipe_config(name: str) -> Path:
    """The settings of a recipe that the ``recllm`` command runs, installed with the package
    (``recllm/recipes/<name>.yaml``; the checkout's ``recipes/<name>.yaml`` is a link to it):
    one source of settings for the recipe run by hand and by the command.

    Raises:
        UserError: The file is not there (an install without package data).
    """
    from importlib import resources

    path = Path(str(resources.files("recllm") / "recipes" / f"{name}.yaml"))
    if not path.is_file():
        raise UserError(
            str(path),
            f"recipe settings {name}.yaml are not installed with recllm",
            "reinstall recllm (pip install -e . from a clone), or pass --config recipes/"
            f"{name}.yaml",
        )
    return path


def recipe_parser(dataclass_types: Sequence[type], prog: str):
    """A ``trl.TrlParser`` over ``dataclass_types`` whose argparse errors (a bad value, an
    unknown flag) raise :class:`UserError` instead of printing the usage and exiting."""
    from trl import TrlParser

    class RecipeParser(TrlParser):
        def error(self, message: str):
            raise UserError(
                "command line", message, f"see `python recipes/{prog}.py --help` for the flags"
            )

        def parse_args_into_dataclasses(self, args=None, **kwargs):
            # the YAML's values are the parser's defaults by now: check the merged values
            # before any config's __post_init__ runs (GRPOConfig divides by num_generations)
            namespace, _ = self.parse_known_args(args=args)
            check_training_values(vars(namespace))
            return super().parse_args_into_dataclasses(args=args, **kwargs)

    return RecipeParser(tuple(dataclass_types))


def check_training_values(values: Any) -> None:
    """Refuse training numbers no recipe can train with, naming the flag (one shared check for
    every recipe; ``parse_recipe_args`` runs it on the YAML + command line values).

    Args:
        values: A mapping of option names to values, or a config dataclass (e.g. an
            ``SFTConfig`` built in code: ``check_training_values(sft_cfg)``).

    Raises:
        UserError: A learning rate that is not a finite number > 0, a ``max_length`` below 2
            tokens (no answer token would remain to learn), or fewer than 2 GRPO generations.
    """
    import math

    if not isinstance(values, dict):
        values = vars(values)
    for key in ("learning_rate", "warmup_learning_rate"):
        lr = values.get(key)
        if lr is not None and not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
            raise UserError(
                f"--{key} {lr}",
                "must be a finite number > 0",
                "pass a step size such as 1e-5 (full fine-tuning) or 1e-4 (LoRA)",
            )
    max_length = values.get("max_length")
    if max_length is not None and max_length < 2:
        raise UserError(
            f"--max_length {max_length}",
            "too short: a training row needs its prompt and at least one answer token",
            "pass the tokens of a prompt and its answer (a few hundred), or null for no limit",
        )
    generations = values.get("num_generations")
    if generations is not None and generations < 2:
        raise UserError(
            f"--num_generations {generations}",
            "must be >= 2: GRPO scores each completion against the others of its group",
            "pass 2 or more (and a per_device_train_batch_size that is a multiple of it)",
        )


def check_args(args: list[str], parser: Any, prog: str = "RECIPE") -> None:
    """Check the flags, then read ``--config FILE`` the way TrlParser will, failing with the
    flag, or the file and line or key, before HF's parser prints its whole usage.

    Raises:
        UserError: An unknown flag, a missing or unreadable config file, or an unknown key.
    """
    import yaml

    flags = {o for a in parser._actions for o in a.option_strings} | {"--config"}
    for arg in args:
        name = arg.split("=", 1)[0]
        if name.startswith("--") and name not in flags:
            close = difflib.get_close_matches(name, sorted(flags), n=1)
            raise UserError(
                name,
                "unknown flag",
                f"did you mean {close[0]}?" if close else "see --help for the flags",
            )
    if "--config" not in args:
        return
    i = args.index("--config")
    if i + 1 >= len(args):
        raise UserError("--config", "no file given", f"pass --config recipes/{prog}.yaml")
    path = Path(args[i + 1])
    if not path.is_file():
        raise UserError(
            f"--config {path}", "no such file", "pass an existing YAML file (recipes/*.yaml)"
        )
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(where, f"invalid YAML ({problem})", "fix the YAML syntax") from None
    except UnicodeDecodeError:
        raise UserError(path, "not UTF-8 text", "save the YAML as UTF-8") from None
    if not isinstance(config, dict):
        raise UserError(path, "not a YAML mapping of keys to values", "write `key: value` lines")
    known = {a.dest for a in parser._actions} | {"env"}
    for key in config:
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            raise UserError(
                f"{path} [key {key!r}]",
                "unknown key",
                f"did you mean {close[0]!r}?" if close else "remove it (see --help for the keys)",
            )


def warn_single_cpu_thread(env: Any = None, cores: int | None = None) -> str | None:
    """Warn (and return the warning) when ``accelerate launch`` left a lone CPU process one
    thread of several cores.

    Without a GPU and without ``--cpu``, ``accelerate launch`` sets ``OMP_NUM_THREADS`` to
    ``--num_cpu_threads_per_process``, which defaults to 1: a one-process CPU run then trains on
    one core (measured: an AW-SFT round on a 2-core machine ran at half speed). The warning names
    the flag that gives the process every core.
    """
    import logging
    import os

    env = os.environ if env is None else env
    cores = (os.cpu_count() or 1) if cores is None else cores
    launched = any(k.startswith("ACCELERATE_") for k in env)
    world = int(env.get("WORLD_SIZE", "1") or 1)
    if not launched or env.get("OMP_NUM_THREADS") != "1" or cores <= world:
        return None
    message = (
        f"accelerate launch gave this process 1 CPU thread of {cores} cores "
        f"({world} process(es)); Fix: add --num_cpu_threads_per_process {cores // world} "
        "(or --cpu) to accelerate launch, unless one thread was meant"
    )
    logging.getLogger(__name__).warning(message)
    return message


def parse_recipe_args(
    dataclass_types: Sequence[type], argv: list[str] | None = None, *, prog: str = "RECIPE"
) -> tuple[Any, ...]:
    """Parse YAML + command line into one instance of each of ``dataclass_types``.

    Without a GPU, ``--use_cpu true`` is added unless given (when a ``trl.SFTConfig`` or other
    ``TrainingArguments`` is among the types): the recipe trains on CPU then anyway, and
    transformers refuses ``bf16: true`` unless ``use_cpu`` is set before the configs are
    validated.

    Raises:
        UserError: A missing or malformed config file, an unknown key or flag, a bad value, or a
            cross-field rule a config's ``__post_init__`` enforces; one line, naming the place.
    """
    import torch
    from transformers import TrainingArguments

    args = list(sys.argv[1:] if argv is None else argv)
    trains = any(issubclass(t, TrainingArguments) for t in dataclass_types)
    if (
        trains
        and not torch.cuda.is_available()
        and not any(a.startswith("--use_cpu") for a in args)
    ):
        args += ["--use_cpu", "true"]
    if trains and not torch.cuda.is_available():
        warn_single_cpu_thread()
    parser = recipe_parser(dataclass_types, prog)
    check_args(args, parser, prog)
    try:
        return tuple(parser.parse_args_and_config(args))
    except UserError:
        raise
    except (ValueError, TypeError) as e:  # a config's __post_init__, or HF's unused-args check
        text = " ".join(str(e).split())
        raise UserError("recipe config", text.rstrip("."), "fix the value named above") from None
