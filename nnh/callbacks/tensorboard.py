"""`TensorBoardLogger`: epoch logs as TensorBoard scalars (optional `tensorboard` dependency)."""

from __future__ import annotations

import math
import numbers
import os
from typing import Any

import torch

from nnh.callbacks.base import Callback

__all__ = ["TensorBoardLogger"]

_INSTALL_HINT = ('TensorBoardLogger needs the optional tensorboard package: pip install tensorboard '
                 '(or pip install "nnh[tensorboard]").')


def _summary_writer_class() -> type:
    """`torch.utils.tensorboard.SummaryWriter`, imported only when a logger is made."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise ImportError(f"{_INSTALL_HINT} ({exc})") from exc
    return SummaryWriter


class TensorBoardLogger(Callback):
    """Write every numeric epoch-log key as a scalar to a TensorBoard event file in `log_dir`.

    The tag is the log key (``loss``, ``val_loss``, ``lr``, metrics, and keys added by
    callbacks that run before this one) and the step is the 0-based epoch. NaN values (the
    validation keys of epochs without validation) are skipped, so the curves show no gaps
    filled with NaN. View with ``tensorboard --logdir <log_dir>``.

    The writer opens at `on_train_begin`, is flushed at every epoch end and closed at
    `on_train_end`; a later `train` call (or a resumed run) adds a new event file to the same
    folder, which TensorBoard shows as one run. Under torch.distributed only rank 0 writes.

    Args:
        log_dir: the folder for the event files.

    Raises:
        ImportError: when `tensorboard` is not installed, saying how to install it.
    """

    def __init__(self, log_dir: str | os.PathLike) -> None:
        log_dir = os.fspath(log_dir) if isinstance(log_dir, os.PathLike) else log_dir
        if not isinstance(log_dir, str) or not log_dir:
            raise ValueError(f"TensorBoardLogger: log_dir={log_dir!r} must be a non-empty folder path, e.g. 'runs/exp1'.")
        self.log_dir = log_dir
        self._writer_class = _summary_writer_class()  # fails here, not at the first epoch
        self.writer: Any = None

    def on_train_begin(self, logs: dict[str, Any]) -> None:
        if self.writer is None and self.is_main:
            self.writer = self._writer_class(log_dir=self.log_dir)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        if not self.is_main:
            return
        if self.writer is None:
            self.writer = self._writer_class(log_dir=self.log_dir)
        for key, value in logs.items():
            if key == "epoch":
                continue
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                value = value.item()
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value):
                continue
            self.writer.add_scalar(key, float(value), global_step=epoch)
        self.writer.flush()

    def on_train_end(self, logs: dict[str, Any]) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
