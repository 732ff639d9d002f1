"""`ModelCheckpoint`: save the handler (or the weights) at epoch ends, keeping the best."""

from __future__ import annotations

import os
import string
from typing import Any

from nnh.callbacks._monitor import check_mode, improves, monitored_value, worst
from nnh.callbacks.base import Callback
from nnh.func.checkpoint import atomic_save
from nnh.stateful.shard_state import full_state_dict

__all__ = ["ModelCheckpoint"]


class ModelCheckpoint(Callback):
    """Save a checkpoint at the end of every `save_freq`-th epoch, or only when it is the best.

    Args:
        filepath: where to write; formatted as ``filepath.format(epoch=epoch + 1, **logs)``, so
            ``"ckpt/best.pth"`` keeps overwriting one file and
            ``"ckpt/e{epoch:03d}_{val_loss:.4f}.pth"`` writes one per save (1-based epoch).
            Folders are created as needed.
        monitor: the epoch-log key compared when `save_best_only` (e.g. ``"val_loss"``,
            ``"val_acc"``).
        mode: ``"min"`` (lower is better) or ``"max"``.
        save_best_only: save only when `monitor` improves on the best value so far. A NaN
            value (an epoch without validation) never counts as an improvement.
        save_weights_only: write ``handler.module.state_dict()`` instead of a full handler
            checkpoint (``handler.save``), which `NNHandler.load` can resume from.
        save_freq: consider saving every this many epochs (epochs whose 1-based number is a
            multiple of it).
        verbose: 1 logs each save (and each non-improvement) at INFO level.

    Attributes:
        best: the best monitored value seen (``inf`` / ``-inf`` before the first).
        best_epoch: its 0-based epoch, -1 before the first.
        best_path: the file the best checkpoint was written to, None before the first.
        last_path: the most recently written file.

    Writes are atomic: a run killed mid-save leaves the previous file intact. Files written
    under earlier names are kept; use a name without ``{epoch}`` to keep only one.

    Under torch.distributed every rank runs it with the same logs, so all agree on when to
    save; `handler.save` is collective, and weights alone are gathered (FSDP) and written by
    rank 0 while the others wait.
    """

    def __init__(self, filepath: str | os.PathLike, monitor: str = "val_loss", mode: str = "min",
                 save_best_only: bool = True, save_weights_only: bool = False, save_freq: int = 1,
                 verbose: int = 0) -> None:
        filepath = os.fspath(filepath) if isinstance(filepath, os.PathLike) else filepath
        if not isinstance(filepath, str) or not filepath:
            raise ValueError(f"ModelCheckpoint: filepath={filepath!r} must be a non-empty path, "
                             "e.g. 'checkpoints/best.pth'.")
        try:
            list(string.Formatter().parse(filepath))
        except ValueError as exc:
            raise ValueError(f"ModelCheckpoint: filepath={filepath!r} is not a valid format string ({exc}); "
                             "double literal braces as '{{' and '}}'.") from None
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(f"ModelCheckpoint: monitor={monitor!r} must be an epoch-log key such as 'val_loss'.")
        if not isinstance(save_freq, int) or isinstance(save_freq, bool) or save_freq < 1:
            raise ValueError(f"ModelCheckpoint: save_freq={save_freq!r} must be an int >= 1 (a number of epochs).")
        self.filepath = filepath
        self.monitor = monitor
        self.mode = check_mode("ModelCheckpoint", mode)
        self.save_best_only = bool(save_best_only)
        self.save_weights_only = bool(save_weights_only)
        self.save_freq = save_freq
        self.verbose = int(verbose)
        self.best = worst(self.mode)
        self.best_epoch = -1
        self.best_path: str | None = None
        self.last_path: str | None = None

    def set_handler(self, handler: Any) -> None:
        if not self.save_weights_only and not callable(getattr(handler, "save", None)):
            raise TypeError(f"ModelCheckpoint(save_weights_only=False) needs a handler with a save(path) "
                            f"method, and {type(handler).__name__} has none; pass save_weights_only=True.")
        super().set_handler(handler)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        if (epoch + 1) % self.save_freq != 0:
            return
        if not self.save_best_only:
            self._save(epoch, self._format(epoch, logs))
            return
        current = monitored_value("ModelCheckpoint", self.monitor, logs)
        if not improves(current, self.best, self.mode):
            if self.verbose:
                self._info(f"ModelCheckpoint: epoch {epoch + 1}: {self.monitor}={current:.6g} did not improve "
                           f"on {self.best:.6g}; not saved.")
            return
        previous = (self.best, self.best_epoch, self.best_path)
        # Updated before writing, so that a full handler checkpoint records this file as the best.
        self.best, self.best_epoch, self.best_path = current, epoch, self._format(epoch, logs)
        try:
            self._save(epoch, self.best_path)
        except BaseException:
            self.best, self.best_epoch, self.best_path = previous
            raise
        if self.verbose:
            self._info(f"ModelCheckpoint: epoch {epoch + 1}: {self.monitor} improved from {previous[0]:.6g} "
                       f"to {current:.6g}.")

    def _save(self, epoch: int, path: str) -> None:
        if self.save_weights_only:
            weights = full_state_dict(self.handler.module, everywhere=False)
            self._on_main(lambda: atomic_save(weights, path))
        else:
            self.handler.save(path)
        self.last_path = path
        if self.verbose:
            self._info(f"ModelCheckpoint: epoch {epoch + 1}: saved {path}.")

    def _format(self, epoch: int, logs: dict[str, Any]) -> str:
        try:
            return self.filepath.format(**{**logs, "epoch": epoch + 1})
        except KeyError as exc:
            raise KeyError(f"ModelCheckpoint: filepath={self.filepath!r} uses {exc}, which the epoch logs do "
                           f"not hold; available keys: {sorted(logs)}.") from None

    def state_dict(self) -> dict[str, Any]:
        return {"best": float(self.best), "best_epoch": self.best_epoch,
                "best_path": self.best_path, "last_path": self.last_path}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = float(state.get("best", worst(self.mode)))
        self.best_epoch = int(state.get("best_epoch", -1))
        self.best_path = state.get("best_path")
        self.last_path = state.get("last_path")

