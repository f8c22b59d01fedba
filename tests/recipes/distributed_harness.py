"""Test harness: run a recipe as ``accelerate launch ... distributed_harness.py RECIPE ARGS...``
and record, from inside every rank, what the distributed tests need to check.

Nothing here is on a path users run; it only adds what a test needs to see or to break:

- ``HARNESS_OUT=DIR``: after each training stage every rank writes ``DIR/<stage>-rank<R>.json``
  with the sha256 of each parameter as that rank holds it (its shard under FSDP/ZeRO-3, the full
  tensor otherwise) and its local shape; rank 0 adds ``DIR/<stage>-full.pt``, the full state
  dict gathered the shard-aware way (``accelerator.get_state_dict``), to compare with what the
  recipe saved. ``<stage>`` is the basename of the stage's ``output_dir``.
- ``HARNESS_NO_ALLREDUCE=1``: the DDP gradient all-reduce is replaced by a hook that keeps each
  rank's local gradient (the control run that shows a test can tell the difference).
- ``HARNESS_SHARD_ON_CPU=1``: accelerate (1.15) never enables FSDP or DeepSpeed for CPU
  processes (``AcceleratorState`` turns ``ACCELERATE_USE_FSDP`` into FSDP only for GPU-like
  device types, and ``ACCELERATE_USE_DEEPSPEED`` only when not on CPU; CPU ranks silently run
  plain DDP). This flag lets the launcher's FSDP or DeepSpeed plugin through on CPU ranks, so
  FSDP2 (``fully_shard`` over gloo) or ZeRO-3 runs here as it does on GPUs.
"""

import hashlib
import json
import os
import runpy
import sys
from pathlib import Path

import accelerate
import accelerate.state
import torch
import transformers
from accelerate.utils import DistributedType

out_dir = os.environ.get("HARNESS_OUT")


def digest(t: torch.Tensor) -> str:
    t = t.detach()
    if hasattr(t, "ds_tensor"):  # a ZeRO-3 parameter: its flat partition on this rank
        t = t.ds_tensor
    if hasattr(t, "to_local"):  # a DTensor: this rank's shard
        t = t.to_local()
    return hashlib.sha256(t.float().contiguous().cpu().numpy().tobytes()).hexdigest()


def local_shape(t: torch.Tensor) -> list[int]:
    if hasattr(t, "ds_tensor"):  # a ZeRO-3 parameter: its flat partition on this rank
        return list(t.ds_tensor.shape)
    return list((t.to_local() if hasattr(t, "to_local") else t).shape)


_train = transformers.Trainer.train


def train(self, *args, **kwargs):
    result = _train(self, *args, **kwargs)
    if out_dir:
        stage = Path(self.args.output_dir).name
        model = self.accelerator.unwrap_model(self.model)
        rank = self.accelerator.process_index
        record = {
            "distributed_type": str(self.accelerator.distributed_type),
            "world_size": self.accelerator.num_processes,
            "params": {
                n: {"sha256": digest(p), "shape": local_shape(p), "global": list(p.shape)}
                for n, p in model.named_parameters()
            },
        }
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / f"{stage}-rank{rank}.json").write_text(json.dumps(record))
        # a collective: every rank calls it; DeepSpeed needs its engine (model_wrapped)
        full = self.accelerator.get_state_dict(self.model_wrapped)
        if self.accelerator.is_main_process:
            torch.save(
                {k: v.float().clone() for k, v in full.items()}, f"{out_dir}/{stage}-full.pt"
            )
        self.accelerator.wait_for_everyone()
    return result


transformers.Trainer.train = train

if os.environ.get("HARNESS_NO_ALLREDUCE") == "1":

    def keep_local_gradient(state, bucket):
        fut = torch.futures.Future()
        fut.set_result(bucket.buffer())
        return fut

    _prepare_model = accelerate.Accelerator.prepare_model

    def prepare_model(self, model, *args, **kwargs):
        model = _prepare_model(self, model, *args, **kwargs)
        if isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model.register_comm_hook(None, keep_local_gradient)
        return model

    accelerate.Accelerator.prepare_model = prepare_model

if os.environ.get("HARNESS_SHARD_ON_CPU") == "1":
    _state_init = accelerate.state.AcceleratorState.__init__

    def state_init(self, *args, fsdp_plugin=None, deepspeed_plugin=None, **kwargs):
        _state_init(
            self, *args, fsdp_plugin=fsdp_plugin, deepspeed_plugin=deepspeed_plugin, **kwargs
        )
        if (
            self.distributed_type == DistributedType.MULTI_CPU
            and os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
            and deepspeed_plugin is not None
        ):
            # what AcceleratorState does for DeepSpeed when not on CPU (one plugin)
            self.distributed_type = DistributedType.DEEPSPEED
            deepspeed_plugin.set_mixed_precision(self._mixed_precision)
            deepspeed_plugin.select(_from_accelerator_state=True)
            self.deepspeed_plugins = deepspeed_plugin
            self._mixed_precision = "no"
        if (
            self.distributed_type == DistributedType.MULTI_CPU
            and os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
        ):
            self.distributed_type = DistributedType.FSDP
            if getattr(self, "fsdp_plugin", None) is None:
                from accelerate.utils import FullyShardedDataParallelPlugin

                # the plugin the launcher's FSDP_* variables describe
                self.fsdp_plugin = fsdp_plugin or FullyShardedDataParallelPlugin()

    accelerate.state.AcceleratorState.__init__ = state_init

sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
