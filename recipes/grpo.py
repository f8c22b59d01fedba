"""GRPO with constrained rollouts: every rollout a catalog item, rewards read from token ids.

    accelerate launch recipes/grpo.py --config recipes/grpo.yaml --model_dir outputs/quickstart/model
    accelerate launch recipes/grpo.py --config recipes/grpo.yaml --model_dir outputs/seqlm/model \\
        --reward "rank_shaped=1,sasrec=0.1" --num_generations 8 --output_dir outputs/grpo_seqlm

A killed run continues from its last checkpoint (``--save_strategy steps``) with
``--resume_from_checkpoint true``.
Every key of the YAML can be overridden on the command line. Bad flags, keys, paths and data stop
with one line ``grpo: error: WHERE: WHAT. Fix: HOW`` before anything is written. The stages live
in :func:`recllm.align.grpo.run_grpo`.
"""

import logging
import os

if __name__ == "__main__":
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is marked experimental
    from trl import GRPOConfig

    from recllm.align.grpo import GRPOArguments, run_grpo
    from recllm.errors import user_errors
    from recllm.train.recipe_args import parse_recipe_args

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    with user_errors("grpo"):
        run_grpo(*parse_recipe_args((GRPOArguments, GRPOConfig), prog="grpo"))
