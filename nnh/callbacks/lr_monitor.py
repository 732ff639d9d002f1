"""`LearningRateMonitor`: the learning rate of every parameter group, per epoch."""

from __future__ import annotations

from typing import Any

from nnh.callbacks.base import Callback

__all__ = ["LearningRateMonitor"]


class LearningRateMonitor(Callback):
    """Add ``lr_group{i}`` to the epoch logs for every parameter group ``i`` of the optimizer.

    The value is the group's learning rate when the epoch began, i.e. the rate the epoch
    trained with (with a per-batch scheduler, the rate of its first step). The handler's own
    ``"lr"`` key holds group 0 only; this callback covers optimizers with several groups
    (e.g. a smaller rate for a pretrained backbone). Callbacks added after this one, such as
    `CSVLogger` and `TensorBoardLogger`, record the new keys.

    Attributes:
        history: one list of rates (one per group) for every epoch seen; kept in checkpoints.
    """

    def __init__(self) -> None:
        self.history: list[list[float]] = []
        self._epoch_lrs: list[float] = []

    @property
    def log_keys(self) -> tuple[str, ...]:  # type: ignore[override]
        optimizer = getattr(self.handler, "optimizer", None)
        n = len(optimizer.param_groups) if optimizer is not None else 1
        return tuple(f"lr_group{i}" for i in range(n))

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any]) -> None:
        optimizer = getattr(self.handler, "optimizer", None)
        self._epoch_lrs = [] if optimizer is None else [float(g["lr"]) for g in optimizer.param_groups]

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        for i, lr in enumerate(self._epoch_lrs):
            logs[f"lr_group{i}"] = lr
        self.history.append(list(self._epoch_lrs))

    def state_dict(self) -> dict[str, Any]:
        return {"history": [list(h) for h in self.history]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = [list(map(float, h)) for h in state.get("history", [])]
