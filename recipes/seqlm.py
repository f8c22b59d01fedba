"""From-scratch SID-sequence decoder (TIGER-style, decoder only): data -> SIDs -> decoders.

    accelerate launch recipes/seqlm.py --config recipes/seqlm.yaml
    python recipes/seqlm.py --config recipes/seqlm.yaml --data_path ../shared/data/amazon_p5/beauty \\
        --ensemble 2 --time_budget_minutes 30 --valid_users 2000 --output_dir outputs/seqlm_beauty

A killed run continues with ``--resume_from_checkpoint true``: finished decoders are kept, the
others continue from their last checkpoint (``--save_strategy steps``).
Every key of the YAML can be overridden on the command line. Bad flags, keys, paths and data
stop with one line ``seqlm: error: WHERE: WHAT. Fix: HOW`` before anything is written
(``RECLLM_TRACEBACK=1`` shows the traceback). Writes OUTPUT_DIR/resolved_config.json,
OUTPUT_DIR/sids, one model directory per seed (OUTPUT_DIR/model, OUTPUT_DIR/model_seed<N>;
``recllm eval --model DIR [DIR ...]`` scores them, together as an ensemble) and
OUTPUT_DIR/train_log.json. The stages live in :func:`recllm.train.seqlm.run_seqlm`; one process
(the decoder is small: ``accelerate launch`` runs it as one CPU or GPU process).
"""

import logging

if __name__ == "__main__":
    # bitsandbytes (imported by TRL) warns at import on CPUs without its optional `kernels`
    # package; harmless, and it would stand before a one-line config error
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    from trl import SFTConfig

    from recllm.baselines.sasrec import run_teacher
    from recllm.data import DataConfig
    from recllm.errors import user_errors
    from recllm.eval.run import evaluate_recommender
    from recllm.sid.config import SIDConfig
    from recllm.train.recipe_args import parse_recipe_args
    from recllm.train.seqlm import SeqLMArguments, run_seqlm

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    with user_errors("seqlm"):
        args = parse_recipe_args((SeqLMArguments, DataConfig, SIDConfig, SFTConfig), prog="seqlm")
        # validation ranks users with eval's beam search; training never imports eval itself
        run_seqlm(*args, evaluate=evaluate_recommender, teacher_provider=run_teacher)
