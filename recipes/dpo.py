"""Reward-ranked, iterated DPO (OneRec): mine constrained beams -> score -> pairs -> DPO, N rounds.

    accelerate launch recipes/dpo.py --config recipes/dpo.yaml --model_dir outputs/quickstart/model
    accelerate launch recipes/dpo.py --config recipes/dpo.yaml --model_dir outputs/seqlm/model \\
        --reward "sasrec=1,prefix_credit=0.5" --rounds 3 --output_dir outputs/dpo_seqlm

A killed run continues with ``--resume_from_checkpoint true``: finished rounds are kept, the
half-finished one continues from its last checkpoint (``--save_strategy steps``) or restarts.
Every key of the YAML can be overridden on the command line. Bad flags, keys, paths and data stop
with one line ``dpo: error: WHERE: WHAT. Fix: HOW`` before anything is written. The stages live
in :func:`recllm.align.dpo.run_dpo`.
"""

import logging

if __name__ == "__main__":
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    from trl import DPOConfig

    from recllm.align.dpo import PreferenceArguments, run_dpo
    from recllm.errors import user_errors
    from recllm.train.recipe_args import parse_recipe_args

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    with user_errors("dpo"):
        run_dpo(*parse_recipe_args((PreferenceArguments, DPOConfig), prog="dpo"))
