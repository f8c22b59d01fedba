"""PLUM-style SFT: SID vocabulary -> embedding-only warm-up -> alignment + recommendation SFT.

    accelerate launch recipes/plum_sft.py --config recipes/plum_sft.yaml
    accelerate launch --config_file recipes/accelerate/ddp.yaml recipes/plum_sft.py \\
        --config recipes/plum_sft.yaml --model_name_or_path PATH --learning_rate 1e-4

Every key of the YAML can be overridden on the command line. The stages live in
:func:`recllm.train.plum.run_plum`.
"""

import logging

from recllm.train.plum import parse_recipe_args, run_plum

if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    run_plum(*parse_recipe_args())
