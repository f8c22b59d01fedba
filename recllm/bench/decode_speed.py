"""The constrained-decoding benchmark (``scripts/bench_decode.py``): recllm's SID logits
processor and SID beam search against unconstrained and dict-constrained ``generate``.

:func:`tiny_setup` and :func:`smol_setup` build the models and prompts (random weights: only
time matters), :func:`bench_one` times the four decoders on one model and beam width and checks
that the constrained ones agree; :func:`run_line` and :func:`summary_lines` are the report.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = [
    "Setup",
    "bench_one",
    "random_codes",
    "run_line",
    "smol_setup",
    "summary_lines",
    "tiny_setup",
    "titles_for",
]

SMOL_TEXT_VOCAB = 49152  # SmolLM2-135M's tokenizer; SID tokens are appended after it
ADJECTIVES = [
    "Silent",
    "Hidden",
    "Broken",
    "Golden",
    "Midnight",
    "Electric",
    "Lost",
    "Crimson",
    "Frozen",
    "Wild",
    "Secret",
    "Last",
    "Distant",
    "Bright",
    "Quiet",
    "Endless",
]
NOUNS = [
    "Harbor",
    "Garden",
    "Empire",
    "River",
    "Kingdom",
    "Station",
    "Letter",
    "Mountain",
    "Island",
    "Promise",
    "Journey",
    "Shadow",
    "Summer",
    "Machine",
    "Orchestra",
    "Detective",
]


def random_codes(items: int, levels: int, size: int, seed: int) -> np.ndarray:
    """``items`` unique random code tuples."""
    rng = np.random.default_rng(seed)
    flat = rng.choice(size**levels, size=items, replace=False)
    return np.stack([(flat // size**p) % size for p in reversed(range(levels))], axis=1)


def titles_for(items: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [
        f"The {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} ({rng.integers(1950, 2024)})"
        for _ in range(items)
    ]


def history_prompts(tok, sid_map, titles, users: int, history: tuple[int, int], seed: int):
    """Token ids of chat prompts: a user's history as ``<SID> title`` lines, then the ask."""
    from recllm.vocab import SID_FORMAT

    rng = np.random.default_rng(seed)
    prompts = []
    for _ in range(users):
        picked = rng.choice(len(sid_map), size=int(rng.integers(*history)), replace=False)
        lines = [f"{SID_FORMAT.render(sid_map.codes[i])} {titles[i]}" for i in picked]
        content = (
            "Here is what the user watched, oldest first:\n"
            + "\n".join(lines)
            + "\nRecommend the next movie."
        )
        text = tok.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )
        prompts.append(tok(text, add_special_tokens=False)["input_ids"])
    return prompts


def left_pad(prompts: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, prompts))
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask


# -- the research-repo baseline -----------------------------------------------------------------


def build_prefix_dict(codes: np.ndarray, token_ids, stop: int) -> dict[tuple[int, ...], list[int]]:
    """Generated-prefix tuple -> allowed next tokens, for every prefix of every answer."""
    allowed: dict[tuple[int, ...], set[int]] = defaultdict(set)
    for code in codes.tolist():
        seq = [*token_ids.encode(code), stop]
        for i in range(len(seq)):
            allowed[tuple(seq[:i])].add(seq[i])
    return {prefix: sorted(tokens) for prefix, tokens in allowed.items()}


def dict_prefix_fn(prefix_dict: dict, prompt_len: int, stop: int):
    def prefix_allowed_tokens_fn(batch_id: int, input_ids: torch.Tensor) -> list[int]:
        return prefix_dict.get(tuple(input_ids[prompt_len:].tolist()), [stop])

    return prefix_allowed_tokens_fn


# -- timing helpers -----------------------------------------------------------------------------


class Timed:
    """A logits processor wrapper that sums the wrapped processor's time."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.seconds = 0.0
        self.calls = 0

    def __call__(self, input_ids, scores):
        t0 = time.perf_counter()
        out = self.inner(input_ids, scores)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        return out


@dataclass
class Setup:
    name: str
    model: Any
    trie: Any
    sid_map: Any
    prompts: list[list[int]]
    stop: int
    pad: int


def ranked_items(sequences: torch.Tensor, width: int, users: int, beams: int, trie) -> list:
    """Per user, the item rows of HF's returned beams, best first (-1: not a catalog SID)."""
    levels = trie.levels
    codes = sequences[:, width + 1 : width + 1 + levels] - trie.code_token_start.to(sequences)
    rows = trie.item_index(codes.clamp(min=0)).view(users, beams)
    return rows.tolist()


def run_generate(setup: Setup, beams: int, ids, mask, processor=None) -> tuple[float, Any]:
    from recllm.decode import sid_generation_config

    cfg = sid_generation_config(
        mode="beam",
        levels=setup.trie.levels,
        num_beams=beams,
        k=beams,
        stop_token_id=setup.stop,
        pad_token_id=setup.pad,
    )
    cfg.output_scores = False
    cfg.return_dict_in_generate = False
    t0 = time.perf_counter()
    with torch.no_grad():
        out = setup.model.generate(
            input_ids=ids,
            attention_mask=mask,
            generation_config=cfg,
            logits_processor=[processor] if processor is not None else None,
        )
    return time.perf_counter() - t0, out


def _per_call(
    setup: Setup, seqs: torch.Tensor, width: int, beams: int, fn: Any, call_repeats: int
) -> tuple[dict[str, float], bool]:
    """Seconds per call of each processor (best of ``call_repeats``, averaged over the steps)
    and whether they all mask alike."""
    from transformers.generation.logits_process import PrefixConstrainedLogitsProcessor

    from recllm.decode import SIDLogitsProcessor

    levels = setup.trie.levels
    # Processor cost per call on the states of the real run: every prefix of the returned
    # answers (begin, codes, end, stop), all users x beams rows at once, each call on a fresh
    # copy of the scores (made outside the timed region). "ours" is what generate_sids runs in
    # beam search (in place); "ours_copy" returns a new tensor, like transformers' processors.
    vocab = setup.model.get_output_embeddings().weight.shape[0]
    procs = {
        "ours": SIDLogitsProcessor(
            setup.trie, sid_only=True, stop_token_id=setup.stop, inplace=True
        ),
        "ours_copy": SIDLogitsProcessor(setup.trie, sid_only=True, stop_token_id=setup.stop),
        "dict": PrefixConstrainedLogitsProcessor(fn, beams),
    }
    per_call = dict.fromkeys(procs, 0.0)
    same_masks = True
    gen = torch.Generator().manual_seed(0)
    for step in range(levels + 3):
        state = seqs[:, : width + step]
        scores = torch.randn(state.shape[0], vocab, generator=gen)
        masks = [torch.isfinite(proc(state, scores.clone())) for proc in procs.values()]
        same_masks &= all(torch.equal(masks[0], m) for m in masks[1:])
        del masks
        for name, proc in procs.items():
            best_call = float("inf")
            for _ in range(call_repeats):
                fresh = scores.clone()
                t0 = time.perf_counter()
                proc(state, fresh)
                best_call = min(best_call, time.perf_counter() - t0)
                del fresh
            per_call[name] += best_call
    per_call = {k: v / (levels + 3) for k, v in per_call.items()}
    return per_call, same_masks


def bench_one(setup: Setup, beams: int, repeats: int, call_repeats: int) -> dict[str, Any]:
    from transformers.generation.logits_process import PrefixConstrainedLogitsProcessor

    from recllm.decode import SIDLogitsProcessor, sid_beam_search

    ids, mask = left_pad(setup.prompts, setup.pad)
    users, width = ids.shape
    prefix_dict = build_prefix_dict(setup.sid_map.codes, setup.trie.token_ids, setup.stop)
    fn = dict_prefix_fn(prefix_dict, width, setup.stop)
    # Warm-up (first-call allocations, lazy inits), untimed: the whole batch, 2 beams.
    run_generate(setup, 2, ids, mask)
    sid_beam_search(setup.model, ids, mask, setup.trie, num_beams=2, stop_token_id=setup.stop)
    times: dict[str, list[float]] = defaultdict(list)
    proc_seconds: dict[str, float] = {}
    outputs: dict[str, Any] = {}

    def hf_free() -> None:
        t, outputs["hf_free"] = run_generate(setup, beams, ids, mask)
        times["hf_free"].append(t)

    def hf_ours() -> None:
        ours = Timed(
            SIDLogitsProcessor(setup.trie, sid_only=True, stop_token_id=setup.stop, inplace=True)
        )
        t, outputs["hf_ours"] = run_generate(setup, beams, ids, mask, ours)
        times["hf_ours"].append(t)
        proc_seconds["ours"] = min(proc_seconds.get("ours", float("inf")), ours.seconds)

    def hf_dict() -> None:
        theirs = Timed(PrefixConstrainedLogitsProcessor(fn, beams))
        t, outputs["hf_dict"] = run_generate(setup, beams, ids, mask, theirs)
        times["hf_dict"].append(t)
        proc_seconds["dict"] = min(proc_seconds.get("dict", float("inf")), theirs.seconds)

    def sid_beam() -> None:
        t0 = time.perf_counter()
        outputs["sid_beam"] = sid_beam_search(
            setup.model, ids, mask, setup.trie, num_beams=beams, stop_token_id=setup.stop
        )
        times["sid_beam"].append(time.perf_counter() - t0)

    runs = [hf_free, hf_ours, hf_dict, sid_beam]
    for repeat in range(repeats):
        for run in runs if repeat % 2 == 0 else runs[::-1]:  # alternate the order
            run()
    best = {k: min(v) for k, v in times.items()}

    # Same ranked items from the three constrained decoders.
    hf = ranked_items(outputs["hf_ours"], width, users, beams, setup.trie)
    dct = ranked_items(outputs["hf_dict"], width, users, beams, setup.trie)
    ours_rows = outputs["sid_beam"].items.tolist()
    invalid = sum(r < 0 for row in hf for r in row)
    free_len = outputs["hf_free"].shape[1] - width
    distinct = all(len(set(row)) == len(row) for row in hf)

    per_call, same_masks = _per_call(setup, outputs["hf_ours"], width, beams, fn, call_repeats)

    return {
        "model": setup.name,
        "beams": beams,
        "users": users,
        "prompt_tokens_mean": float(mask.sum(1).float().mean()),
        "seconds": best,
        "constrained_over_free": best["hf_ours"] / best["hf_free"],
        # The same overhead without run-to-run noise: our processor's own time inside generate.
        "processor_share_of_generate": proc_seconds["ours"] / best["hf_ours"],
        "dict_over_ours_generate": best["hf_dict"] / best["hf_ours"],
        "processor_seconds_in_generate": proc_seconds,
        "processor_ms_per_call": {k: 1000 * v for k, v in per_call.items()},
        "dict_over_ours_per_call": per_call["dict"] / per_call["ours"],
        "dict_over_ours_copy_per_call": per_call["dict"] / per_call["ours_copy"],
        "users_per_s": {k: users / best[k] for k in ("hf_ours", "sid_beam")},
        "sid_beam_speedup": best["hf_ours"] / best["sid_beam"],
        "agree_dict": hf == dct,
        "agree_sid_beam": hf == ours_rows,
        "same_masks_dict": same_masks,
        "invalid": invalid,
        "distinct_beams": distinct,
        "free_new_tokens": free_len,
    }


# -- models -------------------------------------------------------------------------------------


def tiny_setup(args, sid_map, titles, tok, model) -> tuple[Setup, Any]:
    """The tiny model's setup: ``model`` (a tiny Qwen3 of ``tok``, built by the caller with
    :mod:`recllm.testing`) extended with the SID rows, spread apart, and its prompts."""
    from transformers import GenerationConfig

    from recllm.decode import SIDTrie
    from recllm.vocab import extend_vocab

    ext = extend_vocab(model, tok, sid_map)
    with torch.no_grad():  # distinct SID rows: mean-initialised rows would tie every beam
        g = torch.Generator().manual_seed(args.seed)
        w = model.get_input_embeddings().weight
        w[ext.first_id : ext.last_id + 1] += 0.1 * torch.randn(
            ext.token_ids.num_tokens, w.shape[1], generator=g
        )
    model.generation_config = GenerationConfig()
    prompts = history_prompts(tok, sid_map, titles, args.users, (4, 8), args.seed)
    trie = SIDTrie.from_sid_map(sid_map, ext.token_ids)
    setup = Setup("tiny-qwen3", model, trie, sid_map, prompts, tok.eos_token_id, tok.pad_token_id)
    return setup, tok


def smol_setup(args, sid_map, titles, tiny: Setup, tok) -> Setup:
    """A SmolLM2-135M-shaped Llama with random weights; prompts are the tiny tokenizer's ids
    (all below 512, valid here too) with the SID tokens moved to this vocabulary's SID block."""
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    from recllm.decode import SIDTrie
    from recllm.vocab import SIDTokenIds

    token_ids = SIDTokenIds(SMOL_TEXT_VOCAB, sid_map.codebook_sizes)
    config = LlamaConfig(
        vocab_size=-(-(token_ids.last_id + 1) // 64) * 64,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        rope_theta=100000.0,
        bos_token_id=None,
        eos_token_id=tiny.stop,
        pad_token_id=tiny.pad,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        model = LlamaForCausalLM(config).eval()
    model.generation_config = GenerationConfig()
    raw = history_prompts(tok, sid_map, titles, args.smol_users, (1, 2), args.seed + 1)
    first = tiny.trie.token_ids.first_id
    shift = token_ids.first_id - first
    prompts = [[t + shift if t >= first else t for t in p] for p in raw]
    trie = SIDTrie.from_sid_map(sid_map, token_ids)
    return Setup("smollm2-135m-shape", model, trie, sid_map, prompts, tiny.stop, tiny.pad)


def run_line(r: dict[str, Any]) -> str:
    """The printed line of one :func:`bench_one` result."""
    s = r["seconds"]
    return (
        f"{r['model']:>20} beams {r['beams']:>3} users {r['users']:>3} prompt "
        f"{r['prompt_tokens_mean']:.0f} tok | hf_free {s['hf_free']:.2f}s hf_ours "
        f"{s['hf_ours']:.2f}s hf_dict {s['hf_dict']:.2f}s sid_beam {s['sid_beam']:.2f}s | "
        f"proc/call ours {r['processor_ms_per_call']['ours']:.2f} ms (copy "
        f"{r['processor_ms_per_call']['ours_copy']:.2f}) dict "
        f"{r['processor_ms_per_call']['dict']:.2f} ms | agree dict {r['agree_dict']} "
        f"sid_beam {r['agree_sid_beam']} invalid {r['invalid']}"
    )


def summary_lines(results: list[dict[str, Any]]) -> list[str]:
    """The summary table: (a) ours / free, (b) dict / ours, (c) sid_beam / hf, with targets."""
    header = (
        f"{'model':>20} {'beams':>5} | {'(a) ours/free':>13} {'proc share':>10} {'target':>6} | "
        f"{'(b) dict/ours: per call':>23} {'(copy)':>7} {'in generate':>11} {'generate':>8} "
        f"{'target':>6} | {'(c) sid_beam/hf':>15} {'users/s':>15} {'target':>6}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        proc = r["processor_seconds_in_generate"]
        lines.append(
            f"{r['model']:>20} {r['beams']:>5} | {r['constrained_over_free']:>13.3f} "
            f"{100 * r['processor_share_of_generate']:>9.2f}% "
            f"{'<=1.05':>6} | {r['dict_over_ours_per_call']:>22.1f}x "
            f"{r['dict_over_ours_copy_per_call']:>6.1f}x {proc['dict'] / proc['ours']:>10.1f}x "
            f"{r['dict_over_ours_generate']:>7.2f}x {'>=5x':>6} | {r['sid_beam_speedup']:>14.1f}x "
            f"{r['users_per_s']['sid_beam']:>7.2f} vs {r['users_per_s']['hf_ours']:<5.2f} "
            f"{'>=3x':>6}"
        )
    return lines
