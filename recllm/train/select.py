"""Checkpoint selection on validation ranking metrics during training.

Loss keeps falling long after recommendation quality peaks on sparse data (Amazon Beauty), so
the epoch to keep is chosen the way the literature does for SASRec and TIGER: constrained
beam search over validation users at each epoch end, the best epoch's weights kept in memory
and restored when training ends, optionally stopping after ``patience`` epochs without gain.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from transformers import TrainerCallback

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from recllm.data.splits import Example
    from recllm.data.types import Catalog
    from recllm.eval.run import PromptSpec
    from recllm.sid.sidmap import SIDMap

logger = logging.getLogger(__name__)


class BestOnValidation(TrainerCallback):
    """Evaluate at every epoch end; keep and finally restore the best epoch's weights.

    Args:
        tokenizer, sid_map, examples, spec, catalog: as for
            :func:`recllm.eval.run.evaluate_recommender` (``examples``: validation users).
        metric: Key of the metrics to maximise, e.g. ``"recall@10"``.
        beams, ks, batch_size: Beam width, cut-offs and batch size of the evaluation.
        patience: Stop training after this many epochs without improvement (None: never).

    After training, ``history`` holds ``{"epoch", metric...}`` per evaluation and
    ``best_epoch`` the epoch whose weights the model holds.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        sid_map: SIDMap,
        examples: Sequence[Example],
        spec: PromptSpec,
        catalog: Catalog,
        *,
        metric: str = "recall@10",
        beams: int = 20,
        ks: Sequence[int] = (5, 10),
        batch_size: int = 64,
        patience: int | None = None,
    ) -> None:
        if not examples:
            raise ValueError("BestOnValidation needs validation examples; Fix: pass split.valid")
        self.tokenizer, self.sid_map, self.examples = tokenizer, sid_map, examples
        self.spec, self.catalog = spec, catalog
        self.metric, self.beams, self.ks, self.batch_size = metric, beams, tuple(ks), batch_size
        self.patience = patience
        self.history: list[dict[str, float]] = []
        self.best: float = float("-inf")
        self.best_epoch: float | None = None
        self._best_state: dict | None = None
        self._stale = 0

    def evaluate(self, model: PreTrainedModel) -> dict[str, float]:
        from recllm.eval.run import evaluate_recommender

        was_training = model.training
        model.eval()
        try:
            result = evaluate_recommender(
                model,
                self.tokenizer,
                self.sid_map,
                self.examples,
                self.spec,
                self.catalog,
                beams=self.beams,
                ks=self.ks,
                batch_size=self.batch_size,
                progress=False,
            )
        finally:
            model.train(was_training)
        if self.metric not in result.metrics:
            raise KeyError(
                f"metric {self.metric!r} not in {sorted(result.metrics)}; Fix: pick one of these"
            )
        return result.metrics

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        metrics = self.evaluate(model)
        epoch = round(state.epoch or 0.0, 2)
        value = float(metrics[self.metric])
        self.history.append({"epoch": epoch, **{k: float(v) for k, v in metrics.items()}})
        if value > self.best:
            self.best, self.best_epoch, self._stale = value, epoch, 0
            self._best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            self._stale += 1
        logger.info(
            "epoch %.2f: valid %s %.4f (best %.4f at epoch %s)",
            epoch,
            self.metric,
            value,
            self.best,
            self.best_epoch,
        )
        if self.patience is not None and self._stale >= self.patience:
            logger.info("no gain for %d epochs: stopping", self._stale)
            control.should_training_stop = True
        return control

    def restore_best(self, model: PreTrainedModel) -> bool:
        """Load the best epoch's weights into ``model``; False if nothing was evaluated."""
        if self._best_state is None:
            return False
        model.load_state_dict(self._best_state)
        return True
