"""Checkpoint selection on validation ranking metrics during training.

Loss keeps falling long after recommendation quality peaks on sparse data (Amazon Beauty), so
the epoch to keep is chosen the way the literature does for SASRec and TIGER: constrained
beam search over validation users at each epoch end, the best epoch's weights kept in memory
and restored when training ends, optionally stopping after ``patience`` epochs without gain.

The evaluation itself is passed in by the caller (``evaluate``): training sits below evaluation
in recllm's layers (train never imports eval), so the script that owns both wires them, e.g.::

    from recllm.eval.run import evaluate_recommender

    def on_valid(model):
        return evaluate_recommender(
            model, tok, sid_map, split.valid, spec, catalog, beams=20, progress=False
        ).metrics

    select = BestOnValidation(on_valid, metric="recall@10", patience=3)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from transformers import TrainerCallback

if TYPE_CHECKING:
    from transformers import PreTrainedModel

logger = logging.getLogger(__name__)

#: ``model -> metrics``: ranks validation users with the model and returns its metrics.
EvaluateFn = Callable[["PreTrainedModel"], Mapping[str, float]]


class BestOnValidation(TrainerCallback):
    """Evaluate at every epoch end; keep and finally restore the best epoch's weights.

    Args:
        evaluate: Called with the model (in eval mode, under no training) at every epoch end;
            returns its validation metrics, e.g. ``evaluate_recommender(...).metrics``.
        metric: Key of the metrics to maximise, e.g. ``"recall@10"``.
        patience: Stop training after this many epochs without improvement (None: never).

    After training, ``history`` holds ``{"epoch", metric...}`` per evaluation and
    ``best_epoch`` the epoch whose weights the model holds.
    """

    def __init__(
        self,
        evaluate: EvaluateFn,
        *,
        metric: str = "recall@10",
        patience: int | None = None,
    ) -> None:
        if not callable(evaluate):
            raise TypeError(
                "BestOnValidation needs the evaluation function (model -> metrics); Fix: pass "
                "e.g. lambda m: evaluate_recommender(m, tok, sid_map, split.valid, ...).metrics"
            )
        self._evaluate = evaluate
        self.metric = metric
        self.patience = patience
        self.history: list[dict[str, float]] = []
        self.best: float = float("-inf")
        self.best_epoch: float | None = None
        self._best_state: dict | None = None
        self._stale = 0

    def evaluate(self, model: PreTrainedModel) -> dict[str, float]:
        """The validation metrics of ``model`` (its train/eval mode is restored afterwards)."""
        was_training = model.training
        model.eval()
        try:
            metrics = dict(self._evaluate(model))
        finally:
            model.train(was_training)
        if self.metric not in metrics:
            raise KeyError(
                f"metric {self.metric!r} not in {sorted(metrics)}; Fix: pick one of these"
            )
        return metrics

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        metrics = self.evaluate(model)
        epoch = round(state.epoch or 0.0, 2)
        value = float(metrics[self.metric])
        figures = {k: v if isinstance(v, str) else float(v) for k, v in metrics.items()}
        self.history.append({"epoch": epoch, **figures})  # "protocol" stays a name
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
