"""`EpochTimer`: wall-clock seconds per epoch, added to the epoch logs."""

from __future__ import annotations

import time
from typing import Any

from nnh.callbacks.base import Callback

__all__ = ["EpochTimer"]


class EpochTimer(Callback):
    """Add ``"epoch_time"`` (seconds, wall clock) to the epoch logs.

    The time runs from this callback's `on_epoch_begin` to its `on_epoch_end`, so it covers
    training, validation and the epoch-end work of the callbacks that run before it. Add it
    first to time the epoch alone, and before `CSVLogger` / `TensorBoardLogger` so that they
    record the key. The handler reads the epoch's loss on the host before `on_epoch_end`, so
    queued GPU work has finished by then and the time is not cut short.

    Attributes:
        times: the duration of every epoch timed so far; kept in checkpoints.
        train_time: seconds of the last `train` call (from `on_train_begin` to `on_train_end`).
    """

    log_keys = ("epoch_time",)

    def __init__(self) -> None:
        self.times: list[float] = []
        self.train_time = 0.0
        self._epoch_start: float | None = None
        self._train_start: float | None = None

    def on_train_begin(self, logs: dict[str, Any]) -> None:
        self._train_start = time.perf_counter()

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any]) -> None:
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        if self._epoch_start is None:
            return
        elapsed = time.perf_counter() - self._epoch_start
        self._epoch_start = None
        self.times.append(elapsed)
        logs["epoch_time"] = elapsed

    def on_train_end(self, logs: dict[str, Any]) -> None:
        if self._train_start is not None:
            self.train_time = time.perf_counter() - self._train_start
            self._train_start = None

    def state_dict(self) -> dict[str, Any]:
        return {"times": list(self.times)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.times = [float(t) for t in state.get("times", [])]
