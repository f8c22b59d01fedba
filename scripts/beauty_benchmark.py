"""Amazon Beauty (P5/TIGER split): ``scripts/benchmark.py`` with Beauty's data path.

    python scripts/beauty_benchmark.py                         # ~80 min on 2 cores
    python scripts/beauty_benchmark.py --ensemble 1 --recllm-minutes 5 --sasrec-minutes 3 \\
        --eval-users 2000                                      # a quick look

Kept so the commands in docs/beauty.md still run. Everything is ``scripts/benchmark.py``
(``--help`` there; settings in ``recipes/seqlm.yaml``): this driver adds ``--data`` (the shared
Beauty folder when present), ``--dataset beauty`` and ``--out outputs/beauty_benchmark`` unless
given, and translates the older flag names below to the recipe's keys. ``--collab-source
sasrec`` (SASRec item vectors in the SIDs) is no longer available.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchmark

#: Older flags of this script -> recipes/seqlm.yaml keys.
RENAMED = {
    "--hidden": "--hidden_size",
    "--layers": "--num_layers",
    "--heads": "--num_heads",
    "--lr": "--learning_rate",
    "--batch": "--per_device_train_batch_size",
    "--dropout": "--attention_dropout",
    "--hidden-dropout": "--hidden_dropout",
    "--mlp": "--intermediate_size",
    "--sid-method": "--method",
    "--contrastive": "--contrastive_weight",
    "--codebook": "--codebook_size",
    "--collab": "--collab_weight",
    "--text-model": "--text_model",
    "--epochs": "--num_train_epochs",
    "--valid-users": "--valid_users",
}


def translate(argv: list[str]) -> list[str]:
    """Old flag names -> the recipe's; ``--item-tokens`` -> ``--item_tokens true``;
    ``--bf16 auto|on|off`` -> ``--bf16 true|false``."""
    out: list[str] = []
    it = iter(argv)
    for arg in it:
        name, eq, value = arg.partition("=")
        if name == "--collab-source":
            raise SystemExit("beauty_benchmark: --collab-source is no longer available")
        if name == "--item-tokens":
            out += ["--item_tokens", "true"]
        elif name == "--bf16":
            value = value if eq else next(it, "auto")
            out += ["--bf16", "false" if value == "off" else "true"]
        elif name in RENAMED:
            out += [RENAMED[name] + (f"={value}" if eq else "")]
        else:
            out.append(arg)
    return out


def main(argv: list[str] | None = None) -> dict:
    from recllm.testing import shared_data_dir

    args = translate(list(sys.argv[1:] if argv is None else argv))
    given = {a.split("=", 1)[0] for a in args}
    if "--data" not in given:
        shared = shared_data_dir()
        if shared is None:
            raise SystemExit("no Beauty data: pass --data path/to/amazon_p5/beauty")
        args += ["--data", str(shared / "amazon_p5" / "beauty")]
    if "--dataset" not in given:
        args += ["--dataset", "beauty"]
    if "--out" not in given:
        args += ["--out", "outputs/beauty_benchmark"]
    return benchmark.main(args)


if __name__ == "__main__":
    from recllm.errors import user_errors

    with user_errors("beauty_benchmark"):
        main()
