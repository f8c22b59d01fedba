"""Where do SID decoders lose the target? Per-level teacher-forced ranks, models side by side.

For every evaluation user, ``prompt + <|sid_begin|> + target SID`` is fed once and, at each
level, the target's code is ranked among the codes the trie allows after its true prefix
(:mod:`recllm.eval.levels`). The table shows per model and level the share of users whose
target code ranks in the top 1/5/10/20 there, the mean renormalised log-probability of that code
and how many codes were allowed; a PNG plots hit@10 per level. Teacher forcing needs one forward
per user, so this is much cheaper than a beam evaluation.

    python scripts/sid_levels.py --model outputs/beauty_N/recllm_model \\
        outputs/beauty_T/recllm_model --data ../shared/data/amazon_p5/beauty --split test

The last line of output is one JSON object: ``{model: {"hit@k": [per level], ...}}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", nargs="+", required=True, help="recllm model directories")
    p.add_argument("--data", default=None, help="dataset (default: the first model's record)")
    p.add_argument("--split", choices=("test", "valid"), default="test")
    p.add_argument("--max-users", type=int, default=0, help="first N users (0 = all)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--out", default="outputs/sid_levels", help="folder for the PNG and JSON")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    return p.parse_args()


def plot(results: dict[str, dict], path: Path) -> None:
    from recllm.bench.report import grouped_bars

    levels = len(next(iter(results.values()))["hit@10"])
    grouped_bars(
        {name: rep["hit@10"] for name, rep in results.items()},
        [f"level {lv + 1}" for lv in range(levels)],
        path,
        title="Teacher-forced rank of the target's code, per SID level",
        ylabel="share of users: target code in the top 10\n(given the true prefix)",
        ylim=(0, 1),
    )


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    import torch

    from recllm.eval.levels import level_report
    from recllm.eval.run import PromptSpec, build_prompts, eval_examples
    from recllm.io import write_json_atomic
    from recllm.vocab import load_model_with_sids

    if args.threads:
        torch.set_num_threads(args.threads)
    print("command: python " + " ".join(sys.argv))
    print(
        f"machine: {platform.machine()}, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    )
    data_fields, dataset, examples = eval_examples(
        args.model[0], args.data, args.split, args.max_users
    )
    results: dict[str, dict] = {}
    for model_dir in args.model:
        t0 = time.perf_counter()
        model, tok, sid_map = load_model_with_sids(model_dir)
        prompts = build_prompts(
            PromptSpec.from_model_dir(model_dir), examples, sid_map, dataset.catalog
        )
        report = level_report(
            model, tok, sid_map, prompts, [ex.target for ex in examples], batch_size=args.batch_size
        )
        name = str(
            Path(model_dir).parent.name if Path(model_dir).name == "recllm_model" else model_dir
        )
        results[name] = {**report.as_dict(), "seconds": round(time.perf_counter() - t0, 1)}

    print(f"\n{args.split}, {len(examples):,} users of {data_fields['data_path']}")
    print(
        f"{'model':<24}{'level':>6}{'hit@1':>8}{'hit@5':>8}{'hit@10':>8}{'hit@20':>8}"
        f"{'logp':>8}{'allowed':>9}"
    )
    for name, rep in results.items():
        for lv in range(len(rep["mean_logp"])):
            print(
                f"{name:<24}{lv + 1:>6}"
                + "".join(f"{rep[f'hit@{k}'][lv]:>8.3f}" for k in (1, 5, 10, 20))
                + f"{rep['mean_logp'][lv]:>8.3f}{rep['mean_allowed'][lv]:>9.1f}"
            )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plot(results, out / "hit_at_10_by_level.png")
    write_json_atomic(out / "levels.json", {"config": vars(args), "results": results})
    print(f"{out / 'levels.json'} and {out / 'hit_at_10_by_level.png'} written")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
