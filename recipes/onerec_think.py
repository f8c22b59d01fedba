"""Reasoning SFT (OneRec-Think): history -> <think>rationale</think> -> the next item's SID.

    recllm reason generate --model-dir outputs/quickstart/model --out outputs/rationales
    accelerate launch recipes/onerec_think.py --config recipes/onerec_think.yaml
    accelerate launch --config_file recipes/accelerate/ddp.yaml recipes/onerec_think.py \\
        --config recipes/onerec_think.yaml --use_peft true --learning_rate 1e-3

Every key of the YAML can be overridden on the command line. The stages are the PLUM recipe's
(:mod:`recllm.train.stages`, :func:`recllm.train.plum.train_and_save`) with the rationale rows
mixed in (:func:`recllm.train.think.run_think`); the rationale set is recorded with the run's
settings, so a rerun or resume with another set stops. The saved model answers plain and
thinking prompts.
"""

import logging

if __name__ == "__main__":
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    from recllm.errors import user_errors
    from recllm.train.think import parse_recipe_args, run_think

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    with user_errors("onerec_think"):
        run_think(*parse_recipe_args())
