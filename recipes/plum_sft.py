"""PLUM-style SFT: SID vocabulary -> embedding-only warm-up -> alignment + recommendation SFT.

    accelerate launch recipes/plum_sft.py --config recipes/plum_sft.yaml
    accelerate launch --config_file recipes/accelerate/ddp.yaml recipes/plum_sft.py \\
        --config recipes/plum_sft.yaml --model_name_or_path PATH --learning_rate 1e-4
    accelerate launch recipes/plum_sft.py --config recipes/plum_sft.yaml --resume_from_checkpoint true

Every key of the YAML can be overridden on the command line. Bad flags, keys, paths and data
stop with one line ``plum_sft: error: WHERE: WHAT. Fix: HOW`` before anything is written
(``RECLLM_TRACEBACK=1`` shows the traceback). :func:`recllm.train.plum.run_plum` runs the
stages: validate -> data -> SIDs -> vocabulary -> training texts -> warm-up -> SFT -> save.
"""

import logging

if __name__ == "__main__":
    # bitsandbytes (imported by TRL) warns at import on CPUs without its optional `kernels`
    # package; harmless, and it would stand before a one-line config error
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    from recllm.baselines.sasrec import run_teacher
    from recllm.errors import user_errors
    from recllm.train.plum import parse_recipe_args, run_plum

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    with user_errors("plum_sft"):
        run_plum(*parse_recipe_args(), teacher_provider=run_teacher)
