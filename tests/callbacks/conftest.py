"""A fake handler with exactly the attributes callbacks use, and a loop that drives the hooks."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn

from nnh.func.checkpoint import atomic_save


class FakeHandler:
    """Stands in for `NNHandler`: module, optimizer, logger, stop_training, save, add_callback."""

    def __init__(self, module: nn.Module | None = None, optimizer: torch.optim.Optimizer | None = None) -> None:
        self.module = module if module is not None else nn.Linear(3, 2)
        self.optimizer = optimizer
        self.logger = None
        self.stop_training = False
        self.callbacks: list[Any] = []
        self.saved: list[str] = []
        self.epoch = 0

    def add_callback(self, callback: Any) -> None:
        self.callbacks.append(callback)
        callback.set_handler(self)

    def save(self, path: str) -> None:
        atomic_save({"weights": self.module.state_dict(), "epoch": self.epoch}, path)
        self.saved.append(path)

    def fill_weights(self, value: float) -> None:
        """Fill every parameter with `value`, so a saved state tells which epoch it came from."""
        with torch.no_grad():
            for p in self.module.parameters():
                p.fill_(value)

    def _dispatch(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(*args)

    def fake_train(self, epoch_values: list[dict[str, Any]], on_epoch: Any = None) -> list[dict[str, Any]]:
        """Run the epoch-level hooks in the handler's order with the given log values, continuing
        the epoch count; `on_epoch(epoch)` runs at each epoch's start (e.g. to change weights).
        Returns the logs of the epochs that ran."""
        self.stop_training = False
        start = self.epoch
        self._dispatch("on_train_begin", {"epochs": len(epoch_values), "start_epoch": start})
        ran, logs = [], {}
        for epoch, values in enumerate(epoch_values, start=start):
            self._dispatch("on_epoch_begin", epoch, {})
            if on_epoch is not None:
                on_epoch(epoch)
            for i in range(2):
                self._dispatch("on_train_batch_begin", i, {"size": 4})
                self._dispatch("on_train_batch_end", i, {"loss": torch.as_tensor(values.get("loss", 0.0), dtype=torch.float32), "size": 4})
            logs = {"epoch": epoch, "loss": 1.0, "val_loss": math.nan, **values}
            self._dispatch("on_epoch_end", epoch, logs)
            ran.append(logs)
            self.epoch = epoch + 1
            if self.stop_training:
                break
        self._dispatch("on_train_end", logs)
        return ran


@pytest.fixture
def handler() -> FakeHandler:
    torch.manual_seed(0)
    return FakeHandler()
