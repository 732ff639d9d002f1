"""`EarlyStopping`: stop training when a monitored value has stopped improving."""

from __future__ import annotations

import math
from typing import Any

import torch

from nnh.callbacks._monitor import check_mode, improves, monitored_value, worst
from nnh.callbacks.base import Callback
from nnh.stateful.shard_state import full_state_dict, load_full_state_dict

__all__ = ["EarlyStopping"]


class EarlyStopping(Callback):
    """Stop `train` after `patience` checked epochs without an improvement of `monitor`.

    At each epoch end, the value improves when it beats the best so far by more than
    `min_delta` (``value < best - min_delta`` for mode 'min', ``value > best + min_delta`` for
    'max'); then the wait counter restarts at 0. Otherwise the counter grows by one, and when
    it reaches `patience` the callback sets ``handler.stop_training = True``. Epochs whose
    value is NaN (no validation that epoch, with ``validate_every > 1``) are not checked: they
    neither improve nor count towards the patience.

    The state (best value and epoch, wait counter, stopped epoch, best weights) is kept in
    handler checkpoints, so a run resumed with `NNHandler.load` keeps counting where it
    stopped, and it carries over between `train` calls. Call `reset` to start afresh.

    Args:
        monitor: the epoch-log key to watch, e.g. ``"val_loss"`` or ``"val_acc"``.
        min_delta: the smallest change (>= 0) that counts as an improvement.
        patience: checked epochs without improvement before stopping (0: stop at the first).
        mode: ``"min"`` (lower is better) or ``"max"``.
        verbose: 1 logs the stop (and the restore) at INFO level.
        restore_best_weights: on stopping, load the module weights of the best epoch back
            into ``handler.module`` (a CPU copy is kept in the meantime). These are the raw
            weights, not an EMA of them.

    Attributes:
        best, best_epoch, wait, stopped_epoch (-1 until it stops).
    """

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0, patience: int = 10, mode: str = "min",
                 verbose: int = 0, restore_best_weights: bool = False) -> None:
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(f"EarlyStopping: monitor={monitor!r} must be an epoch-log key such as 'val_loss'.")
        if not isinstance(min_delta, (int, float)) or not min_delta >= 0 or math.isinf(min_delta):
            raise ValueError(f"EarlyStopping: min_delta={min_delta!r} must be a finite number >= 0; "
                             "mode sets the direction.")
        if not isinstance(patience, int) or isinstance(patience, bool) or patience < 0:
            raise ValueError(f"EarlyStopping: patience={patience!r} must be an int >= 0 (epochs to wait).")
        self.monitor = monitor
        self.min_delta = float(min_delta)
        self.patience = patience
        self.mode = check_mode("EarlyStopping", mode)
        self.verbose = int(verbose)
        self.restore_best_weights = bool(restore_best_weights)
        self.reset()

    def reset(self) -> None:
        """Forget the best value, the wait counter and the best weights."""
        self.best = worst(self.mode)
        self.best_epoch = -1
        self.wait = 0
        self.stopped_epoch = -1
        self.best_weights: dict[str, torch.Tensor] | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        current = monitored_value("EarlyStopping", self.monitor, logs)
        if math.isnan(current):
            return
        if improves(current, self.best, self.mode, self.min_delta):
            self.best, self.best_epoch, self.wait = current, epoch, 0
            if self.restore_best_weights:
                # A CPU copy: keeping a second set of weights on the GPU could exhaust its memory.
                # Whole tensors: a sharded (FSDP) module is gathered on every rank.
                self.best_weights = {k: v.detach().to("cpu", copy=True)
                                     for k, v in full_state_dict(self.handler.module).items()}
            return
        self.wait += 1
        if self.wait < self.patience:
            return
        self.stopped_epoch = epoch
        self.handler.stop_training = True
        if self.verbose:
            self._info(f"EarlyStopping: stopping after epoch {epoch + 1}: {self.monitor} has not improved on "
                       f"{self.best:.6g} (epoch {self.best_epoch + 1}) for {self.wait} checked epochs.")
        if self.restore_best_weights and self.best_weights is not None:
            load_full_state_dict(self.handler.module, self.best_weights)
            if self.verbose:
                self._info(f"EarlyStopping: restored the weights of epoch {self.best_epoch + 1}.")

    def state_dict(self) -> dict[str, Any]:
        return {"best": float(self.best), "best_epoch": self.best_epoch, "wait": self.wait,
                "stopped_epoch": self.stopped_epoch, "best_weights": self.best_weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = float(state["best"])
        self.best_epoch = int(state["best_epoch"])
        self.wait = int(state["wait"])
        self.stopped_epoch = int(state["stopped_epoch"])
        self.best_weights = state.get("best_weights")
