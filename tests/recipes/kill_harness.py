"""Test harness: run a recipe as ``python kill_harness.py RECIPE ARGS...`` and SIGKILL it at a
chosen point, as a crash, an OOM killer or a pre-empted node would.

``KILL=DIR:STEP:AT`` (unset or ``-``: never): DIR is the output_dir of the stage to kill in (the
warm-up's is OUTPUT_DIR/warmup), STEP its global step, AT ``step`` (right after that optimizer
step, between checkpoints) or ``save`` (inside the save of that step's checkpoint, after the
weights and optimizer are written, before the RNG and trainer state) or ``saved`` (right after
the checkpoint of that step is complete).
"""

import os
import runpy
import signal
import sys

import transformers

recipe = sys.argv[1]
kill = os.environ.get("KILL", "-")
kill_dir, kill_step, kill_at = kill.rsplit(":", 2) if kill != "-" else ("", "-1", "")
kill_step = int(kill_step)


def here(args, state) -> bool:
    return (
        os.path.abspath(args.output_dir) == os.path.abspath(kill_dir)
        and state.global_step == kill_step
    )


class Kill(transformers.TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if kill_at == "step" and here(args, state):
            os.kill(os.getpid(), signal.SIGKILL)

    def on_save(self, args, state, control, **kwargs):
        if kill_at == "saved" and here(args, state):  # the checkpoint is whole and marked
            os.kill(os.getpid(), signal.SIGKILL)


_init = transformers.Trainer.__init__


def init(self, *args, callbacks=None, **kwargs):
    _init(self, *args, callbacks=[*(callbacks or []), Kill()], **kwargs)


_save_rng = transformers.Trainer._save_rng_state


def save_rng(self, output_dir):
    if kill_at == "save" and here(self.args, self.state):
        os.kill(os.getpid(), signal.SIGKILL)
    return _save_rng(self, output_dir)


transformers.Trainer.__init__ = init
transformers.Trainer._save_rng_state = save_rng
sys.argv = sys.argv[1:]
runpy.run_path(recipe, run_name="__main__")
