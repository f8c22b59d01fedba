"""Advantage-weighted SFT (OneRec-V2, PLUM): the policy's own constrained beams, weighted by their
group-normalised advantage, plus the logged targets; N mine -> train rounds.

    accelerate launch recipes/awsft.py --config recipes/awsft.yaml --model_dir outputs/quickstart/model
    accelerate launch recipes/awsft.py --config recipes/awsft.yaml --model_dir outputs/seqlm/model \\
        --reward "sasrec=1" --weighting positive --rounds 2 --output_dir outputs/awsft_seqlm

A killed run continues with ``--resume_from_checkpoint true``: finished rounds are kept, the
half-finished one continues from its last checkpoint (``--save_strategy steps``) or restarts.
Every key of the YAML can be overridden on the command line. Bad flags, keys, paths and data stop
with one line ``awsft: error: WHERE: WHAT. Fix: HOW`` before anything is written. The stages live
in :func:`recllm.align.awsft.run_awsft`.
"""

import logging

if __name__ == "__main__":
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    from trl import SFTConfig

    from recllm.align.awsft import AWSFTArguments, run_awsft
    from recllm.errors import user_errors
    from recllm.train.recipe_args import parse_recipe_args

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    with user_errors("awsft"):
        run_awsft(*parse_recipe_args((AWSFTArguments, SFTConfig), prog="awsft"))
